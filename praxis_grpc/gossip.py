"""Card gossip: spread this node's signed card and status, accept peers', forget the departed.

Sits between the card directory (what we know) and a
:class:`~praxis_grpc.discovery.base.Discovery` (how bytes move). Runs on the
node's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from praxis_grpc._gen.praxis.v1 import mesh_pb2
from praxis_grpc.card_certs import CardCertificates
from praxis_grpc.card_checks import CardRules, Evidence
from praxis_grpc.card_codec import (
    CardCache,
    CardRejected,
    MeshMessage,
    SignedPart,
    encode_signed,
    read_status,
    split_message,
    verify_status,
)
from praxis_grpc.cards import AgentCard, AgentStatus, timer_scale
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery
from praxis_grpc.identity import Identity
from praxis_grpc.metrics import Metrics

log = logging.getLogger(__name__)
_CHURN = frozenset({"replayed", "expired"})  # rejections counted, logged at DEBUG


class CardGossip:
    """Implements :class:`~praxis_grpc.discovery.base.DiscoveryEvents` for a node.

    - The local card (identity, endpoints, tools, tags) is published when it
      changes and sent to every peer on connect (by discovery), together with
      the last published status and the other agents' signed cards we hold
      (as many as fit in ``max_card_bytes``), so a node learns every card
      from its neighbours even when it is not connected to everyone.
    - The local status (load, drain, role) is published alone when
      :meth:`announce` finds it moved (:meth:`AgentStatus.moved` by
      ``load_threshold``), and by :meth:`refresh` at a slow interval, which
      keeps peers' TTLs fresh. A refresh sends the whole card instead when
      the card was last sent ``card_interval`` ago or more: a peer that
      missed it (gossip sent before the peer's subscription took effect, as
      after a restart, then the card from the exchange expired) drops every
      status of an agent whose card it lacks, and would otherwise lack it
      until the next connection.
    - A peer card is verified once (:class:`CardCache`); a peer status is
      verified only if it is newer than what is known of its agent, otherwise
      dropped unread. The directory decides what is newer.
    - With ``rules``, a card or status must also pass
      :class:`~praxis_grpc.card_checks.CardRules` (sender, issue time,
      replay, addresses, slots, endpoints); a failure is counted by reason.
    - With ``certificates`` (in a cluster), this node's card goes out with its
      certificate, every held card is relayed with its agent's, and every
      peer card, own or relayed, must carry one naming its agent
      (:class:`~praxis_grpc.card_certs.CardCertificates`); statuses are
      merged only for agents whose card was accepted, so need none, and are
      refused once that card's certificate expired (``untrusted_certificate``).
    - When the last connection to a peer closes and discovery says it
      departed, its card is removed after ``disconnect_grace`` unless it
      reconnects; a peer that stays silent ages out by the directory's TTL.
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
        load_threshold: float = 0.1,
        card_interval: float = 5.0,
        cache: CardCache | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rules: CardRules | None = None,
        certificates: CardCertificates | None = None,
    ) -> None:
        self._directory = directory
        self._identity = identity
        self._discovery = discovery
        self._metrics = metrics
        self._grace = disconnect_grace
        self._max_card_bytes = max_card_bytes
        self._threshold = load_threshold
        self._cache = cache if cache is not None else CardCache()
        self._clock = clock
        self._rules = rules
        self._certificates = certificates
        self._own_cert = certificates.own if certificates is not None else b""
        self._connected: set[str] = set()
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._card_sent: tuple[int, int] | None = None
        self._card_interval = card_interval
        self._card_sent_at: datetime | None = None
        self._status_sent: AgentStatus | None = None
        # Each known agent's latest signed card, status and certificate, relayed on connect.
        self._held: dict[str, tuple[SignedPart, SignedPart | None, bytes]] = {}
        self._held_changed = False
        # When each held agent's certificate expires (in a cluster).
        self._cert_expiry: dict[str, datetime] = {}

    async def start(self) -> list[str]:
        """Start discovery; returns our listen multiaddrs."""
        return await self._discovery.start(self)

    async def aclose(self) -> None:
        """Stop discovery and pending removals."""
        for handle in self._removals.values():
            handle.cancel()
        self._removals.clear()
        await self._discovery.aclose()

    def announce(self) -> None:
        """Publish the local card if it changed, else the local status if it moved."""
        card, status = self._directory.local_card, self._directory.local_status
        if card.freshness != self._card_sent:
            self._send(card=True)
        elif self._status_sent is None or self._status_sent.moved(status, self._threshold):
            self._send(card=False)

    def refresh(self) -> None:
        """Publish the local status with a new version, changed or not (keeps TTLs alive).

        Sends the whole card instead if it changed unannounced or was last
        sent ``card_interval`` ago or more, and renews the exchange payload.
        """
        self._directory.refresh_local_status()
        sent_at = self._card_sent_at
        self._send(
            card=self._directory.local_card.freshness != self._card_sent
            or sent_at is None
            or (self._clock() - sent_at).total_seconds() >= self._card_interval
        )

    def _send(self, *, card: bool) -> None:
        local_card, status = self._directory.local_card, self._directory.local_status
        own = encode_signed(
            self._identity, card=local_card, status=status, certificate=self._own_cert
        )
        self._discovery.set_local_card(self._exchange_payload(own))
        self._discovery.publish(own if card else encode_signed(self._identity, status=status))
        self._card_sent, self._status_sent = local_card.freshness, status
        if card:
            self._card_sent_at = self._clock()
            self._count("card", "sent")
        self._count("status", "sent")

    def _exchange_payload(self, own: bytes) -> bytes:
        """``own`` plus the held cards of agents still known, while under ``max_card_bytes``."""
        self._held_changed = False
        relayed: list[bytes] = []
        room = self._max_card_bytes - len(own) - 64
        for agent_id in list(self._held):
            if self._directory.get(agent_id) is None:
                del self._held[agent_id]
                self._cert_expiry.pop(agent_id, None)
                continue
            card, status, certificate = self._held[agent_id]
            data = mesh_pb2.SignedCard(
                card=card.body,
                signature=card.signature,
                status=status.body if status else b"",
                status_signature=status.signature if status else b"",
                certificate=certificate,
            ).SerializeToString()
            room -= len(data) + 4
            if room < 0:
                break
            relayed.append(data)
        if not relayed:
            return own
        message = mesh_pb2.SignedCard.FromString(own)
        message.relayed.extend(relayed)
        return message.SerializeToString()

    def on_card(self, data: bytes, source: str, peer_id: str) -> None:
        try:
            message = split_message(data, self._max_card_bytes)
        except CardRejected as exc:
            self._reject("card", exc, peer_id)
            return
        self._take(message, source, peer_id, relayed=False)
        for relayed in message.relayed if source == "exchange" else ():
            try:
                inner = split_message(relayed, self._max_card_bytes)
            except CardRejected as exc:
                self._reject("card", exc, peer_id)
                continue
            inner = MeshMessage(inner.card, inner.status, certificate=inner.certificate)
            self._take(inner, source, peer_id, relayed=True)
        if self._held_changed and self._card_sent is not None:
            self._send_exchange_only()

    def _send_exchange_only(self) -> None:
        own = encode_signed(
            self._identity,
            card=self._directory.local_card,
            status=self._status_sent,
            certificate=self._own_cert,
        )
        self._discovery.set_local_card(self._exchange_payload(own))

    def _take(self, message: MeshMessage, source: str, peer_id: str, *, relayed: bool) -> None:
        if message.card is not None:
            self._take_card(message.card, message, source, peer_id, relayed)
        if message.status is not None:
            self._take_status(message.status, source, peer_id, relayed)

    def _take_card(
        self, part: SignedPart, message: MeshMessage, source: str, peer_id: str, relayed: bool
    ) -> None:
        status = message.status
        try:
            card = self._cache.verify(part)
            if card.agent_id == self._identity.agent_id:
                return
            expires = None
            if self._certificates is not None:
                expires = self._certificates.check(
                    card.agent_id, message.certificate, self._clock()
                )
            if self._rules is not None:
                self._check_card(self._rules, card, status, peer_id, relayed)
        except CardRejected as exc:
            self._reject("card", exc, peer_id)
            return
        self._count("card", "received")
        age = (self._clock() - card.updated_at).total_seconds()
        self._metrics.card_age_seconds.observe(max(age, 0.0))
        if self._directory.merge(card) is not None:
            self._metrics.card_updates_total.labels(source).inc()
            same = status is not None and _status_of(status, card) is not None
            self._held[card.agent_id] = (part, status if same else None, message.certificate)
            if expires is not None:
                self._cert_expiry[card.agent_id] = expires
            self._held_changed = True

    def _check_card(
        self,
        rules: CardRules,
        card: AgentCard,
        status: SignedPart | None,
        peer_id: str,
        relayed: bool,
    ) -> None:
        known = self._directory.get(card.agent_id)
        changed = known is None or known.endpoints != card.endpoints
        rules.check_card(
            card,
            sender=peer_id,
            relayed=relayed,
            evidence=_evidence(card, status),
            now=self._clock(),
            ttl_scale=timer_scale(len(self._directory)),
            removed_at=self._directory.removed_at(card.agent_id),
            others=self._directory.cards() if changed else (),
        )

    def _take_status(self, part: SignedPart, source: str, peer_id: str, relayed: bool) -> None:
        try:
            status = read_status(part)
            if status.agent_id == self._identity.agent_id:
                return
            expires = self._cert_expiry.get(status.agent_id)
            if expires is not None and self._clock() > expires:
                detail = f"{status.agent_id}'s certificate expired"
                raise CardRejected("untrusted_certificate", detail)
            if self._rules is not None:
                self._rules.check_status(
                    status,
                    sender=peer_id,
                    relayed=relayed,
                    now=self._clock(),
                    ttl_scale=timer_scale(len(self._directory)),
                )
            if not self._directory.wants_status(status):
                self._count("status", "dropped")  # stale, a duplicate, or ahead of its card
                return
            verify_status(part, status)
        except CardRejected as exc:
            self._reject("status", exc, peer_id)
            return
        self._count("status", "received")
        held = self._held.get(status.agent_id)
        if held is not None:
            self._held[status.agent_id] = (held[0], part, held[2])
        if self._directory.merge_status(status) is not None:
            self._metrics.card_updates_total.labels(source).inc()

    def _reject(self, kind: str, exc: CardRejected, peer_id: str) -> None:
        self._metrics.cards_rejected_total.labels(exc.reason).inc()
        self._count(kind, "dropped")
        # A dead or departed member's last card, still relayed by the others, is
        # ordinary churn (hundreds of lines when a mesh stops); the rest is not.
        level = logging.DEBUG if exc.reason in _CHURN else logging.WARNING
        log.log(level, "dropped a %s from %s: %s", kind, peer_id, exc)

    def _count(self, kind: str, direction: str) -> None:
        self._metrics.gossip_messages_total.labels(kind, direction).inc()

    def on_peer_connected(self, peer_id: str) -> None:
        self._connected.add(peer_id)
        pending = self._removals.pop(peer_id, None)
        if pending is not None:
            pending.cancel()
        self._count_connections()

    def on_peer_disconnected(self, peer_id: str, departed: bool = True) -> None:
        self._connected.discard(peer_id)
        self._count_connections()
        if departed and peer_id not in self._removals:
            loop = asyncio.get_running_loop()
            self._removals[peer_id] = loop.call_later(self._grace, self._forget, peer_id)

    def _count_connections(self) -> None:
        self._metrics.p2p_peers_connected.set(len(self._connected))
        self._metrics.p2p_connections.set(len(self._connected))

    def _forget(self, peer_id: str) -> None:
        self._removals.pop(peer_id, None)
        if peer_id not in self._connected and self._directory.remove(peer_id) is not None:
            log.info("peer %s left; its card was removed", peer_id)


def _status_of(part: SignedPart, card: AgentCard) -> AgentStatus | None:
    """The status in ``part`` if it is ``card``'s agent's, of its incarnation, newer
    than the card, and correctly signed; else None."""
    try:
        status = read_status(part)
        if (
            status.agent_id != card.agent_id
            or status.incarnation != card.incarnation
            or status.freshness <= card.freshness
        ):
            return None
        verify_status(part, status)
    except CardRejected:
        return None
    return status


def _evidence(card: AgentCard, status: SignedPart | None) -> Evidence:
    """How fresh a card message is: its card, or the newer signed status sent with it."""
    newer = _status_of(status, card) if status is not None else None
    if newer is not None:
        return Evidence(newer.freshness, newer.updated_at)
    return Evidence(card.freshness, card.updated_at)
