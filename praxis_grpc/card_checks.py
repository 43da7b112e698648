"""What a received card must satisfy besides its signature. Pure: no I/O.

A signature proves who wrote a card, not that it is honest, current, or
sent by someone entitled to send it. :class:`CardRules` checks what can be
verified; each failure is a :class:`~praxis_grpc.card_codec.CardRejected`
whose reason feeds ``praxis_cards_rejected_total{reason}``:

- ``not_sender``: a card or status sent as the sender's own (the top-level
  card of an exchange, any gossip message, whose origin pubsub signs) is
  another agent's. Other agents' cards travel only as relayed entries.
- ``expired``: the newest issue time the message proves (the card's, or that
  of a verified status of the same incarnation sent with it) is older than
  the TTL: a stopped agent's last card, replayed, is not listed again.
- ``replayed``: the agent's entry was removed, and the message is no newer
  than what was known when it was (a replay within the TTL).
- ``foreign_address``: a libp2p endpoint does not end in ``/p2p/<agent id>``.
- ``too_many_slots``: more task slots (capacity) than ``max_slots``.
- ``endpoint_taken``: a gRPC or peer endpoint another known agent already
  advertises: a card cannot point at a member's server to be credited with
  (and answer for) the tasks that member runs. First come, first kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from praxis_grpc.card_codec import CardRejected
from praxis_grpc.cards import AgentCard, AgentStatus

__all__ = ["CardRules", "Evidence"]

_ADDRESSED = ("grpc", "peer")


@dataclass(frozen=True)
class Evidence:
    """The newest (incarnation, version) and issue time a message proves for its agent."""

    freshness: tuple[int, int]
    issued_at: datetime


@dataclass(frozen=True)
class CardRules:
    """Checks on received cards and statuses (``cards.ttl``, ``cards.max_slots``)."""

    ttl: float
    max_slots: int

    def check_card(
        self,
        card: AgentCard,
        *,
        sender: str,
        relayed: bool,
        evidence: Evidence,
        now: datetime,
        ttl_scale: float = 1.0,
        removed_at: tuple[int, int] | None = None,
        others: Iterable[AgentCard] = (),
    ) -> None:
        """Check ``card`` from ``sender`` (its own unless ``relayed``).

        ``removed_at`` is the freshness its agent had when its entry was
        removed (None if it is listed or was never seen); ``others`` the
        other agents' known cards.

        Raises:
            CardRejected: the first check that fails.
        """
        self._check_sender(card.agent_id, sender, relayed)
        self._check_issued(evidence.issued_at, now, ttl_scale)
        if removed_at is not None and evidence.freshness <= removed_at:
            raise CardRejected("replayed", f"{card.agent_id}: no newer than its removed card")
        suffix = f"/p2p/{card.agent_id}"
        for endpoint in card.endpoints:
            if endpoint.transport == "libp2p" and not endpoint.address.endswith(suffix):
                raise CardRejected("foreign_address", f"{endpoint.address} is not {card.agent_id}")
        if card.load.capacity > self.max_slots:
            raise CardRejected(
                "too_many_slots", f"capacity {card.load.capacity} over {self.max_slots}"
            )
        mine = _addresses(card)
        for other in others:
            if other.agent_id != card.agent_id and mine & _addresses(other):
                raise CardRejected(
                    "endpoint_taken",
                    f"{card.agent_id} advertises {sorted(mine & _addresses(other))}, "
                    f"already {other.agent_id}'s",
                )

    def check_status(
        self, status: AgentStatus, *, sender: str, relayed: bool, now: datetime, ttl_scale: float
    ) -> None:
        """Check a status from ``sender`` (same rules as a card's sender, time and slots).

        Raises:
            CardRejected: the first check that fails.
        """
        self._check_sender(status.agent_id, sender, relayed)
        self._check_issued(status.updated_at, now, ttl_scale)
        if status.load.capacity > self.max_slots:
            raise CardRejected(
                "too_many_slots", f"capacity {status.load.capacity} over {self.max_slots}"
            )

    @staticmethod
    def _check_sender(agent_id: str, sender: str, relayed: bool) -> None:
        if not relayed and agent_id != sender:
            raise CardRejected("not_sender", f"{sender} sent {agent_id}'s card as its own")

    def _check_issued(self, issued_at: datetime, now: datetime, ttl_scale: float) -> None:
        age = (now - issued_at).total_seconds()
        if age > self.ttl * ttl_scale:
            raise CardRejected("expired", f"issued {age:.1f} s ago, over the TTL")


def _addresses(card: AgentCard) -> set[str]:
    return {e.address for e in card.endpoints if e.transport in _ADDRESSED}
