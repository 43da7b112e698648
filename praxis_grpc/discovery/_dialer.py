"""Dialing the peers that discovery learns about, bounded and deduplicated."""

from __future__ import annotations

import logging
import random
import time

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from praxis_grpc.discovery._wire import without_p2p

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
    after a failure (2 s doubling to 60 s), or the host already has
    ``max_peers`` peers. At most ``concurrency`` dials run at once, each
    bounded by ``timeout``. Trio thread only; :meth:`bind` must be called
    before :meth:`dial_soon`.
    """

    def __init__(
        self, host: IHost, *, max_peers: int, timeout: float, concurrency: int = 8
    ) -> None:
        self._host = host
        self._max_peers = max_peers
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(concurrency)
        self._inflight: set[ID] = set()
        self._failures: dict[ID, int] = {}
        self._retry_at: dict[ID, float] = {}
        self._nursery: trio.Nursery | None = None

    def bind(self, nursery: trio.Nursery) -> None:
        """Run background dials in ``nursery``."""
        self._nursery = nursery

    def is_connected(self, peer_id: ID) -> bool:
        """Whether the host has an open connection to ``peer_id``."""
        return bool(self._host.get_network().get_connections(peer_id))

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
            or len(self._host.get_connected_peers()) >= self._max_peers
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
        log.info("connected to %s (%s)", peer_id, reason)
        return True


async def keep_connected(dialer: Dialer, info: PeerInfo, reason: str) -> None:
    """Stay connected to ``info``: dial until it answers, redial whenever it is lost.

    Retries back off from 0.5 s, doubling (with jitter) up to 30 s, and start
    over at 0.5 s after every success. Runs until cancelled.
    """
    delay = _MIN_BACKOFF
    while True:
        if dialer.is_connected(info.peer_id) or await dialer.dial(info, reason):
            delay = _MIN_BACKOFF
            await trio.sleep(_POLL)
            continue
        await trio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, _MAX_BACKOFF)
