"""Card gossip: spread this node's signed card, accept peers' cards, forget the departed.

Sits between the card directory (what we know) and a
:class:`~praxis_grpc.discovery.base.Discovery` (how bytes move). Runs on the
node's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from praxis_grpc.card_codec import CardRejected, decode_signed_card, encode_signed_card
from praxis_grpc.cards import AgentCard
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery
from praxis_grpc.identity import Identity
from praxis_grpc.metrics import Metrics

log = logging.getLogger(__name__)


class CardGossip:
    """Implements :class:`~praxis_grpc.discovery.base.DiscoveryEvents` for a node.

    - The local card is sent to every peer on connect (by discovery) and
      published at once when it changes, and again every heartbeat so peers'
      TTLs stay fresh and load stays current.
    - A peer card is accepted only if its signature verifies and it is newer
      than what is known (the directory decides).
    - When the last connection to a peer closes, its card is removed after
      ``disconnect_grace`` unless the peer reconnects; a peer that stays
      silent without disconnecting ages out by the directory's TTL.
    """

    def __init__(
        self,
        *,
        directory: CardDirectory,
        identity: Identity,
        discovery: Discovery,
        metrics: Metrics,
        disconnect_grace: float,
        max_card_bytes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._directory = directory
        self._identity = identity
        self._discovery = discovery
        self._metrics = metrics
        self._grace = disconnect_grace
        self._max_card_bytes = max_card_bytes
        self._clock = clock
        self._connected: set[str] = set()
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._announced: tuple[int, int] | None = None

    async def start(self) -> list[str]:
        """Start discovery; returns our listen multiaddrs."""
        return await self._discovery.start(self)

    async def aclose(self) -> None:
        """Stop discovery and pending removals."""
        for handle in self._removals.values():
            handle.cancel()
        self._removals.clear()
        await self._discovery.aclose()

    def announce(self, card: AgentCard, force: bool = False) -> None:
        """Publish ``card`` (our own) if it is new, or always with ``force`` (heartbeat)."""
        if not force and card.freshness == self._announced:
            return
        data = encode_signed_card(card, self._identity)
        self._discovery.set_local_card(data)
        self._discovery.publish(data)
        self._announced = card.freshness

    def on_card(self, data: bytes, source: str, peer_id: str) -> None:
        try:
            card = decode_signed_card(data, self._max_card_bytes)
        except CardRejected as exc:
            self._metrics.cards_rejected_total.labels(exc.reason).inc()
            log.warning("dropped a card from %s: %s", peer_id, exc)
            return
        if card.agent_id == self._identity.agent_id:
            return
        age = (self._clock() - card.updated_at).total_seconds()
        self._metrics.card_age_seconds.observe(max(age, 0.0))
        if self._directory.merge(card) is not None:
            self._metrics.card_updates_total.labels(source).inc()

    def on_peer_connected(self, peer_id: str) -> None:
        self._connected.add(peer_id)
        pending = self._removals.pop(peer_id, None)
        if pending is not None:
            pending.cancel()
        self._metrics.p2p_peers_connected.set(len(self._connected))

    def on_peer_disconnected(self, peer_id: str) -> None:
        self._connected.discard(peer_id)
        self._metrics.p2p_peers_connected.set(len(self._connected))
        if peer_id not in self._removals:
            loop = asyncio.get_running_loop()
            self._removals[peer_id] = loop.call_later(self._grace, self._forget, peer_id)

    def _forget(self, peer_id: str) -> None:
        self._removals.pop(peer_id, None)
        if peer_id not in self._connected and self._directory.remove(peer_id) is not None:
            log.info("peer %s left; its card was removed", peer_id)
