"""Dialing the peers that discovery learns about, bounded and deduplicated, and trimming.

A node keeps a bounded degree, as libp2p's connection manager does with low
and high water marks: discovery dials only while the host has fewer than
``target_peers`` peers, and :class:`Trimmer` closes the newest unprotected
connections once there are more than ``max_peers``, back down to the target.
Before closing, the trimmer tells the peer (``/praxis/trim/1.0.0``) so that
neither side mistakes the closed connection for a departure.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Container

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from praxis_grpc.discovery._closing import close_peer
from praxis_grpc.discovery._membership import Membership
from praxis_grpc.discovery._wire import TRIM_PROTOCOL, abort, without_p2p

log = logging.getLogger("praxis_grpc.discovery")

ADDR_TTL = 600
"""Seconds a learned address stays in the peerstore (identify refreshes live peers)."""

_MIN_BACKOFF = 0.5
_MAX_BACKOFF = 30.0
_POLL = 1.0


class Dialer:
    """Connects to peers learned from any discovery method.

    :meth:`dial_soon` never blocks: it starts a background dial unless the
    peer is ourselves, already connected, already being dialed, backing off
    after a failure (2 s doubling to 60 s) or a trim, or the host already has
    ``target_peers`` peers, counting the dials in flight. At most
    ``concurrency`` dials run at once, each bounded by ``timeout``. Peers are
    ``membership``'s neighbours: dialing a peer we hold only a transient
    (probe) connection to promotes that connection instead. Trio thread only;
    :meth:`bind` must be called before :meth:`dial_soon`.
    """

    def __init__(
        self,
        host: IHost,
        membership: Membership,
        *,
        target_peers: int,
        timeout: float,
        concurrency: int = 8,
    ) -> None:
        self._host = host
        self._membership = membership
        self._target = target_peers
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(concurrency)
        self._inflight: set[ID] = set()
        self._failures: dict[ID, int] = {}
        self._retry_at: dict[ID, float] = {}
        self._trimmed_until: dict[ID, float] = {}
        self._nursery: trio.Nursery | None = None

    def bind(self, nursery: trio.Nursery) -> None:
        """Run background dials in ``nursery``."""
        self._nursery = nursery

    def is_connected(self, peer_id: ID) -> bool:
        """Whether ``peer_id`` is a neighbour (a transient connection does not count)."""
        return self._membership.is_neighbour(peer_id)

    def neighbours(self) -> list[ID]:
        """The peers counted in the degree."""
        return list(self._membership.peers())

    def below_target(self) -> bool:
        """Whether the host has fewer than ``target_peers`` neighbours (discovery should dial)."""
        return len(self._membership.peers()) < self._target

    def back_off(self, peer_id: ID, seconds: float) -> None:
        """Do not :meth:`dial_soon` ``peer_id`` for ``seconds`` (it trimmed us)."""
        self._retry_at[peer_id] = self._trimmed_until[peer_id] = time.monotonic() + seconds

    def trimmed_us(self, peer_id: ID) -> bool:
        """Whether ``peer_id`` trimmed our connection less than the back-off ago."""
        return time.monotonic() < self._trimmed_until.get(peer_id, 0.0)

    def learn(self, info: PeerInfo) -> None:
        """Add ``info``'s addresses (without any ``/p2p`` part) to the peerstore."""
        if info.peer_id != self._host.get_id() and info.addrs:
            addrs = [without_p2p(addr) for addr in info.addrs]
            self._host.get_peerstore().add_addrs(info.peer_id, addrs, ADDR_TTL)

    def dial_soon(self, info: PeerInfo, reason: str) -> None:
        """Remember ``info`` and dial it in the background if it is worth dialing."""
        self.learn(info)
        peer_id = info.peer_id
        if (
            self._nursery is None
            or peer_id == self._host.get_id()
            or peer_id in self._inflight
            or self.is_connected(peer_id)
            or time.monotonic() < self._retry_at.get(peer_id, 0.0)
            or len(self._membership.peers()) + len(self._inflight) >= self._target
        ):
            return
        self._inflight.add(peer_id)
        self._nursery.start_soon(self._dial_tracked, peer_id, reason)

    async def dial(self, info: PeerInfo, reason: str) -> bool:
        """Dial ``info`` now, ignoring backoff and the negative dial cache; True if connected.

        For explicitly configured peers (bootstrap, rendezvous points), which
        must be retried as soon as they come back.
        """
        self.learn(info)
        unblock = getattr(self._host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(info.peer_id)  # else a failure blocks every dial to it for 60 s
        self._retry_at.pop(info.peer_id, None)
        return await self._connect(info.peer_id, reason)

    async def _dial_tracked(self, peer_id: ID, reason: str) -> None:
        try:
            await self._connect(peer_id, reason)
        finally:
            self._inflight.discard(peer_id)

    async def _connect(self, peer_id: ID, reason: str) -> bool:
        if self._membership.is_transient(peer_id):
            self._membership.promote(peer_id)  # a probe connection becomes a neighbour
        if self.is_connected(peer_id):
            return True
        try:
            addrs = self._host.get_peerstore().addrs(peer_id)
            async with self._limiter:
                with trio.fail_after(self._timeout):
                    await self._host.connect(PeerInfo(peer_id, addrs))
        except Exception as exc:
            failures = self._failures.get(peer_id, 0) + 1
            self._failures[peer_id] = failures
            self._retry_at[peer_id] = time.monotonic() + min(60.0, 2.0**failures)
            log.debug("dialing %s (%s) failed: %r", peer_id, reason, exc)
            return False
        self._failures.pop(peer_id, None)
        self._retry_at.pop(peer_id, None)
        self._membership.promote(peer_id)  # in case a probe's dial won the race
        log.info("connected to %s (%s)", peer_id, reason)
        return True


async def keep_connected(dialer: Dialer, info: PeerInfo, reason: str) -> None:
    """Stay connected to ``info`` while below the target degree: dial until it answers,
    redial whenever it is lost (unless the host has enough other peers, or it trimmed
    us and we have another neighbour: it is full, discovery finds others).

    Retries back off from 0.5 s, doubling (with jitter) up to 30 s, and start
    over at 0.5 s after every success. Runs until cancelled.
    """
    delay = _MIN_BACKOFF
    while True:
        connected = dialer.is_connected(info.peer_id)
        full = dialer.trimmed_us(info.peer_id) and bool(dialer.neighbours())
        if connected or not dialer.below_target() or full or await dialer.dial(info, reason):
            delay = _MIN_BACKOFF
            await trio.sleep(_POLL)
            continue
        await trio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, _MAX_BACKOFF)


TRIM_BACKOFF = 30.0
"""Seconds a peer that trimmed us is not dialed by discovery."""
_TRIM_NOTICE_TTL = 10.0
_TRIM_POLL = 1.0


class Trimmer:
    """Keeps the host's degree bounded and remembers which disconnects were trims.

    Trio thread only. ``protected`` peers (bootstrap, rendezvous points,
    relays; the set may change) are never trimmed; nor is a peer connected
    for less than ``grace`` seconds.
    """

    def __init__(
        self,
        host: IHost,
        membership: Membership,
        dialer: Dialer,
        *,
        target_peers: int,
        max_peers: int,
        grace: float,
        timeout: float,
        protected: Container[ID],
    ) -> None:
        self._host = host
        self._membership = membership
        self._dialer = dialer
        self._target = target_peers
        self._max = max_peers
        self._grace = grace
        self._timeout = timeout
        self._protected = protected
        self._trimmed: dict[ID, float] = {}  # by us or, as it told us, by the peer

    def was_trimmed(self, peer_id: ID) -> bool:
        """Whether the last connection to ``peer_id`` closed because of a trim (consumes it)."""
        at = self._trimmed.pop(peer_id, None)
        return at is not None and time.monotonic() - at < _TRIM_NOTICE_TTL

    async def serve_notice(self, stream: INetStream) -> None:
        """Handle ``/praxis/trim/1.0.0``: the peer is about to close our connection."""
        peer_id = stream.muxed_conn.peer_id
        self._trimmed[peer_id] = time.monotonic()
        self._dialer.back_off(peer_id, TRIM_BACKOFF)
        try:
            with trio.fail_after(self._timeout):
                await stream.write(b"\x01")
                await stream.close()
        except Exception as exc:
            log.debug("answering a trim notice from %s failed: %r", peer_id, exc)
            await abort(stream)

    async def run(self) -> None:
        """Trim whenever there are more than ``max_peers`` peers; runs until cancelled."""
        while True:
            await trio.sleep(_TRIM_POLL)
            for peer_id in self.excess():
                await self._trim(peer_id)

    def excess(self) -> list[ID]:
        """The peers to trim now: the newest unprotected ones past the grace period."""
        peers = self._membership.peers()
        if len(peers) <= self._max:
            return []
        now = time.time()
        candidates = sorted(
            (
                (state.connected_at, peer_id)
                for peer_id, state in peers.items()
                if peer_id not in self._protected and now - state.connected_at >= self._grace
            ),
            key=lambda item: item[0],
            reverse=True,
        )
        return [peer_id for _, peer_id in candidates[: len(peers) - self._target]]

    async def _trim(self, peer_id: ID) -> None:
        self._trimmed[peer_id] = time.monotonic()
        try:
            with trio.fail_after(self._timeout):
                stream = await self._host.new_stream(peer_id, [TRIM_PROTOCOL])
                try:
                    await stream.read(1)
                finally:
                    await abort(stream)
        except Exception as exc:
            log.debug("trim notice to %s failed: %r", peer_id, exc)
        log.info("trimming the connection to %s (degree above %d)", peer_id, self._max)
        await close_peer(self._host.get_network(), peer_id, self._timeout)
