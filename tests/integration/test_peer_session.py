"""``PeerService.Session`` over loopback: dispatch and follow multiplexed on one
stream per peer, the bound on calls in flight, a broken stream, and the
unary fallback for a peer without ``Session``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as pb
from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.errors import DeadlineExceeded, NotFound, ResourceExhausted
from praxis_grpc.peers.base import Accepted, Dispatch, PeerLost, TaskQuery
from praxis_grpc.peers.grpc import GrpcPeerClient, dispatch_request
from praxis_grpc.peers.service import PeerService, add_to_server
from praxis_grpc.tasks.model import Submission, Task, TaskState
from tests.integration.helpers import until

NOW = datetime(2025, 1, 1, tzinfo=UTC)
UNKNOWN = "0f6a3c1e-8d2b-4e7a-9b1c-5d4e3f2a1b0c"  # a task the owner does not run


class Owner:
    """A PeerHandler whose dispatches wait for ``release`` when ``hold`` is set."""

    def __init__(self) -> None:
        self.dispatched: list[str] = []
        self.hold = False
        self.release = asyncio.Event()

    async def dispatch(self, dispatch: Dispatch) -> Accepted:
        self.dispatched.append(dispatch.task_id)
        if self.hold:
            await self.release.wait()
        task = Task(
            dispatch.task_id,
            dispatch.submission.tool,
            dict(dispatch.submission.arguments),
            TaskState.SUBMITTED,
            NOW,
            NOW,
            owner_agent_id="owner",
            origin_agent_id=dispatch.origin_agent_id,
        )
        return Accepted(task, False)

    async def follow(self, task_id: str) -> AsyncIterator[Task]:
        if task_id == UNKNOWN:
            raise NotFound(f"task {task_id!r} not found")
        task = Task(task_id, "echo", {}, TaskState.WORKING, NOW, NOW, owner_agent_id="owner")
        yield task
        yield replace(task, state=TaskState.COMPLETED, result={"ok": True})

    async def cancel(self, task_id: str, reason: str) -> Task:
        raise NotImplementedError

    async def relay_submit(
        self, submission: Submission, *, task_id: str, wait: bool, time_remaining: float | None
    ) -> Accepted:
        raise NotImplementedError

    async def relay_get(self, task_id: str) -> Task:
        raise NotImplementedError

    async def relay_list(self, query: TaskQuery) -> tuple[Sequence[Task], str]:
        raise NotImplementedError

    async def relay_cancel(self, task_id: str, reason: str) -> Task:
        raise NotImplementedError

    def relay_watch(self, task_id: str) -> AsyncIterator[Task]:
        raise NotImplementedError


class OlderService(PeerService):
    """A peer that predates Session."""

    Session = pb_grpc.PeerServiceServicer.Session  # type: ignore[assignment]


async def serve(service: PeerService) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def dispatch() -> Dispatch:
    return Dispatch(str(uuid.uuid4()), Submission("echo", {"n": 1}), origin_agent_id="entry")


@pytest.fixture
async def client() -> AsyncIterator[GrpcPeerClient]:
    peers = GrpcPeerClient("entry")
    try:
        yield peers
    finally:
        await peers.aclose()


def options(service_class: type[PeerService], owner: Owner, calls: int = 1024) -> PeerService:
    return service_class(
        owner,
        max_argument_bytes=4096,
        max_message_bytes=1 << 20,
        max_session_calls=calls,
        describe=lambda: Agent(agent_id="owner"),
    )


async def test_dispatches_and_follows_share_one_stream(client: GrpcPeerClient) -> None:
    owner = Owner()
    server, address = await serve(options(PeerService, owner))
    try:
        sent = [dispatch() for _ in range(20)]
        accepted = await asyncio.gather(
            *(client.dispatch(address, d, call_timeout=5) for d in sent)
        )
        assert [a.task.task_id for a in accepted] == [d.task_id for d in sent]
        states = [t.state async for t in client.follow(address, str(uuid.uuid4()))]
        assert states == [TaskState.WORKING, TaskState.COMPLETED]
        with pytest.raises(NotFound):
            async for _ in client.follow(address, UNKNOWN):
                pass
        assert len(client._sessions) == 1  # one stream carried every call
        assert not client._unary_only
    finally:
        await server.stop(None)


async def test_calls_beyond_the_bound_are_refused_and_deadlines_end_calls(
    client: GrpcPeerClient,
) -> None:
    owner = Owner()
    owner.hold = True
    server, address = await serve(options(PeerService, owner, calls=2))
    try:
        held = [
            asyncio.create_task(client.dispatch(address, dispatch(), call_timeout=30))
            for _ in range(2)
        ]
        await until(lambda: len(owner.dispatched) == 2)
        with pytest.raises(ResourceExhausted, match="in flight"):
            await client.dispatch(address, dispatch(), call_timeout=5)
        owner.release.set()
        await asyncio.gather(*held)
        owner.release.clear()
        with pytest.raises(DeadlineExceeded):
            await client.dispatch(address, dispatch(), call_timeout=0.2)
        owner.release.set()
        # The abandoned call freed its slot: two more fit.
        await asyncio.gather(
            *(client.dispatch(address, dispatch(), call_timeout=5) for _ in range(2))
        )
    finally:
        await server.stop(None)


async def test_a_broken_stream_fails_calls_in_flight_and_the_next_call_reopens_it(
    client: GrpcPeerClient,
) -> None:
    owner = Owner()
    owner.hold = True
    server, address = await serve(options(PeerService, owner))
    try:
        held = asyncio.create_task(client.dispatch(address, dispatch(), call_timeout=30))
        await until(lambda: len(owner.dispatched) == 1)
        client.discard(address)  # the peer left the mesh: its calls break
        with pytest.raises(PeerLost) as lost:
            await held
        assert lost.value.sent
        owner.hold = False
        accepted = await client.dispatch(address, dispatch(), call_timeout=5)
        assert accepted.task.owner_agent_id == "owner"
    finally:
        await server.stop(None)


async def test_a_refused_connection_is_never_sent(client: GrpcPeerClient) -> None:
    server, address = await serve(options(PeerService, Owner()))
    await server.stop(None)
    with pytest.raises(PeerLost) as lost:
        await client.dispatch(address, dispatch(), call_timeout=5)
    assert not lost.value.sent


async def test_a_peer_without_session_is_called_unary(client: GrpcPeerClient) -> None:
    owner = Owner()
    server, address = await serve(options(OlderService, owner))
    try:
        accepted = await client.dispatch(address, dispatch(), call_timeout=5)
        assert accepted.task.owner_agent_id == "owner"
        assert address in client._unary_only
        states = [t.state async for t in client.follow(address, str(uuid.uuid4()))]
        assert states == [TaskState.WORKING, TaskState.COMPLETED]
    finally:
        await server.stop(None)


async def test_describe_is_a_unary_call(client: GrpcPeerClient) -> None:
    server, address = await serve(options(PeerService, Owner()))
    try:
        described = await client.describe(address, call_timeout=5)
        assert described.agent_id == "owner"
    finally:
        await server.stop(None)


async def test_a_call_with_an_invalid_timeout_is_refused_and_the_stream_goes_on() -> None:
    owner = Owner()
    server, address = await serve(options(PeerService, owner))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stream: Any = pb_grpc.PeerServiceStub(channel).Session()  # type: ignore[call-arg]
            request = dispatch_request(dispatch())
            bad = pb.SessionCall(call_id=1, dispatch=request)
            bad.timeout.seconds = 2**62  # beyond any Duration (and any timedelta)
            await stream.write(pb.SessionRequest(calls=[bad]))
            refused = (await stream.read()).replies[0]
            status = status_pb2.Status.FromString(refused.error)
            assert (refused.call_id, status.code) == (1, grpc.StatusCode.INVALID_ARGUMENT.value[0])
            assert "calls[].timeout" in status.message
            await stream.write(
                pb.SessionRequest(calls=[pb.SessionCall(call_id=2, dispatch=request)])
            )
            accepted = (await stream.read()).replies[0]
            assert (accepted.call_id, accepted.dispatch.task.owner_agent_id) == (2, "owner")
            await stream.done_writing()
    finally:
        await server.stop(None)
