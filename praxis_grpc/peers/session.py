"""The sender's side of ``PeerService.Session``: one long-lived stream to one
peer carrying every Dispatch and Follow call to it, multiplexed by call id.

A call is queued and written by the session's writer, which puts every call
queued meanwhile into the same message (batching under load, never waiting
to fill a batch); the reader hands each reply to its call. A broken stream
fails every call in flight on it as :mod:`praxis_grpc.peers.base` says:
:class:`~praxis_grpc.peers.base.PeerLost` with ``sent=False`` for a call
never written (or a stream that never connected), ``sent=True`` otherwise;
follows end with that error and their followers follow again, on a new
session. :class:`Unsupported` is raised instead when the peer predates
``Session`` (UNIMPLEMENTED): the caller falls back to the unary calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.rpc import status_pb2

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as pb
from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as pb_grpc
from praxis_grpc.aio import cancelling
from praxis_grpc.api.errors import answered, error_from_rpc, error_from_status
from praxis_grpc.errors import DeadlineExceeded, PraxisError
from praxis_grpc.peers.base import PeerLost, WrongPeer
from praxis_grpc.wire import duration

__all__ = ["PeerSession", "Unsupported", "channel_closed", "peer_error"]


class Unsupported(Exception):
    """The peer does not serve ``Session``; nothing was acted on."""


_Item = pb.SessionReply | BaseException


class _Call:
    """One call's replies, in order. Lighter than an ``asyncio.Queue``: one
    is made per task, and only the call's own coroutine waits on it."""

    __slots__ = ("_items", "_waiter", "written")

    def __init__(self) -> None:
        self._items: deque[_Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.written = False

    def put(self, item: _Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def expire(self) -> None:
        """The call's time limit passed: :meth:`next` raises ``TimeoutError``."""
        self.put(TimeoutError())

    async def next(self) -> pb.SessionReply:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if isinstance(item, BaseException):
            raise item
        return item


class PeerSession:
    """One ``Session`` stream to ``address``; open from construction until
    :attr:`broken` (then the owner makes a new one). One event loop.

    Args:
        stub: The PeerService stub on the peer's channel.
        address: The peer (named in errors).
        max_batch_bytes: The largest request message written.
    """

    def __init__(
        self, stub: pb_grpc.PeerServiceAsyncStub, address: str, max_batch_bytes: int
    ) -> None:
        self._address = address
        self._limit = max_batch_bytes
        self._calls: dict[int, _Call] = {}
        self._queue: deque[pb.SessionCall] = deque()
        self._wake = asyncio.Event()
        self._ids = itertools.count(1)
        self.broken = False
        self._stream: Any = stub.Session()  # type: ignore[call-arg]  # written to, not iterated
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._write())]

    async def dispatch(
        self, request: pb.DispatchRequest, call_timeout: float | None
    ) -> pb.DispatchResponse:
        """One Dispatch call; raises as the peer module's contract says."""
        call_id, call = self._start(pb.SessionCall(dispatch=request), call_timeout)
        timer = None
        if call_timeout is not None:
            timer = asyncio.get_running_loop().call_later(call_timeout, call.expire)
        try:
            reply = await call.next()
        except TimeoutError:
            self._abandon(call_id)
            raise DeadlineExceeded(f"{self._address}: Deadline Exceeded") from None
        except asyncio.CancelledError:
            self._abandon(call_id)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._calls.pop(call_id, None)
        if reply.HasField("dispatch"):
            return reply.dispatch
        raise self._refusal(reply)

    async def follow(self, request: pb.FollowRequest) -> AsyncIterator[pb.FollowResponse]:
        """One Follow call: the owner's states until terminal."""
        call_id, call = self._start(pb.SessionCall(follow=request), None)
        ended = False
        try:
            while True:
                reply = await call.next()
                if reply.HasField("follow"):
                    yield reply.follow
                    continue
                ended = True
                if reply.HasField("end"):
                    return
                raise self._refusal(reply)
        finally:
            if not ended:
                self._abandon(call_id)
            self._calls.pop(call_id, None)

    def close(self, error: Callable[[bool], PraxisError | Unsupported]) -> None:
        """Break the session: every call in flight fails with ``error(sent)``."""
        if self.broken:
            return
        self.broken = True
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.put(error(call.written))
        self._queue.clear()
        self._stream.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def aclose(self) -> None:
        """Close the session and wait for its tasks."""
        self.close(lambda sent: channel_closed(self._address, sent=sent))
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, call: pb.SessionCall, timeout: float | None) -> tuple[int, _Call]:
        call_id = next(self._ids)
        call.call_id = call_id
        if timeout is not None:
            call.timeout.CopyFrom(duration(max(timeout, 1e-9)))  # at least 1 ns: positive
        pending = _Call()
        if self.broken:
            pending.put(channel_closed(self._address, sent=False))
            return call_id, pending
        self._calls[call_id] = pending
        self._queue.append(call)
        self._wake.set()
        return call_id, pending

    def _abandon(self, call_id: int) -> None:
        pending = self._calls.pop(call_id, None)
        if pending is None or self.broken:
            return
        if not pending.written:
            # Still queued: drop it instead of telling the peer.
            self._queue = deque(c for c in self._queue if c.call_id != call_id)
            return
        self._queue.append(pb.SessionCall(call_id=call_id, abandon=True))
        self._wake.set()

    def _refusal(self, reply: pb.SessionReply) -> PraxisError:
        return error_from_status(status_pb2.Status.FromString(reply.error), self._address)

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    batch = [self._queue.popleft()]
                    size = batch[0].ByteSize()
                    while self._queue:
                        size += self._queue[0].ByteSize()
                        if size > self._limit:
                            break
                        batch.append(self._queue.popleft())
                    for call in batch:
                        pending = self._calls.get(call.call_id)
                        if pending is not None:
                            pending.written = True
                    await self._stream.write(pb.SessionRequest(calls=batch))
        except asyncio.CancelledError:
            if cancelling():
                raise
            self._broke(None)
        except Exception as exc:
            self._broke(exc)

    async def _read(self) -> None:
        try:
            while True:
                response = await self._stream.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    self._broke(None)
                    return
                for reply in response.replies:
                    pending = self._calls.get(reply.call_id)
                    if pending is not None:
                        pending.put(reply)
        except asyncio.CancelledError:
            if cancelling():
                raise
            self._broke(None)
        except Exception as exc:
            self._broke(exc)

    def _broke(self, exc: BaseException | None) -> None:
        address = self._address
        if isinstance(exc, grpc.aio.AioRpcError):
            rpc = exc
            if rpc.code() is grpc.StatusCode.UNIMPLEMENTED and not answered(rpc):
                self.close(lambda _: Unsupported(address))
                return
            self.close(lambda sent: _lost_or(peer_error(rpc, address), sent, address))
            return
        self.close(lambda sent: channel_closed(address, sent=sent))


def _lost_or(error: PraxisError, sent: bool, address: str) -> PraxisError:
    """``error``, except that a call never written certainly did not arrive."""
    if sent:
        return error
    return PeerLost(f"{error.message} (before the call was sent)", address, sent=False)


def channel_closed(address: str, *, sent: bool = True) -> PeerLost:
    """The error of a call whose channel (or session) was closed under it."""
    return PeerLost(f"the channel to {address} was closed during the call", address, sent=sent)


def peer_error(exc: grpc.aio.AioRpcError, address: str) -> PraxisError:
    """The domain error of a failed call to ``address`` (module contract of
    :mod:`praxis_grpc.peers.base`)."""
    code = exc.code()
    if answered(exc):
        return error_from_rpc(exc, address)
    if code is grpc.StatusCode.UNAVAILABLE and _wrong_peer(exc):
        return WrongPeer(
            f"{address} answered with a certificate that does not name the agent dialed",
            address,
        )
    if code is grpc.StatusCode.UNAVAILABLE:
        return PeerLost(
            f"{address} did not answer ({exc.details() or code.name})",
            address,
            sent=not _never_sent(exc),
        )
    if code is grpc.StatusCode.CANCELLED:
        return PeerLost(f"the call to {address} was cancelled", address, sent=True)
    return error_from_rpc(exc, address)


def _wrong_peer(exc: grpc.aio.AioRpcError) -> bool:
    """True when TLS refused the server's certificate for not naming the agent dialed.

    gRPC reports it only in the text (``ssl_target_name_override`` mismatch);
    older gRPC releases said "Peer name ... is not in peer certificate".
    """
    text = (exc.details() or "").lower()
    return "hostname verification check failed" in text or "is not in peer certificate" in text


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """True when the channel could not connect, so the request never left."""
    text = f"{exc.details()} {exc.debug_error_string()}".lower()
    return "failed to connect" in text or "connection refused" in text
