"""The owner's side of ``PeerService.Session``: many Dispatch and Follow
calls of one peer on one stream.

Each call runs as its own asyncio task, owned by the stream: it ends when
the call does, when the peer abandons it, or with the stream. Memory per
stream is bounded: at most ``max_calls`` calls run at once (more are
refused with RESOURCE_EXHAUSTED in their reply), and at most
``_OUTBOX`` replies wait to be written (a call that would add one waits,
and a peer that stops reading stops its calls, through HTTP/2 flow control).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as pb
from praxis_grpc.api.errors import status_of
from praxis_grpc.errors import DeadlineExceeded, InvalidArgument, PraxisError, ResourceExhausted
from praxis_grpc.wire import duration_seconds

__all__ = ["SessionCalls"]

log = logging.getLogger(__name__)

# Replies queued for writing per stream, and per response message.
_OUTBOX = 256
_MAX_BATCH = 64


class PeerCalls(Protocol):
    """The validating calls of ``PeerService`` that a session multiplexes."""

    async def dispatch(self, request: pb.DispatchRequest) -> pb.DispatchResponse:
        """As ``PeerService.Dispatch``."""
        ...

    def follow(self, request: pb.FollowRequest) -> AsyncIterator[pb.FollowResponse]:
        """As ``PeerService.Follow``."""
        ...


class SessionCalls:
    """Serves one ``Session`` stream through ``calls``.

    Args:
        calls: The service's validating Dispatch and Follow.
        max_calls: Calls in flight at once; more are refused.
        room: The largest response message, in bytes.
    """

    def __init__(self, calls: PeerCalls, max_calls: int, room: int) -> None:
        self._service = calls
        self._max_calls = max_calls
        self._room = room
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._outbox: asyncio.Queue[pb.SessionReply | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(_OUTBOX)

    async def run(
        self, requests: AsyncIterator[pb.SessionRequest]
    ) -> AsyncIterator[pb.SessionResponse]:
        """The responses to ``requests``: every reply queued when one is written
        goes into the same message (up to ``_MAX_BATCH`` and ``room`` bytes)."""
        reader = asyncio.get_running_loop().create_task(self._read(requests))
        carry: deque[pb.SessionReply] = deque()
        try:
            while True:
                first = carry.popleft() if carry else await self._take()
                if first is None:
                    break
                replies, size, done = [first], first.ByteSize(), False
                while len(replies) < _MAX_BATCH and not self._outbox.empty():
                    reply = await self._take()
                    if reply is None:
                        done = True
                        break
                    if size + reply.ByteSize() > self._room:
                        carry.append(reply)
                        break
                    replies.append(reply)
                    size += reply.ByteSize()
                yield pb.SessionResponse(replies=replies)
                if done:
                    break
        finally:
            reader.cancel()
            for call in list(self._calls.values()):
                call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if self._calls:
                await asyncio.wait(set(self._calls.values()))

    async def _take(self) -> pb.SessionReply | None:
        reply = await self._outbox.get()
        if reply is not None:
            self._slots.release()
        return reply

    async def _send(self, reply: pb.SessionReply) -> None:
        await self._slots.acquire()
        self._outbox.put_nowait(reply)

    async def _read(self, requests: AsyncIterator[pb.SessionRequest]) -> None:
        try:
            async for request in requests:
                for call in request.calls:
                    await self._start(call)
            # The peer closed its side: finish the calls in flight, then end.
            while self._calls:
                await asyncio.wait(set(self._calls.values()))
        except Exception as exc:  # the stream broke: the handler is cancelled too
            log.debug("a peer session ended: %r", exc)
        finally:
            self._outbox.put_nowait(None)

    async def _start(self, call: pb.SessionCall) -> None:
        call_id, kind = call.call_id, call.WhichOneof("call")
        if kind == "abandon":
            running = self._calls.get(call_id)
            if running is not None:
                running.cancel()
                # A call cancelled before its first step never runs _run's clean-up.
                running.add_done_callback(lambda _: self._done(call_id, running))
            return
        refusal: PraxisError | None = None
        timeout: float | None = None
        if call_id == 0:
            refusal = InvalidArgument("calls[].call_id", "is required")
        elif kind is None:
            refusal = InvalidArgument("calls[].call", "is required")
        elif call_id in self._calls:
            refusal = InvalidArgument("calls[].call_id", f"{call_id} is in flight")
        elif len(self._calls) >= self._max_calls:
            refusal = ResourceExhausted(
                f"more than {self._max_calls} calls in flight on this stream", retry_after=0.1
            )
        elif call.HasField("timeout"):
            try:
                timeout = duration_seconds(call.timeout, "calls[].timeout")
            except InvalidArgument as exc:
                refusal = exc
            else:
                if timeout <= 0:
                    refusal = InvalidArgument("calls[].timeout", "must be positive")
        if refusal is not None:
            await self._fail(call_id, refusal)
            return
        # Removed from _calls by _run itself when it ends (a done callback
        # would cost every call an event-loop round).
        self._calls[call_id] = asyncio.get_running_loop().create_task(self._run(call, timeout))

    def _done(self, call_id: int, task: asyncio.Future[None] | None) -> None:
        if self._calls.get(call_id) is task:
            del self._calls[call_id]

    async def _run(self, call: pb.SessionCall, limit: float | None) -> None:
        call_id = call.call_id
        try:
            async with asyncio.timeout(limit):
                if call.HasField("dispatch"):
                    response = await self._service.dispatch(call.dispatch)
                    await self._send(pb.SessionReply(call_id=call_id, dispatch=response))
                    return
                async for state in self._service.follow(call.follow):
                    await self._send(pb.SessionReply(call_id=call_id, follow=state))
                await self._send(pb.SessionReply(call_id=call_id, end=True))
        except TimeoutError:
            await self._fail(call_id, DeadlineExceeded("the call's deadline passed"))
        except Exception as exc:
            await self._fail(call_id, exc)
        finally:
            self._done(call_id, asyncio.current_task())

    async def _fail(self, call_id: int, exc: Exception) -> None:
        status = status_of(exc)
        await self._send(pb.SessionReply(call_id=call_id, error=status.SerializeToString()))
