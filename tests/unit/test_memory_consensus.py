"""The in-memory consensus fake keeps the Consensus contract under test-driven elections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from praxis_grpc.consensus.base import Consensus, ConsensusError, Leadership, NotLeader
from praxis_grpc.testing.memory_consensus import MemoryConsensus, MemoryConsensusGroup


@pytest.fixture
def group() -> MemoryConsensusGroup:
    return MemoryConsensusGroup()


@pytest.fixture
async def members(group: MemoryConsensusGroup) -> AsyncIterator[list[MemoryConsensus]]:
    started = [group.member(f"agent-{i}", f"127.0.0.1:{5000 + i}") for i in range(3)]
    for member in started:
        await member.start()
    yield started
    for member in started:
        await member.aclose()


def test_is_a_consensus(members: list[MemoryConsensus]) -> None:
    consensus: Consensus = members[0]
    assert consensus.backend == "memory"


async def test_no_leader_until_elected(members: list[MemoryConsensus]) -> None:
    assert all(member.leadership() == Leadership() for member in members)
    with pytest.raises(NotLeader):
        await members[0].commit("k", b"v", term=0)


async def test_elect_is_seen_by_every_member(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    elected = group.elect("agent-1")

    assert elected == Leadership("agent-1", "127.0.0.1:5001", 1, is_self=False)
    views = [member.leadership() for member in members]
    assert [view.is_self for view in views] == [False, True, False]
    assert {(v.leader_id, v.leader_address, v.term) for v in views} == {
        ("agent-1", "127.0.0.1:5001", 1)
    }


async def test_snapshot_is_a_copy(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    term = group.elect("agent-0").term
    await members[0].commit("a", b"1", term=term)
    snapshot = await members[1].snapshot()
    await members[0].commit("a", b"2", term=term)

    assert snapshot == {"a": b"1"}


async def test_depose_leaves_no_leader_in_a_newer_term(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    term = group.elect("agent-2").term
    group.depose()

    view = members[2].leadership()
    assert not view.known
    assert view.term > term
    with pytest.raises(NotLeader):
        await members[2].commit("k", b"v", term=term)


async def test_isolated_leader_believes_it_leads_but_is_fenced(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    old = group.elect("agent-0")
    await members[0].commit("before", b"1", term=old.term)
    group.isolate("agent-0")
    new = group.elect("agent-1")
    await members[1].commit("after", b"2", term=new.term)

    assert members[0].leadership() == Leadership("agent-0", "127.0.0.1:5000", old.term, True)
    with pytest.raises(NotLeader):
        await members[0].commit("stale", b"3", term=old.term)
    assert await members[0].snapshot() == {"before": b"1"}
    assert await members[2].snapshot() == {"before": b"1", "after": b"2"}
    assert new.term > old.term

    group.rejoin("agent-0")
    assert members[0].leadership() == Leadership("agent-1", "127.0.0.1:5001", new.term, False)
    assert await members[0].snapshot() == {"before": b"1", "after": b"2"}


async def test_isolated_member_cannot_be_elected(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    group.isolate("agent-2")
    with pytest.raises(ValueError, match="isolated"):
        group.elect("agent-2")
    with pytest.raises(KeyError):
        group.elect("agent-9")


async def test_fenced_between_check_and_apply(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    term = group.elect("agent-0").term
    pending = asyncio.create_task(members[0].commit("k", b"v", term=term))
    await asyncio.sleep(0)  # the commit passed its own check and waits to be applied
    group.elect("agent-1")

    with pytest.raises(NotLeader):
        await pending
    assert await members[1].snapshot() == {}


async def test_watch_yields_current_then_changes(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    seen: list[Leadership] = []

    async def follow() -> None:
        async for leadership in members[1].watch():
            seen.append(leadership)

    watcher = asyncio.create_task(follow())
    await asyncio.sleep(0)
    group.elect("agent-0")
    group.elect("agent-1")
    group.depose()
    await asyncio.sleep(0)
    await members[1].aclose()
    await asyncio.wait_for(watcher, 1)

    assert seen == [
        Leadership(),
        Leadership("agent-0", "127.0.0.1:5000", 1, False),
        Leadership("agent-1", "127.0.0.1:5001", 2, True),
        Leadership("", "", 3, False),
    ]


async def test_closing_the_leader_deposes_it(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    term = group.elect("agent-0").term
    await members[0].aclose()

    assert members[0].leadership() == Leadership()
    assert not members[1].leadership().known
    assert members[1].leadership().term > term
    with pytest.raises(ValueError, match="not running"):
        group.elect("agent-0")


async def test_members_are_unique_and_start_once(
    group: MemoryConsensusGroup, members: list[MemoryConsensus]
) -> None:
    with pytest.raises(ValueError, match="already a member"):
        group.member("agent-0", "127.0.0.1:1")
    with pytest.raises(ConsensusError):
        await members[0].start()


async def test_late_member_sees_the_current_leader(group: MemoryConsensusGroup) -> None:
    first = group.member("a", "h:1")
    await first.start()
    group.elect("a")
    late = group.member("b", "h:2")
    assert late.leadership() == Leadership()
    await late.start()

    assert late.leadership() == Leadership("a", "h:1", 1, False)
    await first.aclose()
    await late.aclose()
