"""An in-memory :class:`~praxis_grpc.peers.base.PeerClient` network, for
deterministic cluster tests without sockets (like hashicorp/raft's
``InmemTransport``).

Each node serves its :class:`~praxis_grpc.peers.base.PeerHandler` under an
address (:meth:`MemoryPeerNetwork.serve`) and calls the others through its
own client (:meth:`MemoryPeerNetwork.client`). Values cross a link as
copies, as they would on a wire. Faults:

    - :meth:`MemoryPeerNetwork.cut` / :meth:`~MemoryPeerNetwork.heal`: a
      partition between two addresses (both directions). A call across a
      cut link raises ``PeerLost(sent=False)``; calls and streams in flight
      across it when it is cut raise ``PeerLost(sent=True)`` (the request
      may have been acted on). A cut is no evidence for
      :meth:`~praxis_grpc.peers.base.PeerClient.wait_gone`.
    - :meth:`MemoryPeerNetwork.delay`: every call across a link first waits
      this long.
    - :meth:`MemoryPeerNetwork.kill`: the process at an address dies: its
      handler is gone, calls in flight to it break, and ``wait_gone`` of it
      returns. :meth:`~MemoryPeerNetwork.serve` again restarts it.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.errors import DeadlineExceeded, PraxisError, Unavailable
from praxis_grpc.peers.base import Accepted, Dispatch, PeerHandler, PeerLost, TaskQuery
from praxis_grpc.tasks.model import Submission, Task

__all__ = ["MemoryPeerClient", "MemoryPeerNetwork"]

T = TypeVar("T")


class _Link:
    """One direction between two addresses."""

    def __init__(self) -> None:
        self.cut = False
        self.delay = 0.0
        self.broken = asyncio.Event()

    def break_calls(self) -> None:
        broken, self.broken = self.broken, asyncio.Event()
        broken.set()


class MemoryPeerNetwork:
    """Addresses, their handlers, and the links between them. One event loop."""

    def __init__(self) -> None:
        self._handlers: dict[str, PeerHandler] = {}
        self._describers: dict[str, Callable[[], Agent]] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        self._gone: dict[str, asyncio.Event] = {}

    def serve(self, address: str, handler: PeerHandler, *, describe: Callable[[], Agent]) -> None:
        """Serve ``handler`` at ``address`` (again, after :meth:`kill`);
        ``describe`` answers ``Describe`` there, as the node's peer service does."""
        self._handlers[address] = handler
        self._describers[address] = describe
        self._gone.pop(address, None)

    def client(self, address: str) -> MemoryPeerClient:
        """The peer client of the node at ``address``."""
        return MemoryPeerClient(self, address)

    def cut(self, a: str, b: str) -> None:
        """Partition ``a`` from ``b`` (both directions)."""
        for link in (self.link(a, b), self.link(b, a)):
            link.cut = True
            link.break_calls()

    def heal(self, a: str, b: str) -> None:
        """Undo :meth:`cut`."""
        self.link(a, b).cut = False
        self.link(b, a).cut = False

    def delay(self, a: str, b: str, seconds: float) -> None:
        """Delay every call from ``a`` to ``b`` and back by ``seconds``."""
        self.link(a, b).delay = seconds
        self.link(b, a).delay = seconds

    def kill(self, address: str) -> None:
        """The process at ``address`` dies (see the module docstring)."""
        self._handlers.pop(address, None)
        self._gone.setdefault(address, asyncio.Event()).set()
        for (source, target), link in self._links.items():
            if address in (source, target):
                link.break_calls()

    def link(self, source: str, target: str) -> _Link:
        """The link from ``source`` to ``target`` (made on first use)."""
        return self._links.setdefault((source, target), _Link())

    def handler(self, source: str, target: str) -> PeerHandler:
        """The handler at ``target`` as ``source`` reaches it now.

        Raises:
            PeerLost: (``sent=False``) the link is cut or nothing serves there.
        """
        handler = self._handlers.get(target)
        if self.link(source, target).cut or handler is None:
            raise PeerLost(f"{target} cannot be reached from {source}", target, sent=False)
        return handler

    async def described(self, address: str) -> Agent:
        """What the node at ``address`` answers to ``Describe``."""
        return self._describers[address]()

    async def gone(self, address: str) -> None:
        """Return once the process at ``address`` was killed."""
        await self._gone.setdefault(address, asyncio.Event()).wait()


class MemoryPeerClient:
    """The :class:`~praxis_grpc.peers.base.PeerClient` of the node at ``source``."""

    def __init__(self, network: MemoryPeerNetwork, source: str) -> None:
        self._network = network
        self._source = source
        # Broken by discard(): the calls in flight to one address.
        self._channels: dict[str, asyncio.Event] = {}

    async def _call(
        self,
        target: str,
        call: Callable[[PeerHandler], Awaitable[T]],
        call_timeout: float | None,
    ) -> T:
        link = self._network.link(self._source, target)
        if link.delay:
            await asyncio.sleep(link.delay)
        handler = self._network.handler(self._source, target)
        served = asyncio.ensure_future(_served(call(handler), target))
        breaks = [
            asyncio.ensure_future(link.broken.wait()),
            asyncio.ensure_future(self._channel(target).wait()),
        ]
        try:
            async with asyncio.timeout(call_timeout):
                await asyncio.wait([served, *breaks], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise DeadlineExceeded(f"{target}: the call's deadline passed") from None
        finally:
            await _stop(served, *breaks)
        if not served.done() or served.cancelled():
            raise PeerLost(f"the call to {target} broke", target, sent=True)
        return copy.deepcopy(served.result())

    async def _stream(
        self, target: str, open_stream: Callable[[PeerHandler], AsyncIterator[Task]]
    ) -> AsyncIterator[Task]:
        link = self._network.link(self._source, target)
        if link.delay:
            await asyncio.sleep(link.delay)
        stream = open_stream(self._network.handler(self._source, target))
        broken, discarded = link.broken, self._channel(target)
        try:
            while True:
                task = await self._call_once(target, _next(stream), broken, discarded)
                if task is None:
                    return
                yield copy.deepcopy(task)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def _call_once(
        self,
        target: str,
        step: Awaitable[Task | None],
        broken: asyncio.Event,
        discarded: asyncio.Event,
    ) -> Task | None:
        served = asyncio.ensure_future(_served(step, target))
        breaks = [asyncio.ensure_future(broken.wait()), asyncio.ensure_future(discarded.wait())]
        try:
            await asyncio.wait([served, *breaks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _stop(served, *breaks)
        if not served.done() or served.cancelled():
            raise PeerLost(f"the stream from {target} broke", target, sent=True)
        return served.result()

    def _channel(self, target: str) -> asyncio.Event:
        return self._channels.setdefault(target, asyncio.Event())

    async def dispatch(
        self, address: str, dispatch: Dispatch, *, call_timeout: float | None
    ) -> Accepted:
        sent = copy.deepcopy(dispatch)
        return await self._call(address, lambda h: h.dispatch(sent), call_timeout)

    def follow(self, address: str, task_id: str) -> AsyncIterator[Task]:
        return self._stream(address, lambda h: h.follow(task_id))

    async def cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        return await self._call(address, lambda h: h.cancel(task_id, reason), call_timeout)

    async def relay_submit(
        self,
        address: str,
        submission: Submission,
        *,
        task_id: str,
        wait: bool,
        call_timeout: float | None,
    ) -> Accepted:
        sent = copy.deepcopy(submission)
        return await self._call(
            address,
            lambda h: h.relay_submit(sent, task_id=task_id, wait=wait, time_remaining=call_timeout),
            call_timeout,
        )

    async def relay_get(self, address: str, task_id: str, *, call_timeout: float | None) -> Task:
        return await self._call(address, lambda h: h.relay_get(task_id), call_timeout)

    async def relay_list(
        self, address: str, query: TaskQuery, *, call_timeout: float | None
    ) -> tuple[Sequence[Task], str]:
        return await self._call(address, lambda h: h.relay_list(query), call_timeout)

    async def relay_cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        return await self._call(address, lambda h: h.relay_cancel(task_id, reason), call_timeout)

    def relay_watch(self, address: str, task_id: str) -> AsyncIterator[Task]:
        return self._stream(address, lambda h: h.relay_watch(task_id))

    async def describe(self, address: str, *, call_timeout: float | None) -> Agent:
        return await self._call(address, lambda _: self._network.described(address), call_timeout)

    async def wait_gone(self, address: str) -> str:
        await self._network.gone(address)
        return f"the process at {address} is gone"

    def discard(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            channel.set()

    async def aclose(self) -> None:
        for address in list(self._channels):
            self.discard(address)


async def _stop(*waiters: asyncio.Future[Any]) -> None:
    """Cancel the unfinished ``waiters`` and wait until they are done."""
    pending = [waiter for waiter in waiters if not waiter.done()]
    for waiter in pending:
        waiter.cancel()
    if pending:
        await asyncio.wait(pending)


async def _next(stream: AsyncIterator[Task]) -> Task | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


async def _served(call: Awaitable[T], target: str) -> T:
    """``call``'s result; an error that is not a domain error reaches the
    caller as Unavailable, as an unexpected server error does over gRPC."""
    try:
        return await call
    except PraxisError:
        raise
    except Exception as exc:
        raise Unavailable(f"{target}: {exc!r}") from None
