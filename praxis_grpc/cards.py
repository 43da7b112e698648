"""Agent cards and the registry of the freshest card per agent. Pure: no I/O.

A card is identified by its agent id. Between two cards of one agent the one
with the higher ``(incarnation, version)`` wins: incarnation increases on every
process start, version on every change within a start. The registry takes the
current time as an argument so expiry is testable without a clock.

What changes often (load, drain, role) also travels alone as an
:class:`AgentStatus`, whose version comes from the same counter as the card's:
the registry keeps the newest card and the newest status of each agent and
shows their merge, so a status moves load without resending the card.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime


@dataclass(frozen=True)
class Endpoint:
    """One way to reach an agent (``transport`` is "grpc" or "libp2p")."""

    transport: str
    address: str


@dataclass(frozen=True)
class ToolInfo:
    """A tool as advertised in a card."""

    name: str
    description: str
    input_schema: dict[str, object]
    idempotent: bool
    default_timeout: float | None = None


@dataclass(frozen=True)
class CardLoad:
    """Load figures published in a card."""

    in_flight: int = 0
    queued: int = 0
    capacity: int = 1
    queue_limit: int = 0


@dataclass(frozen=True)
class AgentCard:
    """What an agent publishes about itself."""

    agent_id: str
    name: str
    praxis_version: str
    role: str
    endpoints: tuple[Endpoint, ...]
    tools: tuple[ToolInfo, ...]
    tags: tuple[str, ...]
    load: CardLoad
    draining: bool
    incarnation: int
    version: int
    updated_at: datetime
    reachability: str = "unknown"
    """Whether other nodes can dial the agent directly, as peers' dial-backs
    found it: "unknown", "public" or "private" (reached through its relays)."""
    relay_service: bool = False
    """The agent serves circuit relay v2: private nodes may reserve on it."""

    @property
    def freshness(self) -> tuple[int, int]:
        """Ordering key: a card with a greater key supersedes one with a smaller key."""
        return (self.incarnation, self.version)

    @property
    def grpc_address(self) -> str:
        """The agent's gRPC endpoint ("host:port"), or "" when it has none."""
        return next((e.address for e in self.endpoints if e.transport == "grpc"), "")

    @property
    def peer_address(self) -> str:
        """Where other nodes call this agent (``PeerClient`` address): its gRPC
        endpoint, unless the card advertises relayed libp2p addresses (the
        agent is behind NAT, so nothing can dial its gRPC port): then its first
        ``/p2p-circuit`` multiaddr, whose calls travel over libp2p. "" when none."""
        relayed = next(
            (
                e.address
                for e in self.endpoints
                if e.transport == "libp2p" and "/p2p-circuit" in e.address
            ),
            "",
        )
        return relayed or self.grpc_address

    @property
    def peer_tls_address(self) -> str:
        """The agent's mutual-TLS peer service ("host:port"; ``cluster`` set),
        or "" in an open mesh, where the peer service shares the gRPC port."""
        return next((e.address for e in self.endpoints if e.transport == "peer"), "")

    def offers(self, tool: str) -> bool:
        """True when the agent advertises ``tool``."""
        return any(t.name == tool for t in self.tools)

    def matches(self, tool: str = "", tags: Iterable[str] = ()) -> bool:
        """True when the card offers ``tool`` (if given) and carries every tag."""
        return (not tool or self.offers(tool)) and set(tags) <= set(self.tags)

    def same_content(self, other: AgentCard) -> bool:
        """True when the cards differ at most in version and timestamp."""
        return replace(self, version=other.version, updated_at=other.updated_at) == other

    def same_identity(self, other: AgentCard) -> bool:
        """True when the cards differ at most in their status part, version and timestamp."""
        return (
            replace(
                self,
                load=other.load,
                draining=other.draining,
                role=other.role,
                version=other.version,
                updated_at=other.updated_at,
            )
            == other
        )

    def with_status(self, status: AgentStatus | None) -> AgentCard:
        """This card as ``status`` updates it (unchanged unless ``status`` is newer)."""
        if status is None or status.freshness <= self.freshness:
            return self
        return replace(
            self,
            load=status.load,
            draining=status.draining,
            role=status.role,
            version=status.version,
            updated_at=status.updated_at,
        )


@dataclass(frozen=True)
class AgentStatus:
    """The part of an agent's card that changes often, published on its own."""

    agent_id: str
    incarnation: int
    version: int
    load: CardLoad
    draining: bool
    role: str
    updated_at: datetime

    @classmethod
    def of(cls, card: AgentCard) -> AgentStatus:
        """The status part of ``card`` (same incarnation, version and timestamp)."""
        return cls(
            card.agent_id,
            card.incarnation,
            card.version,
            card.load,
            card.draining,
            card.role,
            card.updated_at,
        )

    @property
    def freshness(self) -> tuple[int, int]:
        """Ordering key, comparable with :attr:`AgentCard.freshness` of the same agent."""
        return (self.incarnation, self.version)

    def same_state(self, other: AgentStatus) -> bool:
        """True when load, drain and role are equal."""
        return (self.load, self.draining, self.role) == (other.load, other.draining, other.role)

    def moved(self, other: AgentStatus, threshold: float) -> bool:
        """Whether ``other`` differs enough from this (the last published) status to publish.

        Drain, role, capacity or queue limit changed; or the load (in flight
        plus queued) moved by at least ``threshold`` of the capacity; or the
        agent went from having room to being full or back.
        """
        if (self.draining, self.role) != (other.draining, other.role):
            return True
        a, b = self.load, other.load
        if (a.capacity, a.queue_limit) != (b.capacity, b.queue_limit):
            return True
        used_a, used_b = a.in_flight + a.queued, b.in_flight + b.queued
        if used_a == used_b:
            return False
        limit = b.capacity + b.queue_limit
        if (used_a >= limit) != (used_b >= limit):
            return True
        return abs(used_a - used_b) >= threshold * max(b.capacity, 1)


def timer_scale(members: int) -> float:
    """How much to stretch the status refresh and card TTLs for ``members`` nodes: ``max(1, N/10)``.

    Every node's refresh reaches every other node, so a node receives
    ``(N - 1) / (heartbeat * scale)`` statuses a second: linear scaling keeps
    that rate, and the CPU it costs, flat as the cluster grows (memberlist
    probes one member per interval for the same reason). The TTL only
    catches what SWIM does not (it removes dead members within seconds),
    so stretching it costs no detection time.
    """
    return max(1.0, max(members, 1) / 10)


class CardEventType(enum.Enum):
    """What happened to a card (values match ``praxis.v1.CardEventType``)."""

    ADDED = 1
    UPDATED = 2
    REMOVED = 3


@dataclass(frozen=True)
class CardEvent:
    """A change in the registry."""

    type: CardEventType
    card: AgentCard


@dataclass
class _Entry:
    card: AgentCard
    seen_at: datetime
    status: AgentStatus | None = None

    @property
    def view(self) -> AgentCard:
        return self.card.with_status(self.status)


@dataclass
class CardRegistry:
    """The freshest known card and status of every agent, with TTL expiry.

    ``merge``/``merge_status``/``remove``/``expire`` return the events they
    caused; the caller fans them out. Events, :meth:`get` and :meth:`cards`
    show each card merged with its newer status. A card or a newer status
    refreshes the agent's TTL, which is ``ttl`` times :func:`timer_scale` of
    the number of known agents. The local agent's card never expires.
    """

    local_agent_id: str
    ttl: float
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def merge(self, card: AgentCard, now: datetime) -> CardEvent | None:
        """Keep ``card`` if it is newer than what is known; return the event, if any."""
        entry = self._entries.get(card.agent_id)
        if entry is None:
            self._entries[card.agent_id] = _Entry(card, now)
            return CardEvent(CardEventType.ADDED, card)
        if card.freshness < entry.card.freshness:
            return None
        entry.seen_at = now
        if card.freshness == entry.card.freshness:
            return None
        before = entry.view
        entry.card = card
        if entry.status is not None and entry.status.incarnation != card.incarnation:
            entry.status = None
        after = entry.view
        return None if after == before else CardEvent(CardEventType.UPDATED, after)

    def wants_status(self, status: AgentStatus) -> bool:
        """Whether ``status`` would be news: its agent's card of the same incarnation
        is known and the status is newer than both that card and the last status."""
        entry = self._entries.get(status.agent_id)
        if entry is None or entry.card.incarnation != status.incarnation:
            return False
        return status.freshness > entry.view.freshness

    def merge_status(self, status: AgentStatus, now: datetime) -> CardEvent | None:
        """Keep ``status`` if :meth:`wants_status`; refresh the TTL; return UPDATED if the
        merged card changed in more than version and timestamp."""
        if not self.wants_status(status):
            return None
        entry = self._entries[status.agent_id]
        before = entry.view
        entry.status = status
        entry.seen_at = now
        after = entry.view
        if after.same_content(before):
            return None
        return CardEvent(CardEventType.UPDATED, after)

    def remove(self, agent_id: str) -> CardEvent | None:
        """Forget an agent; return the REMOVED event if it was known."""
        entry = self._entries.pop(agent_id, None)
        return CardEvent(CardEventType.REMOVED, entry.view) if entry else None

    def expire(self, now: datetime) -> list[CardEvent]:
        """Remove every remote card not refreshed within the scaled ``ttl``."""
        ttl = self.ttl * timer_scale(len(self._entries))
        stale = [
            agent_id
            for agent_id, entry in self._entries.items()
            if agent_id != self.local_agent_id and (now - entry.seen_at).total_seconds() > ttl
        ]
        return [event for agent_id in stale if (event := self.remove(agent_id))]

    def get(self, agent_id: str) -> AgentCard | None:
        """The card of ``agent_id``, if known."""
        entry = self._entries.get(agent_id)
        return entry.view if entry else None

    def cards(self, tool: str = "", tags: Sequence[str] = ()) -> list[AgentCard]:
        """Known cards matching ``tool`` and ``tags``, ordered by name then id."""
        found = [e.view for e in self._entries.values() if e.card.matches(tool, tags)]
        return sorted(found, key=lambda c: (c.name, c.agent_id))

    def __len__(self) -> int:
        return len(self._entries)
