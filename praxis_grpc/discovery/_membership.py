"""Who is connected: one event per peer transition, kept honest by pings.

libp2p reports every *connection*; a peer may hold several (simultaneous
dials, reconnects). :class:`Membership` reduces that to one "connected" when
the first connection to a peer opens and one "disconnected" when the last one
closes. :class:`Liveness` pings every connected peer and closes the
connections of a peer that stops answering, because a peer killed without a
FIN/RST (power loss, partition) can otherwise look connected for minutes.

Not every connection makes a *neighbour*. A connection counts towards the
degree (and is trimmed, greeted, reported) once cards were exchanged on it:
we dialed it for discovery (and greet it), or the peer asked for our card or
peers. Until then it is *transient*: an inbound connection nobody greeted yet,
or one SWIM dialed only to probe a member that is not a neighbour, which the
prober closes when its probes go idle (libp2p's connection manager keeps such
"limited" connections out of its count too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction

from praxis_grpc.discovery._closing import close_peer
from praxis_grpc.discovery._notifee import QuietNotifee
from praxis_grpc.discovery._wire import abort

log = logging.getLogger("praxis_grpc.discovery")

PeerEvent = Callable[[ID], None]


@dataclass
class PeerState:
    """What we know about one connected peer."""

    connected_at: float
    direction: str
    rtt: float | None = None


def call_safely(fn: Callable[..., None], *args: object) -> None:
    """Run a user callback; an exception is logged, never propagated into libp2p."""
    try:
        fn(*args)
    except Exception:
        log.exception("discovery callback %s raised", getattr(fn, "__name__", fn))


class Membership(QuietNotifee):
    """A libp2p notifee that emits one event per peer transition.

    Every method runs in the trio thread. libp2p awaits notifees inline while
    it registers or tears down a connection, so nothing here blocks: events
    go to ``on_connected`` / ``on_disconnected``, which must return quickly.
    After :meth:`mute` no more events are emitted (used during shutdown).
    Events are about neighbours; a transient connection only emits
    ``on_transient`` when it opens and nothing when it closes.
    """

    def __init__(
        self,
        network: INetwork,
        on_connected: PeerEvent,
        on_disconnected: PeerEvent,
        on_transient: PeerEvent = lambda peer_id: None,
    ) -> None:
        self._network = network
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_transient = on_transient
        self._peers: dict[ID, PeerState] = {}
        self._transient: dict[ID, PeerState] = {}
        self._probing: set[ID] = set()
        self._muted = False

    def mute(self) -> None:
        """Stop emitting events; the host is shutting down."""
        self._muted = True

    @property
    def muted(self) -> bool:
        """Whether :meth:`mute` was called."""
        return self._muted

    def peers(self) -> dict[ID, PeerState]:
        """A snapshot of the neighbours (transient connections left out)."""
        return dict(self._peers)

    def is_neighbour(self, peer_id: ID) -> bool:
        """Whether ``peer_id`` is a neighbour (counted in the degree)."""
        return peer_id in self._peers

    def is_transient(self, peer_id: ID) -> bool:
        """Whether the only connection to ``peer_id`` is a transient one."""
        return peer_id in self._transient

    def expect_probe(self, peer_id: ID) -> None:
        """A SWIM probe is about to dial ``peer_id``: that connection is transient."""
        if peer_id not in self._peers:
            self._probing.add(peer_id)

    def probe_failed(self, peer_id: ID) -> None:
        """The probe dial to ``peer_id`` failed: a later dial is not a probe."""
        if peer_id not in self._transient:
            self._probing.discard(peer_id)

    def probed(self, peer_id: ID) -> bool:
        """Whether the transient connection to ``peer_id`` was dialed by our probe."""
        return peer_id in self._transient and peer_id in self._probing

    def promote(self, peer_id: ID) -> None:
        """Cards were exchanged with ``peer_id``: its transient connection is a neighbour."""
        state = self._transient.pop(peer_id, None)
        self._probing.discard(peer_id)
        if state is not None:
            self.mark_connected(peer_id, state.direction)

    def mark_connected(self, peer_id: ID, direction: str = "unknown") -> None:
        """Record that ``peer_id`` is reachable; emits "connected" if it was not."""
        if peer_id in self._peers or self._muted:
            return
        self._transient.pop(peer_id, None)
        self._probing.discard(peer_id)
        self._peers[peer_id] = PeerState(connected_at=time.time(), direction=direction)
        call_safely(self._on_connected, peer_id)

    def mark_lost(self, peer_id: ID) -> None:
        """Record that ``peer_id`` is gone; emits "disconnected" if it was a neighbour."""
        self._transient.pop(peer_id, None)
        self._probing.discard(peer_id)
        if self._peers.pop(peer_id, None) is None or self._muted:
            return
        call_safely(self._on_disconnected, peer_id)

    def record_rtt(self, peer_id: ID, rtt: float) -> None:
        """A ping answered in ``rtt`` seconds (which also proves the peer is there)."""
        if peer_id not in self._transient:
            self.mark_connected(peer_id)
        state = self._peers.get(peer_id) or self._transient.get(peer_id)
        if state is not None:
            state.rtt = rtt

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        if peer_id in self._peers or peer_id in self._transient or self._muted:
            return
        direction = getattr(conn, "direction", Direction.UNKNOWN)
        if direction == Direction.OUTBOUND and peer_id not in self._probing:
            self.mark_connected(peer_id, str(direction))
            return
        self._transient[peer_id] = PeerState(connected_at=time.time(), direction=str(direction))
        call_safely(self._on_transient, peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        if any(not other.is_closed for other in network.get_connections(peer_id)):
            return  # another connection to the same peer is still open
        self.mark_lost(peer_id)


class Liveness:
    """Pings every connected peer each ``interval`` over ``/ipfs/ping/1.0.0``.

    One ping stream is kept open per peer. A peer that misses ``max_failures``
    pings in a row has its connections closed and is reported lost at once,
    even if closing hangs on a dead socket.
    """

    def __init__(
        self,
        host: IHost,
        membership: Membership,
        interval: float,
        timeout: float,
        max_failures: int = 2,
    ) -> None:
        self._host = host
        self._membership = membership
        self._interval = interval
        self._timeout = timeout
        self._max_failures = max_failures
        self._streams: dict[ID, INetStream] = {}
        self._failures: dict[ID, int] = {}

    async def run(self) -> None:
        """Ping forever; runs until cancelled."""
        try:
            while True:
                connected = list(self._host.get_connected_peers())
                async with trio.open_nursery() as nursery:
                    for peer_id in connected:
                        nursery.start_soon(self._probe, peer_id)
                for gone in set(self._streams) - set(self._host.get_connected_peers()):
                    self._streams.pop(gone, None)
                    self._failures.pop(gone, None)
                await trio.sleep(self._interval)
        finally:
            for stream in self._streams.values():
                await abort(stream)
            self._streams.clear()

    async def _probe(self, peer_id: ID) -> None:
        try:
            with trio.fail_after(self._timeout):
                stream = self._streams.get(peer_id)
                if stream is None:
                    stream = await self._host.new_stream(peer_id, [PING_PROTOCOL])
                    self._streams[peer_id] = stream
                started = time.monotonic()
                await perform_ping_roundtrip(stream)
                rtt = time.monotonic() - started
        except Exception as exc:
            await self._missed(peer_id, exc)
            return
        self._failures.pop(peer_id, None)
        self._membership.record_rtt(peer_id, rtt)

    async def _missed(self, peer_id: ID, exc: Exception) -> None:
        stream = self._streams.pop(peer_id, None)
        if stream is not None:
            await abort(stream)
        failures = self._failures.get(peer_id, 0) + 1
        self._failures[peer_id] = failures
        log.debug("ping to %s failed (%d in a row): %r", peer_id, failures, exc)
        if failures < self._max_failures:
            return
        self._failures.pop(peer_id, None)
        log.warning("peer %s missed %d pings; closing its connections", peer_id, failures)
        await close_peer(self._host.get_network(), peer_id, self._timeout)
        self._membership.mark_lost(peer_id)
