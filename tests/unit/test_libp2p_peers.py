"""The libp2p PeerClient and its server side, over an in-memory StreamCalls:
the same answers and the same PeerLost/NotFound/DeadlineExceeded contract as
the gRPC client (praxis_grpc.peers.base)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.cards import AgentCard, CardLoad, Endpoint
from praxis_grpc.discovery.streams import END, ERROR, ITEM, StreamCallError
from praxis_grpc.errors import DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted
from praxis_grpc.peers.base import Accepted, Dispatch, PeerLost, TaskQuery
from praxis_grpc.peers.by_address import ByAddress, is_libp2p_address
from praxis_grpc.peers.libp2p import FOLLOW, Libp2pPeerClient, PeerStreamService
from praxis_grpc.peers.service import PeerService
from praxis_grpc.tasks.model import Submission, Task, TaskState

ADDRESS = "/ip4/10.200.0.1/tcp/4001/p2p/relay/p2p-circuit/p2p/worker"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def task(task_id: str, state: TaskState) -> Task:
    return Task(task_id, "echo", {"x": 1}, state, NOW, NOW, owner_agent_id="worker")


class Handler:
    """A PeerHandler: runs nothing, answers from a script."""

    def __init__(self) -> None:
        self.follow_release = asyncio.Event()

    async def dispatch(self, dispatch: Dispatch) -> Accepted:
        if dispatch.submission.tool == "busy":
            raise ResourceExhausted("queue full", 2.0)
        return Accepted(task(dispatch.task_id, TaskState.WORKING), False)

    async def follow(self, task_id: str) -> AsyncIterator[Task]:
        if task_id == "missing":
            raise NotFound(f"task {task_id} does not run here")
        yield task(task_id, TaskState.WORKING)
        await self.follow_release.wait()
        yield task(task_id, TaskState.COMPLETED)

    async def cancel(self, task_id: str, reason: str) -> Task:
        return task(task_id, TaskState.CANCELED)

    async def relay_submit(
        self, submission: Submission, *, task_id: str, wait: bool, time_remaining: float | None
    ) -> Accepted:
        raise AssertionError("not carried")

    async def relay_get(self, task_id: str) -> Task:
        raise AssertionError("not carried")

    async def relay_list(self, query: TaskQuery) -> tuple[Sequence[Task], str]:
        raise AssertionError("not carried")

    async def relay_cancel(self, task_id: str, reason: str) -> Task:
        raise AssertionError("not carried")

    async def relay_watch(self, task_id: str) -> AsyncIterator[Task]:
        raise AssertionError("not carried")
        yield  # pragma: no cover


class MemoryCalls:
    """StreamCalls straight into a PeerStreamService, with faults."""

    def __init__(self, service: PeerStreamService) -> None:
        self.service = service
        self.unreachable = False
        self.break_after = -1  # frames delivered before the stream breaks
        self.stall = False

    async def call(self, address: str, request: bytes) -> AsyncIterator[bytes]:
        if self.unreachable:
            raise StreamCallError("cannot dial", sent=False)
        if self.stall:
            await asyncio.Event().wait()
        sent = 0
        async for frame in self.service.answer(request):
            if sent == self.break_after:
                raise StreamCallError("connection reset", sent=True)
            yield frame
            sent += 1


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def calls(handler: Handler) -> MemoryCalls:
    service = PeerService(
        handler,
        max_argument_bytes=4096,
        max_message_bytes=1 << 20,
        describe=lambda: Agent(agent_id="worker", name="worker"),
    )
    return MemoryCalls(PeerStreamService(service))


def dispatch(tool: str = "echo") -> Dispatch:
    return Dispatch("t-1", Submission(tool, {"x": 1}), origin_agent_id="entry")


async def test_dispatch_follow_and_cancel_round_trip(calls: MemoryCalls, handler: Handler) -> None:
    client = Libp2pPeerClient(calls)
    accepted = await client.dispatch(ADDRESS, dispatch(), call_timeout=5)
    assert accepted.task.state is TaskState.WORKING
    assert accepted.task.task_id == "t-1"
    states = []
    async for state in client.follow(ADDRESS, "t-1"):
        states.append(state.state)
        handler.follow_release.set()
    assert states == [TaskState.WORKING, TaskState.COMPLETED]
    cancelled = await client.cancel(ADDRESS, "t-1", "no longer needed", call_timeout=5)
    assert cancelled.state is TaskState.CANCELED


async def test_domain_errors_arrive_as_the_same_class(calls: MemoryCalls) -> None:
    client = Libp2pPeerClient(calls)
    with pytest.raises(ResourceExhausted) as busy:
        await client.dispatch(ADDRESS, dispatch("busy"), call_timeout=5)
    assert busy.value.retry_after == 2.0
    with pytest.raises(NotFound, match="does not run here"):
        async for _ in client.follow(ADDRESS, "missing"):
            pass
    with pytest.raises(InvalidArgument) as bad:
        await client.cancel(ADDRESS, "", "", call_timeout=5)
    assert bad.value.metadata()["field"] == "task_id"


async def test_transport_failures_are_peer_lost_with_sent(calls: MemoryCalls) -> None:
    client = Libp2pPeerClient(calls)
    calls.unreachable = True
    with pytest.raises(PeerLost) as never:
        await client.dispatch(ADDRESS, dispatch(), call_timeout=5)
    assert never.value.sent is False
    assert never.value.address == ADDRESS
    calls.unreachable = False
    calls.break_after = 0
    with pytest.raises(PeerLost) as broken:
        await client.dispatch(ADDRESS, dispatch(), call_timeout=5)
    assert broken.value.sent is True


async def test_a_stalled_call_is_deadline_exceeded(calls: MemoryCalls) -> None:
    calls.stall = True
    with pytest.raises(DeadlineExceeded):
        await Libp2pPeerClient(calls).dispatch(ADDRESS, dispatch(), call_timeout=0.05)


async def test_discard_breaks_calls_in_flight(calls: MemoryCalls) -> None:
    client = Libp2pPeerClient(calls)
    following = client.follow(ADDRESS, "t-1")
    first = await anext(following)
    assert first.state is TaskState.WORKING
    pending = asyncio.ensure_future(anext(following))
    await asyncio.sleep(0)
    client.discard(ADDRESS)
    with pytest.raises(PeerLost) as lost:
        await pending
    assert lost.value.sent is True


async def test_relays_to_a_coordinator_are_refused_unsent(calls: MemoryCalls) -> None:
    with pytest.raises(PeerLost) as refused:
        await Libp2pPeerClient(calls).relay_get(ADDRESS, "t-1", call_timeout=5)
    assert refused.value.sent is False


async def test_the_server_refuses_malformed_requests(calls: MemoryCalls) -> None:
    frames = [f async for f in calls.service.answer(bytes([FOLLOW]) + b"\xff\xff")]
    assert [f[0] for f in frames] == [ERROR]
    frames = [f async for f in calls.service.answer(b"\x09")]
    assert [f[0] for f in frames] == [ERROR]
    frames = [f async for f in calls.service.answer(b"")]
    assert [f[0] for f in frames] == [ERROR]
    assert ITEM != END


def test_the_transport_is_chosen_by_the_address() -> None:
    assert is_libp2p_address(ADDRESS)
    assert not is_libp2p_address("10.0.0.1:50051")
    assert not is_libp2p_address("[::1]:50051")


async def test_by_address_sends_multiaddrs_over_libp2p(calls: MemoryCalls) -> None:
    class Refusing(Libp2pPeerClient):
        async def dispatch(
            self, address: str, dispatch: Dispatch, *, call_timeout: float | None
        ) -> Accepted:
            raise AssertionError(f"gRPC called for {address}")

    both = ByAddress(Refusing(calls), Libp2pPeerClient(calls))
    accepted = await both.dispatch(ADDRESS, dispatch(), call_timeout=5)
    assert accepted.task.task_id == "t-1"
    with pytest.raises(AssertionError, match=r"gRPC called for 10\.0\.0\.1:1"):
        await both.dispatch("10.0.0.1:1", dispatch(), call_timeout=5)


def test_an_agent_advertising_a_relayed_address_is_called_there() -> None:
    direct = "/ip4/10.0.0.5/tcp/4001/p2p/worker"
    card = AgentCard(
        agent_id="worker",
        name="worker",
        praxis_version="0.1.0",
        role="peer",
        endpoints=(Endpoint("grpc", "192.168.1.2:50051"), Endpoint("libp2p", direct)),
        tools=(),
        tags=(),
        load=CardLoad(),
        draining=False,
        incarnation=1,
        version=1,
        updated_at=NOW,
    )
    assert card.peer_address == "192.168.1.2:50051"  # reachable: gRPC
    behind_nat = replace(card, endpoints=(*card.endpoints, Endpoint("libp2p", ADDRESS)))
    assert behind_nat.peer_address == ADDRESS  # relayed: over libp2p
    assert replace(card, endpoints=()).peer_address == ""


class ScriptedCalls:
    """StreamCalls whose peer sends ``frames`` (then endless ITEMs if ``flood``)."""

    def __init__(self, frames: list[bytes], *, flood: bool = False) -> None:
        self.frames = frames
        self.flood = flood
        self.sent = 0

    async def call(self, address: str, request: bytes) -> AsyncIterator[bytes]:
        for frame in self.frames:
            self.sent += 1
            yield frame
        while self.flood:
            self.sent += 1
            yield bytes([ITEM])
            await asyncio.sleep(0)


async def test_an_empty_frame_is_a_lost_peer_not_a_crash() -> None:
    client = Libp2pPeerClient(ScriptedCalls([b""]))
    with pytest.raises(PeerLost, match="empty frame"):
        await client.cancel(ADDRESS, "t-1", "x", call_timeout=5)


async def test_a_unary_call_stops_reading_at_the_second_message() -> None:
    calls = ScriptedCalls([], flood=True)
    client = Libp2pPeerClient(calls)
    with pytest.raises(PeerLost, match="not one"):
        await client.cancel(ADDRESS, "t-1", "x", call_timeout=None)
    assert calls.sent == 2


async def test_describe_round_trips_and_is_bounded_by_its_deadline(calls: MemoryCalls) -> None:
    client = Libp2pPeerClient(calls)
    described = await client.describe(ADDRESS, call_timeout=5)
    assert (described.agent_id, described.name) == ("worker", "worker")
    calls.stall = True
    with pytest.raises(DeadlineExceeded):
        await client.describe(ADDRESS, call_timeout=0.05)
