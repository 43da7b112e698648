"""The libp2p :class:`~praxis_grpc.peers.base.PeerClient`: the peer service's
calls over ``/praxis/peer/1.0.0`` streams, for agents that cannot be dialed
over gRPC (behind NAT: reached directly or through a circuit relay).

``address`` is a libp2p multiaddr ending in ``/p2p/<peer id>`` (relayed or
not) taken from the agent's card. A request frame is one method byte and the
protobuf request of ``praxis.peer.v1.PeerService``; the answer is the
response messages, then an error (a ``google.rpc.Status``, converted as the
gRPC client converts it) or an end frame (:mod:`praxis_grpc.discovery.streams`).

Dispatch, Follow, Cancel and Describe are carried; the active-passive relays to a
coordinator are not (a coordinator must be reachable over gRPC): they raise
:class:`~praxis_grpc.peers.base.PeerLost` with ``sent=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as pb
from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.api.errors import error_from_status, status_of
from praxis_grpc.discovery.streams import END, ERROR, ITEM, StreamCallError, StreamCalls
from praxis_grpc.errors import DeadlineExceeded, InvalidArgument
from praxis_grpc.peers.base import Accepted, Dispatch, PeerLost, TaskQuery
from praxis_grpc.peers.grpc import dispatch_request
from praxis_grpc.peers.service import PeerService
from praxis_grpc.tasks.model import Submission, Task
from praxis_grpc.wire import task_from_proto

__all__ = ["CANCEL", "DESCRIBE", "DISPATCH", "FOLLOW", "Libp2pPeerClient", "PeerStreamService"]

M = TypeVar(
    "M",
    pb.DispatchResponse,
    pb.FollowResponse,
    pb.CancelResponse,
    pb.DescribeResponse,
    status_pb2.Status,
)
R = TypeVar("R", pb.DispatchRequest, pb.FollowRequest, pb.CancelRequest, pb.DescribeRequest)

DISPATCH = 1
FOLLOW = 2
CANCEL = 3
DESCRIBE = 4


class Libp2pPeerClient:
    """:class:`~praxis_grpc.peers.base.PeerClient` over ``calls`` (the libp2p host)."""

    def __init__(self, calls: StreamCalls) -> None:
        self._calls = calls
        self._lost: dict[str, set[asyncio.Future[None]]] = {}

    async def dispatch(
        self, address: str, dispatch: Dispatch, *, call_timeout: float | None
    ) -> Accepted:
        request = dispatch_request(dispatch)
        body = await self._unary(address, DISPATCH, request.SerializeToString(), call_timeout)
        response = pb.DispatchResponse.FromString(body)
        task = task_from_proto(response.task, dispatch.submission.arguments)
        return Accepted(task, response.deduplicated)

    async def follow(self, address: str, task_id: str) -> AsyncIterator[Task]:
        request = pb.FollowRequest(task_id=task_id).SerializeToString()
        frames = self._frames(address, FOLLOW, request)
        try:
            async for body in frames:
                yield task_from_proto(_parse(pb.FollowResponse, body, address).task)
        finally:
            await frames.aclose()  # type: ignore[attr-defined]

    async def cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        request = pb.CancelRequest(task_id=task_id, reason=reason).SerializeToString()
        body = await self._unary(address, CANCEL, request, call_timeout)
        return task_from_proto(_parse(pb.CancelResponse, body, address).task)

    async def relay_submit(
        self,
        address: str,
        submission: Submission,
        *,
        task_id: str,
        wait: bool,
        call_timeout: float | None,
    ) -> Accepted:
        raise _no_relays(address)

    async def relay_get(self, address: str, task_id: str, *, call_timeout: float | None) -> Task:
        raise _no_relays(address)

    async def relay_list(
        self, address: str, query: TaskQuery, *, call_timeout: float | None
    ) -> tuple[Sequence[Task], str]:
        raise _no_relays(address)

    async def relay_cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        raise _no_relays(address)

    async def relay_watch(self, address: str, task_id: str) -> AsyncIterator[Task]:
        raise _no_relays(address)
        yield  # pragma: no cover  # an async generator, like the other clients'

    async def describe(self, address: str, *, call_timeout: float | None) -> Agent:
        request = pb.DescribeRequest().SerializeToString()
        body = await self._unary(address, DESCRIBE, request, call_timeout)
        return _parse(pb.DescribeResponse, body, address).agent

    async def wait_gone(self, address: str) -> str:
        """A peer behind NAT gives no evidence of its death (no port to find
        closed): wait until cancelled, for the backend's failure detector."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    def discard(self, address: str) -> None:
        for lost in self._lost.pop(address, set()):
            if not lost.done():
                lost.set_result(None)

    async def aclose(self) -> None:
        for address in list(self._lost):
            self.discard(address)

    async def _unary(
        self, address: str, method: int, request: bytes, call_timeout: float | None
    ) -> bytes:
        frames = self._frames(address, method, request)
        answers: list[bytes] = []
        try:
            async with asyncio.timeout(call_timeout):
                # Read on to the end frame, so the stream closes cleanly: a reset
                # racing the peer's close can break py-libp2p 0.8.1's yamux connection.
                # A second message is already wrong: stop there, not at the peer's end.
                async for body in frames:
                    answers.append(body)
                    if len(answers) > 1:
                        break
        except TimeoutError:
            raise DeadlineExceeded(f"the call to {address} took over {call_timeout}s") from None
        finally:
            await frames.aclose()  # type: ignore[attr-defined]
        if len(answers) != 1:
            many = "more than one" if answers else "none"
            raise PeerLost(f"{address} answered {many} messages, not one", address, sent=True)
        return answers[0]

    async def _frames(self, address: str, method: int, request: bytes) -> AsyncIterator[bytes]:
        """The response messages of one call; raises as the PeerClient contract says."""
        lost = asyncio.get_running_loop().create_future()
        self._lost.setdefault(address, set()).add(lost)
        frames = self._calls.call(address, bytes([method]) + request)
        following: asyncio.Future[bytes] | None = None
        try:
            while True:
                following = asyncio.ensure_future(anext(frames))
                await asyncio.wait({following, lost}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    with contextlib.suppress(BaseException):
                        await following
                    raise PeerLost(
                        f"the connection to {address} was closed during the call",
                        address,
                        sent=True,
                    )
                try:
                    frame = following.result()
                except StopAsyncIteration:
                    raise PeerLost(f"{address} ended the call early", address, sent=True) from None
                except StreamCallError as exc:
                    raise PeerLost(
                        f"{address} did not answer ({exc})", address, sent=exc.sent
                    ) from None
                if not frame:
                    raise PeerLost(f"{address} sent an empty frame", address, sent=True)
                kind, body = frame[0], frame[1:]
                if kind == ITEM:
                    yield body
                elif kind == ERROR:
                    status = _parse(status_pb2.Status, body, address)
                    raise error_from_status(status, address)
                elif kind == END:
                    return
                else:
                    raise PeerLost(f"{address} sent a frame of kind {kind}", address, sent=True)
        finally:
            self._lost.get(address, set()).discard(lost)
            if following is not None and not following.done():
                following.cancel()  # the caller gave up: end the call
                with contextlib.suppress(BaseException):
                    await following
            await frames.aclose()  # type: ignore[attr-defined]


def _parse(kind: type[M], body: bytes, address: str) -> M:
    try:
        return kind.FromString(body)
    except DecodeError:
        raise PeerLost(f"{address} sent a malformed {kind.__name__}", address, sent=True) from None


def _no_relays(address: str) -> PeerLost:
    return PeerLost(
        f"relays to a coordinator are not carried over libp2p ({address}); "
        "a coordinator needs a reachable gRPC endpoint",
        address,
        sent=False,
    )


class PeerStreamService:
    """Answers ``/praxis/peer/1.0.0`` calls with the node's :class:`PeerService`
    (the same validation and handler as over gRPC); a
    :class:`~praxis_grpc.discovery.streams.StreamService`."""

    def __init__(self, service: PeerService) -> None:
        self._service = service

    async def answer(self, request: bytes) -> AsyncIterator[bytes]:
        try:
            method, body = (request[0], request[1:]) if request else (0, b"")
            if method == DISPATCH:
                dispatched = await self._service.dispatch(_request(pb.DispatchRequest, body))
                yield bytes([ITEM]) + dispatched.SerializeToString()
            elif method == FOLLOW:
                async for state in self._service.follow(_request(pb.FollowRequest, body)):
                    yield bytes([ITEM]) + state.SerializeToString()
            elif method == CANCEL:
                cancelled = await self._service.cancel(_request(pb.CancelRequest, body))
                yield bytes([ITEM]) + cancelled.SerializeToString()
            elif method == DESCRIBE:
                described = await self._service.describe(_request(pb.DescribeRequest, body))
                yield bytes([ITEM]) + described.SerializeToString()
            else:
                raise InvalidArgument("method", f"{method} is not a peer call over libp2p")
        except Exception as exc:
            yield bytes([ERROR]) + status_of(exc).SerializeToString()
            return
        yield bytes([END])


def _request(kind: type[R], body: bytes) -> R:
    try:
        return kind.FromString(body)
    except DecodeError:
        raise InvalidArgument("request", f"not a {kind.__name__}") from None
