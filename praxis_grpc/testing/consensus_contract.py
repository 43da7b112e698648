"""The :class:`~praxis_grpc.consensus.base.Consensus` contract as one suite
that every backend runs: the in-memory fake, raft and etcd (see
``tests/integration/test_consensus_contract.py``), and a third-party backend
the same way.

A backend takes part through a :class:`ConsensusHarness`: it starts groups of
members and says when a leader is agreed on (a real backend waits for its own
election; :class:`MemoryHarness` elects one, as its tests drive elections).
Each check in :data:`CHECKS` is a coroutine function taking the harness; it
raises :class:`AssertionError` when the backend breaks the contract. The
checks need no test framework::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    async def test_contract(check: ContractCheck, harness: ConsensusHarness) -> None:
        await check(harness)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from praxis_grpc.consensus.base import Consensus, Leadership, NotLeader
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup

__all__ = [
    "CHECKS",
    "ConsensusHarness",
    "ContractCheck",
    "MemoryHarness",
    "agreed",
    "wait_agreed",
    "wait_until",
]


class ConsensusHarness(Protocol):
    """How the contract suite drives one backend."""

    backend: str
    """The ``backend`` property every member reports."""

    def group(self, size: int) -> contextlib.AbstractAsyncContextManager[list[Consensus]]:
        """Start ``size`` members of one fresh group (no state, no leader yet);
        close them all on exit. Member ``i`` has agent id ``agent-i`` and gRPC
        address ``self.address(i)``."""
        ...

    def address(self, index: int) -> str:
        """The gRPC address member ``index`` advertises."""
        ...

    async def leader(self, members: Sequence[Consensus], above: int = 0) -> Consensus:
        """The member every one of ``members`` agrees leads, in a term above
        ``above``, once there is one (a fake elects one of ``members``)."""
        ...


ContractCheck = Callable[[ConsensusHarness], Awaitable[None]]


def agreed(members: Sequence[Consensus], above: int = 0) -> Consensus | None:
    """The leader if exactly one member leads, in a term above ``above``, and
    every member agrees on who leads and in which term; else ``None``."""
    views = [member.leadership() for member in members]
    leaders = [member for member, view in zip(members, views, strict=True) if view.is_self]
    seen = {(view.leader_id, view.leader_address, view.term) for view in views}
    if len(leaders) == 1 and len(seen) == 1 and views[0].term > above:
        return leaders[0]
    return None


async def wait_agreed(
    members: Sequence[Consensus], above: int = 0, within: float = 15.0
) -> Consensus:
    """:func:`agreed`, waited for (polled every 10 ms) for up to ``within`` seconds.

    Raises:
        AssertionError: no agreed leader within ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while (leader := agreed(members, above)) is None:
        _expect(time.monotonic() < deadline, f"no agreed leader within {within:g}s")
        await asyncio.sleep(0.01)
    return leader


class MemoryHarness:
    """The harness of :class:`~praxis_grpc.testing.MemoryConsensusGroup`:
    :meth:`leader` elects the first of ``members`` when none is agreed on."""

    backend = "memory"

    def __init__(self) -> None:
        self.groups: list[MemoryConsensusGroup] = []

    def address(self, index: int) -> str:
        return f"127.0.0.1:{7000 + index}"

    @contextlib.asynccontextmanager
    async def group(self, size: int) -> AsyncIterator[list[Consensus]]:
        group = MemoryConsensusGroup()
        self.groups.append(group)
        members = [group.member(f"agent-{i}", self.address(i)) for i in range(size)]
        try:
            for member in members:
                await member.start()
            yield list(members)
        finally:
            for member in members:
                await member.aclose()

    async def leader(self, members: Sequence[Consensus], above: int = 0) -> Consensus:
        if agreed(members, above) is None:
            agent_id = getattr(members[0], "agent_id", None)
            _expect(isinstance(agent_id, str), "a memory member has an agent id")
            self.groups[-1].elect(str(agent_id))
        return await wait_agreed(members, above)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def _refused(commit: Awaitable[None]) -> NotLeader:
    try:
        await commit
    except NotLeader as exc:
        return exc
    raise AssertionError("the commit was accepted; NotLeader expected")


async def one_leader_that_every_member_agrees_on(harness: ConsensusHarness) -> None:
    """Leadership: one member leads, and every member reports its agent id and
    gRPC address as the group agreed on them, in a term of at least 1."""
    async with harness.group(3) as members:
        leader = await harness.leader(members)
        index = members.index(leader)
        for member in members:
            view = member.leadership()
            _expect(view.leader_id == f"agent-{index}", f"leader id {view.leader_id!r}")
            _expect(view.leader_address == harness.address(index), "leader address")
            _expect(view.term >= 1, f"term {view.term}")
            _expect(view.is_self is (member is leader), "is_self only on the leader")
            _expect(member.backend == harness.backend, f"backend {member.backend!r}")


async def commit_reaches_every_member_and_none_deletes(harness: ConsensusHarness) -> None:
    """``commit`` is acknowledged on a quorum; ``None`` deletes (a missing key
    too); every member's snapshot then holds exactly the committed state."""
    async with harness.group(3) as members:
        leader = await harness.leader(members)
        term = leader.leadership().term
        await leader.commit("a", b"1", term=term)
        await leader.commit("b/c", b"\x00\xff", term=term)
        await leader.commit("a", None, term=term)
        await leader.commit("missing", None, term=term)
        _expect(await leader.snapshot() == {"b/c": b"\x00\xff"}, "the leader's snapshot")
        for member in members:
            deadline = time.monotonic() + 10
            while (snapshot := await member.snapshot()) != {"b/c": b"\x00\xff"}:
                _expect(time.monotonic() < deadline, f"a member's snapshot is {snapshot}")
                await asyncio.sleep(0.02)


async def stale_term_and_follower_commits_write_nothing(harness: ConsensusHarness) -> None:
    """A commit in an older term, or by a member that does not lead, raises
    :class:`NotLeader` carrying the member's view, and writes nothing."""
    async with harness.group(3) as members:
        leader = await harness.leader(members)
        term = leader.leadership().term
        follower = next(member for member in members if member is not leader)
        stale = await _refused(leader.commit("stale", b"x", term=term - 1))
        not_leading = await _refused(follower.commit("follower", b"x", term=term))
        await leader.commit("marker", b"", term=term)
        _expect(stale.leadership == leader.leadership(), "NotLeader carries the view")
        _expect(not not_leading.leadership.is_self, "a follower does not lead")
        _expect(set(await leader.snapshot()) == {"marker"}, "nothing refused was written")


async def value_must_be_bytes(harness: ConsensusHarness) -> None:
    """A value that is neither bytes nor ``None`` is a ``TypeError``."""
    async with harness.group(1) as members:
        leader = await harness.leader(members)
        try:
            await leader.commit("k", "text", term=leader.leadership().term)  # type: ignore[arg-type]
        except TypeError:
            return
        raise AssertionError("a str value was accepted")


async def a_successor_has_every_acknowledged_write_in_a_newer_term(
    harness: ConsensusHarness,
) -> None:
    """After the leader leaves, the next leader leads in a greater term, its
    snapshot holds every write the first acknowledged, and a watcher saw the
    current leadership first, then the change, terms only increasing."""
    async with harness.group(3) as members:
        leader = await harness.leader(members)
        old = leader.leadership()
        for i in range(5):
            await leader.commit(f"k{i}", b"v", term=old.term)
        follower = next(member for member in members if member is not leader)
        seen: list[Leadership] = []

        async def follow() -> None:
            async for leadership in follower.watch():
                seen.append(leadership)

        watching = asyncio.create_task(follow())
        try:
            await wait_until(lambda: bool(seen), "the watch yields the current leadership")
            await leader.aclose()
            rest = [member for member in members if member is not leader]
            successor = await harness.leader(rest, above=old.term)
            now = successor.leadership()
            await wait_until(lambda: seen[-1] == follower.leadership(), "the watch caught up")
            last = seen[-1]
            snapshot = await successor.snapshot()
            await successor.commit("after", b"x", term=now.term)
        finally:
            await follower.aclose()
            await asyncio.wait_for(watching, 5)
        _expect(now.term > old.term, f"term {now.term} after {old.term}")
        _expect(seen[0].leader_id == old.leader_id, "the watch starts with the current leader")
        _expect(last.leader_id == now.leader_id, f"the watch reached the successor: {seen}")
        terms = [view.term for view in seen]
        _expect(terms == sorted(terms), f"terms decreased: {terms}")
        _expect(follower.leadership() == Leadership(), "a closed member knows no leader")
        _expect(all(f"k{i}" in snapshot for i in range(5)), f"lost writes: {snapshot}")


async def wait_until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll ``condition`` every 10 ms until true, or fail naming ``what``."""
    deadline = time.monotonic() + within
    while not condition():
        _expect(time.monotonic() < deadline, f"not within {within:g}s: {what}")
        await asyncio.sleep(0.01)


CHECKS: tuple[ContractCheck, ...] = (
    one_leader_that_every_member_agrees_on,
    commit_reaches_every_member_and_none_deletes,
    stale_term_and_follower_commits_write_nothing,
    value_must_be_bytes,
    a_successor_has_every_acknowledged_write_in_a_newer_term,
)
"""Every check of the contract, in the order they are cheapest to fail."""
