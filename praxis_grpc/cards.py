"""Agent cards and the registry of the freshest card per agent. Pure: no I/O.

A card is identified by its agent id. Between two cards of one agent the one
with the higher ``(incarnation, version)`` wins: incarnation increases on every
process start, version on every change within a start. The registry takes the
current time as an argument so expiry is testable without a clock.
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

    @property
    def freshness(self) -> tuple[int, int]:
        """Ordering key: a card with a greater key supersedes one with a smaller key."""
        return (self.incarnation, self.version)

    @property
    def grpc_address(self) -> str:
        """The agent's gRPC endpoint ("host:port"), or "" when it has none."""
        return next((e.address for e in self.endpoints if e.transport == "grpc"), "")

    def offers(self, tool: str) -> bool:
        """True when the agent advertises ``tool``."""
        return any(t.name == tool for t in self.tools)

    def matches(self, tool: str = "", tags: Iterable[str] = ()) -> bool:
        """True when the card offers ``tool`` (if given) and carries every tag."""
        return (not tool or self.offers(tool)) and set(tags) <= set(self.tags)

    def same_content(self, other: AgentCard) -> bool:
        """True when the cards differ at most in version and timestamp."""
        return replace(self, version=other.version, updated_at=other.updated_at) == other


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


@dataclass
class CardRegistry:
    """The freshest known card of every agent, with TTL expiry.

    ``merge``/``remove``/``expire`` return the events they caused; the caller
    fans them out. The local agent's card never expires.
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
        entry.card = card
        return CardEvent(CardEventType.UPDATED, card)

    def remove(self, agent_id: str) -> CardEvent | None:
        """Forget an agent; return the REMOVED event if it was known."""
        entry = self._entries.pop(agent_id, None)
        return CardEvent(CardEventType.REMOVED, entry.card) if entry else None

    def expire(self, now: datetime) -> list[CardEvent]:
        """Remove every remote card not refreshed within ``ttl``."""
        stale = [
            agent_id
            for agent_id, entry in self._entries.items()
            if agent_id != self.local_agent_id and (now - entry.seen_at).total_seconds() > self.ttl
        ]
        return [event for agent_id in stale if (event := self.remove(agent_id))]

    def get(self, agent_id: str) -> AgentCard | None:
        """The card of ``agent_id``, if known."""
        entry = self._entries.get(agent_id)
        return entry.card if entry else None

    def cards(self, tool: str = "", tags: Sequence[str] = ()) -> list[AgentCard]:
        """Known cards matching ``tool`` and ``tags``, ordered by name then id."""
        found = [e.card for e in self._entries.values() if e.card.matches(tool, tags)]
        return sorted(found, key=lambda c: (c.name, c.agent_id))

    def __len__(self) -> int:
        return len(self._entries)
