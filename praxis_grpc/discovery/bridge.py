"""The one module that knows both trio and asyncio.

py-libp2p runs on trio; the node runs on asyncio. :class:`Libp2pDiscovery`
runs a :class:`~praxis_grpc.discovery.libp2p.MeshHost` in a dedicated thread
under ``trio.run`` and crosses between the two loops in exactly two ways:
asyncio -> trio with ``TrioToken.run_sync_soon`` and trio -> asyncio with
``loop.call_soon_threadsafe`` (about 50 µs per crossing on this machine).
No other module imports trio on the asyncio side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import trio

from praxis_grpc.discovery._peer_stream import is_final, make_call
from praxis_grpc.discovery._reach import HostReach, ReachOptions
from praxis_grpc.discovery.base import DiscoveryEvents, PeerStatus
from praxis_grpc.discovery.libp2p import HostOptions, MeshHost
from praxis_grpc.discovery.members import MemberEvents, MembershipOptions, MemberStatus
from praxis_grpc.discovery.streams import StreamCallError, StreamService
from praxis_grpc.membership import State

log = logging.getLogger(__name__)
T = TypeVar("T")


class _ForwardToLoop:
    """MeshCallbacks (trio thread) that re-issue every event on the asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: DiscoveryEvents) -> None:
        self._loop = loop
        self._events = events

    def _post(self, handler: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the node's loop is closed, it is shutting down.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(handler, *args)

    def on_card(self, data: bytes, source: str, peer_id: str) -> None:
        self._post(self._events.on_card, data, source, peer_id)

    def on_peer_connected(self, peer_id: str) -> None:
        self._post(self._events.on_peer_connected, peer_id)

    def on_peer_disconnected(self, peer_id: str, departed: bool) -> None:
        self._post(self._events.on_peer_disconnected, peer_id, departed)


class _MemberEventsToLoop:
    """MemberEvents (trio thread): member changes re-issued on the loop, counts passed on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: MemberEvents) -> None:
        self._loop = loop
        self._events = events

    def on_member(self, member: str, state: State, incarnation: int) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            self._loop.call_soon_threadsafe(self._events.on_member, member, state, incarnation)

    def on_probe(self, outcome: str) -> None:
        self._events.on_probe(outcome)

    def on_message(self, kind: str, direction: str) -> None:
        self._events.on_message(kind, direction)


class Libp2pDiscovery:
    """:class:`~praxis_grpc.discovery.base.Discovery` on a py-libp2p host in a trio thread.

    With ``membership`` it runs SWIM too and is a
    :class:`~praxis_grpc.discovery.members.MemberSource`. With ``reach`` it
    announces, relays and carries peer calls
    (:class:`~praxis_grpc.discovery.streams.StreamCalls`); ``on_addrs`` is then
    called on the loop whenever the advertised addresses change, and
    ``on_reachability`` with the dial-back verdict ("public", "private");
    ``on_holepunch`` is called in the trio thread (it must be thread-safe: a
    counter) with each hole punch outcome ("direct", "failed", "skipped").
    """

    def __init__(
        self,
        options: HostOptions,
        startup_timeout: float = 30.0,
        membership: MembershipOptions | None = None,
        *,
        reach: ReachOptions | None = None,
        on_addrs: Callable[[list[str]], None] | None = None,
        on_reachability: Callable[[str], None] | None = None,
        on_holepunch: Callable[[str], None] | None = None,
    ) -> None:
        self._options = options
        self._membership = membership
        self._reach_options = reach
        self._on_addrs = on_addrs
        self._on_reachability = on_reachability
        self._on_holepunch = on_holepunch
        self._service: StreamService | None = None
        self._reach: HostReach | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._host: MeshHost | None = None
        self._nursery: trio.Nursery | None = None
        self.listen_addrs: list[str] = []

    async def start(self, events: DiscoveryEvents) -> list[str]:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[list[str]] = loop.create_future()

        def report(outcome: list[str] | BaseException) -> None:
            if started.done():
                return
            if isinstance(outcome, BaseException):
                started.set_exception(outcome)
            else:
                started.set_result(outcome)

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            try:
                with trio.CancelScope() as scope:
                    self._cancel = scope
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        self._reach = self._new_reach(loop)
                        self._host = MeshHost(
                            self._options,
                            _ForwardToLoop(loop, events),
                            self._on_loop(loop),
                            self._reach,
                        )
                        addrs = await nursery.start(self._host.run)
                        loop.call_soon_threadsafe(report, list(addrs))
            except BaseException as exc:
                loop.call_soon_threadsafe(report, exc)
                raise

        def run() -> None:
            try:
                trio.run(main)
            except BaseException:
                log.exception("libp2p host stopped with an error")

        self._thread = threading.Thread(target=run, name="libp2p-trio", daemon=True)
        self._thread.start()
        self.listen_addrs = await asyncio.wait_for(started, self._startup_timeout)
        return self.listen_addrs

    def offer_relays(self, addrs: list[str]) -> None:
        """Relays members advertise in their cards (one ``.../p2p/<id>`` address
        each): reserved on once this host finds itself private, when no
        ``p2p.relays`` are configured. Any thread; ignored before start."""
        reach, token = self._reach, self._token
        if reach is not None and token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(reach.offer_relays, list(addrs))

    def add_stream_service(self, service: StreamService) -> None:
        """Answer peer calls with ``service`` (on this loop). Call before :meth:`start`,
        as a gRPC service is added to a server before it starts."""
        self._service = service

    def _new_reach(self, loop: asyncio.AbstractEventLoop) -> HostReach | None:
        options = self._reach_options
        if options is None:
            return None
        on_addrs = self._on_addrs

        def addrs_changed(addrs: list[str]) -> None:
            if on_addrs is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(on_addrs, addrs)

        on_reachability = self._on_reachability

        def reachability_changed(state: str) -> None:
            if on_reachability is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(on_reachability, state)

        answer = self._start_answer(loop) if self._service is not None else None
        # Hole punch outcomes only count (thread-safe): no crossing to the loop.
        return HostReach(options, addrs_changed, answer, reachability_changed, self._on_holepunch)

    def _start_answer(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[bytes, trio.MemorySendChannel[bytes]], Callable[[], None]]:
        """Answers to peer calls: computed on ``loop``, written from the trio thread."""
        service = self._service
        assert service is not None
        token = trio.lowlevel.current_trio_token()

        def start(request: bytes, send: trio.MemorySendChannel[bytes]) -> Callable[[], None]:
            tasks: list[asyncio.Task[None]] = []

            def push(frame: bytes) -> None:
                try:
                    send.send_nowait(frame)
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    send.close()  # a caller that does not read: the call ends broken
                    return
                if is_final(frame):
                    send.close()

            async def answer() -> None:
                try:
                    async for frame in service.answer(request):
                        token.run_sync_soon(push, frame)
                        if is_final(frame):
                            return
                finally:
                    with contextlib.suppress(trio.RunFinishedError):
                        token.run_sync_soon(send.close)

            def begin() -> None:
                task = loop.create_task(answer())
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)
                tasks.append(task)

            def stop() -> None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(partial(_cancel_all, tasks))

            loop.call_soon_threadsafe(begin)
            return stop

        return start

    async def call(self, address: str, request: bytes) -> AsyncIterator[bytes]:
        """See :meth:`praxis_grpc.discovery.streams.StreamCalls.call`."""
        reach, nursery, token = self._reach, self._nursery, self._token
        options = self._reach_options
        if reach is None or nursery is None or token is None or options is None:
            raise StreamCallError("the libp2p host is not running", sent=False)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        scopes: list[trio.CancelScope] = []
        max_bytes = options.max_call_bytes

        def post(item: bytes | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(queue.put_nowait, item)

        async def run() -> None:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                try:
                    # Shielded: negotiating a stream writes to the connection, and a
                    # write cancelled halfway corrupts it (see _peer_stream.write_frame).
                    with trio.CancelScope(shield=True):
                        stream = await reach.open(address)
                    await make_call(stream, request, max_bytes, post)
                except StreamCallError as exc:
                    post(exc)
                except BaseException:
                    post(StreamCallError("the libp2p host stopped during the call", sent=True))
                    raise

        try:
            token.run_sync_soon(lambda: nursery.start_soon(run))
        except trio.RunFinishedError:
            raise StreamCallError("the libp2p host stopped", sent=False) from None
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if is_final(item):
                    return
        finally:
            self._soon(partial(_cancel_all, scopes))

    def set_local_card(self, data: bytes) -> None:
        host = self._host
        if host is not None:
            self._soon(lambda: host.set_local_card(data))

    def publish(self, data: bytes) -> None:
        host, nursery = self._host, self._nursery
        if host is not None and nursery is not None:
            self._soon(lambda: nursery.start_soon(host.publish, data))

    async def peers(self) -> list[PeerStatus]:
        host = self._host
        if host is None:
            return []
        return await self._call(host.peers)

    async def members(self) -> list[MemberStatus]:
        host = self._host
        if host is None:
            return []
        return await self._call(host.members)

    def _on_loop(self, loop: asyncio.AbstractEventLoop) -> MembershipOptions | None:
        options = self._membership
        if options is None:
            return None
        return replace(options, events=_MemberEventsToLoop(loop, options.events))

    async def aclose(self) -> None:
        scope, thread = self._cancel, self._thread
        if scope is None or thread is None:
            return
        self._soon(scope.cancel)
        for task in list(self._answers):
            task.cancel()
        await asyncio.to_thread(thread.join, 30)
        self._cancel = self._thread = self._host = self._nursery = None

    def _soon(self, fn: Callable[[], object]) -> None:
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):  # the host already stopped
            token.run_sync_soon(fn)

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the trio thread and return its result on this loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:  # delivered to the awaiting side
                loop.call_soon_threadsafe(_settle_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result)

        self._soon(run)
        return await future


def _cancel_all(cancellables: list[trio.CancelScope] | list[asyncio.Task[None]]) -> None:
    for each in cancellables:
        each.cancel()


def _settle(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _settle_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
