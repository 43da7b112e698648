"""The etcd backend against a real 3-member etcd cluster on loopback: what
is particular to etcd (the contract every backend keeps is
test_consensus_contract.py). Tests share the session's cluster, each under
a key prefix of its own; those that kill or pause etcd members start their own.

Needs the ``etcd`` binary (Debian ``etcd-server``; scripts/test installs it).
Without it these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import grpc.aio
import pytest

from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from praxis_grpc.config import EtcdConfig
from praxis_grpc.consensus.base import ConsensusError, Leadership, NotLeader
from praxis_grpc.consensus.etcd import EtcdConsensus
from praxis_grpc.testing.etcd_cluster import EtcdCluster
from tests.integration.conftest import EtcdNamespace, require_etcd

T = TypeVar("T")

LEASE_TTL = 2
COMMIT_TIMEOUT = 2.0


@pytest.fixture
def own_etcd() -> Iterator[EtcdCluster]:
    """A cluster of this test's own, for tests that kill or pause its members."""
    require_etcd()
    with EtcdCluster(3, heartbeat=0.05, election_timeout=0.25) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    before = len(asyncio.all_tasks())
    yield
    await until(lambda: len(asyncio.all_tasks()) <= before, what="every background task ended")


async def until(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.01)
    return value


def config(endpoints: Sequence[str], **fields: Any) -> EtcdConfig:
    settings: dict[str, Any] = {
        "endpoints": list(endpoints),
        "lease_ttl": LEASE_TTL,
        "commit_timeout": COMMIT_TIMEOUT,
    }
    settings.update(fields)
    return EtcdConfig(**settings)


@contextlib.asynccontextmanager
async def etcd_group(
    etcd: EtcdNamespace | Sequence[str], size: int = 3, **fields: Any
) -> AsyncIterator[list[EtcdConsensus]]:
    """``size`` members on ``etcd``: a namespace of the session's cluster
    (under its prefix), or the endpoints of a test's own cluster."""
    if isinstance(etcd, EtcdNamespace):
        fields = {"prefix": etcd.prefix, **fields}
        etcd = etcd.endpoints
    members = [
        EtcdConsensus(
            config(etcd, **fields),
            agent_id=f"agent-{i}",
            grpc_address=f"127.0.0.1:{7000 + i}",
        )
        for i in range(size)
    ]
    try:
        for member in members:
            await member.start()
        yield members
    finally:
        for member in members:
            await member.aclose()


def leader_agreed(members: Sequence[EtcdConsensus], above: int = 0) -> EtcdConsensus | None:
    """The leader if exactly one member leads, in a term above ``above``, and
    every member agrees on who and in which term."""
    views = [member.leadership() for member in members]
    leaders = [m for m, view in zip(members, views, strict=True) if view.is_self]
    agreed = {(view.leader_id, view.leader_address, view.term) for view in views}
    if len(leaders) == 1 and len(agreed) == 1 and views[0].term > above:
        return leaders[0]
    return None


async def agreed_leader(
    members: Sequence[EtcdConsensus], above: int = 0, timeout: float = 15
) -> EtcdConsensus:
    return await until(lambda: leader_agreed(members, above), timeout, "one agreed leader")


async def commit_all(
    members: list[EtcdConsensus],
    disrupt: Callable[[], Coroutine[Any, Any, None] | None],
    *,
    new_term: bool = True,
) -> tuple[list[str], int]:
    """Commit ``key-0000``, ``key-0001``, ... through whoever leads; call
    ``disrupt`` once, right before key 100, and go on without waiting. When it
    returns a coroutine (``leader.aclose``), that runs alongside and the leader
    leaves ``members``. A failed commit is retried on the leader of the moment
    (one in a newer term with ``new_term``). Stops after 200 keys, and (with
    ``new_term``) not before a newer leader acknowledged 50.

    Returns:
        The acknowledged keys, and the term of the first leader.
    """
    leader = await agreed_leader(members)
    first_term = leader.leadership().term
    acknowledged: list[str] = []
    after_failover = 0
    closing: asyncio.Task[None] | None = None
    for i in range(5000):
        if i >= 200 and (after_failover >= 50 or not new_term):
            break
        if i == 100 and (leaving := disrupt()) is not None:
            members.remove(leader)
            closing = asyncio.create_task(leaving)
        key = f"key-{i:04}"
        while True:
            with contextlib.suppress(ConsensusError):  # includes NotLeader
                term = leader.leadership().term
                await leader.commit(key, key.encode(), term=term)
                acknowledged.append(key)
                after_failover += term > first_term
                break
            leader = await agreed_leader(members, above=first_term if new_term else 0)
    if closing is not None:
        await closing
    assert len(acknowledged) >= 200
    return acknowledged, first_term


async def test_a_group_under_another_prefix_is_apart(etcd: EtcdNamespace) -> None:
    async with etcd_group(etcd) as members, etcd_group(etcd, 1, prefix="/x/"):
        leader = await agreed_leader(members)
        term = leader.leadership().term
        await leader.commit("a", b"1", term=term)
        await leader.commit("b/c", b"\x00\xff", term=term)
        await leader.commit("a", None, term=term)
        await leader.commit("missing", None, term=term)

        for member in members:
            assert await member.snapshot() == {"b/c": b"\x00\xff"}


async def test_snapshot_reads_past_one_page(etcd: EtcdNamespace) -> None:
    async with etcd_group(etcd, 1) as (member,):
        leader = await agreed_leader([member])
        term = leader.leadership().term
        for start in range(0, 2100, 100):
            await asyncio.gather(
                *(leader.commit(f"k{i:04}", b"v", term=term) for i in range(start, start + 100))
            )

        snapshot = await member.snapshot()
        assert sorted(snapshot) == [f"k{i:04}" for i in range(2100)]


async def test_deposed_leader_that_has_not_noticed_is_fenced_by_etcd(etcd: EtcdNamespace) -> None:
    # Alone, so no successor's key tells it that it lost.
    async with etcd_group(etcd, 1) as (member,):
        leader = await agreed_leader([member])
        term = leader.leadership().term
        # Its lease ends in etcd while the member still believes it leads.
        leader._stop_keepalive()
        await revoke_leases(etcd.endpoints[0])
        assert leader.leadership().is_self

        with pytest.raises(NotLeader):
            await leader.commit("stale", b"x", term=term)

        assert not leader.leadership().is_self
        leader = await agreed_leader([member], above=term)
        await leader.commit("marker", b"", term=leader.leadership().term)
        assert await leader.snapshot() == {"marker": b""}


async def test_a_suspected_dead_leader_loses_its_term_without_waiting_for_its_lease(
    etcd: EtcdNamespace,
) -> None:
    # A 30 s lease: a successor within the test's 10 s can only come from suspect().
    async with etcd_group(etcd, lease_ttl=30) as members, asyncio.timeout(60):
        leader = await agreed_leader(members)
        seen = leader.leadership()
        follower = next(member for member in members if member is not leader)
        assert not await leader.suspect(seen, "not against itself")
        assert not await follower.suspect(
            Leadership(seen.leader_id, seen.leader_address, seen.term - 1), "an older term"
        )
        assert leader_agreed(members) is leader
        leader._stop_keepalive()  # as if its process were gone

        assert await follower.suspect(follower.leadership(), "its port refuses connections")

        successor = await agreed_leader(members, above=seen.term, timeout=10)
        assert successor is not leader
        assert not leader.leadership().is_self
        # Too late now: that term is over.
        assert not await follower.suspect(
            Leadership(seen.leader_id, seen.leader_address, seen.term), "again"
        )
        await successor.commit("after", b"x", term=successor.leadership().term)


async def revoke_leases(endpoint: str) -> None:
    """Revoke every lease in the cluster behind the members' back."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        leases = rpc_pb2_grpc.LeaseStub(channel)
        listed = await leases.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=5)
        for lease in listed.leases:
            await leases.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease.ID), timeout=5)


async def test_leader_closing_mid_way_keeps_every_acknowledged_write(etcd: EtcdNamespace) -> None:
    async with etcd_group(etcd) as members, asyncio.timeout(90):
        alive = list(members)
        leader = await agreed_leader(alive)

        acknowledged, first_term = await commit_all(alive, leader.aclose)

        successor = await agreed_leader(alive, above=first_term)
        assert successor is not leader
        for member in alive:
            assert sorted(await member.snapshot()) == acknowledged


async def test_leader_losing_its_lease_keeps_every_acknowledged_write(etcd: EtcdNamespace) -> None:
    async with etcd_group(etcd, lease_ttl=1) as members, asyncio.timeout(90):
        leader = await agreed_leader(members)

        acknowledged, first_term = await commit_all(members, leader._stop_keepalive)

        # It stepped down on its own and now follows.
        successor = await agreed_leader(members, above=first_term)
        assert successor is not leader
        for member in members:
            assert sorted(await member.snapshot()) == acknowledged


async def test_killing_the_etcd_leader_member_keeps_the_group_working(
    own_etcd: EtcdCluster,
) -> None:
    etcd = own_etcd
    etcd_leader = await asyncio.to_thread(etcd.wait_leader)
    # The members talk to the etcd leader first, so the kill takes their connection too.
    endpoints = etcd.endpoints
    endpoints.insert(0, endpoints.pop(etcd_leader))
    async with etcd_group(endpoints) as members, asyncio.timeout(90):
        acknowledged, first_term = await commit_all(
            members, lambda: etcd.kill(etcd_leader), new_term=False
        )

        new_etcd_leader = await asyncio.to_thread(etcd.wait_leader, not_index=etcd_leader)
        leader = await agreed_leader(members)
        assert new_etcd_leader != etcd_leader
        assert leader.leadership().term >= first_term
        for member in members:
            assert sorted(await member.snapshot()) == acknowledged


async def test_hung_etcd_member_is_left_for_another(own_etcd: EtcdCluster) -> None:
    etcd = own_etcd
    etcd_leader = await asyncio.to_thread(etcd.wait_leader)
    follower = next(i for i in range(3) if i != etcd_leader)
    endpoints = etcd.endpoints
    endpoints.insert(0, endpoints.pop(follower))
    async with etcd_group(endpoints) as members, asyncio.timeout(60):
        leader = await agreed_leader(members)
        term = leader.leadership().term

        etcd.stop(follower)
        try:
            # The keepalive goes unanswered, so every member moves on in time
            # to keep its lease: the leadership survives.
            while True:
                with contextlib.suppress(ConsensusError):
                    await leader.commit("after", b"1", term=term)
                    break
            assert leader_agreed(members) is leader
            assert leader.leadership().term == term
            assert await leader.snapshot() == {"after": b"1"}
        finally:
            etcd.cont(follower)


async def test_start_without_an_answering_endpoint_names_the_key() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{closed.getsockname()[1]}"
    member = EtcdConsensus(
        config([endpoint, "unresolvable.invalid:2379"], commit_timeout=1.0),
        agent_id="a",
        grpc_address="127.0.0.1:1",
    )
    started = time.monotonic()

    with pytest.raises(ConsensusError, match=r"ha\.consensus\.etcd\.endpoints") as refused:
        await member.start()

    assert time.monotonic() - started < 5
    assert endpoint in str(refused.value)
    await member.aclose()
    assert member.leadership() == Leadership()


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:2379", "127.0.0.1", "a b:1"])
def test_endpoint_must_be_host_port(endpoint: str) -> None:
    with pytest.raises(ConsensusError, match=r"ha\.consensus\.etcd\.endpoints"):
        EtcdConsensus(config([endpoint]), agent_id="a", grpc_address="127.0.0.1:1")
