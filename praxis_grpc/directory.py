"""The node's card directory: the registry plus change fan-out and the local card.

Wraps the pure :class:`~praxis_grpc.cards.CardRegistry` with what a running
node needs: versioning its own card and status whenever they change, expiring
stale remote cards on a timer, and streaming events to any number of watchers.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from praxis_grpc.cards import (
    AgentCard,
    AgentStatus,
    CardEvent,
    CardEventType,
    CardRegistry,
)

Clock = Callable[[], datetime]
_MAX_BURIED = 10_000
_MAX_GRAVES = 1_024  # whole cards kept for members that may turn out alive
_MAX_VIEWS = 64  # cached (tool, tags) queries; tags are the client's to choose


_V = TypeVar("_V")


def _remember(table: dict[str, _V], agent_id: str, value: _V, limit: int = _MAX_BURIED) -> None:
    """Set ``table[agent_id]`` as its newest entry, dropping the oldest past ``limit``."""
    table.pop(agent_id, None)
    table[agent_id] = value
    while len(table) > limit:
        del table[next(iter(table))]


class _Signal(enum.Enum):
    OVERFLOW = "overflow"
    CLOSED = "closed"


class CardDirectory:
    """Known cards, with watchers.

    All methods run on the event loop; ``watch`` streams may be consumed
    concurrently. A watcher that falls more than ``max_backlog`` events behind
    is disconnected rather than allowed to grow memory without bound.
    """

    def __init__(
        self,
        local_agent_id: str,
        ttl: float,
        clock: Clock = lambda: datetime.now(UTC),
        max_backlog: int = 10_000,
    ) -> None:
        self._registry = CardRegistry(local_agent_id=local_agent_id, ttl=ttl)
        self._clock = clock
        self._watchers: set[asyncio.Queue[CardEvent | _Signal]] = set()
        self._max_backlog = max_backlog
        self._local_card: AgentCard | None = None
        self._local_status: AgentStatus | None = None
        self._version = 0
        self._buried: dict[str, int] = {}  # agent -> the incarnation membership holds gone
        self._removed: dict[str, tuple[int, int]] = {}  # agent -> its freshness when removed
        self._graves: dict[str, tuple[AgentCard, datetime]] = {}  # agent -> card buried, when
        # cards() per (tool, tags), as of the last change: every placement asks
        # for them, and building the views costs more than the rest of routing.
        self._views: dict[tuple[str, tuple[str, ...]], list[AgentCard]] = {}

    @property
    def local(self) -> AgentCard:
        """This node's card with its status applied (after the first ``publish_local``)."""
        return self.local_card.with_status(self._local_status)

    @property
    def local_card(self) -> AgentCard:
        """This node's card as last versioned (its status part as of that version)."""
        if self._local_card is None:
            raise RuntimeError("the local card has not been published yet")
        return self._local_card

    @property
    def local_status(self) -> AgentStatus:
        """This node's newest status (same version as the card when the card is newer)."""
        if self._local_status is None:
            raise RuntimeError("the local card has not been published yet")
        return self._local_status

    def publish_local(self, card: AgentCard) -> AgentCard:
        """Adopt ``card`` as the local card and status; returns the merged card.

        ``card.version`` is ignored: the directory owns one version counter for
        the card and the status. A change outside load, drain and role versions
        the card (and the status with it); a change only there, the status.
        """
        previous, status = self._local_card, self._local_status
        if previous is None or status is None or not previous.same_identity(card):
            self._version += 1
            current = replace(card, version=self._version, updated_at=self._clock())
            self._local_card, self._local_status = current, AgentStatus.of(current)
            self.merge(current)
        elif not status.same_state(AgentStatus.of(card)):
            self._stamp_status(AgentStatus.of(card))
        return self.local

    def refresh_local_status(self) -> AgentStatus:
        """Give the unchanged local status a new version (a refresh peers accept as news)."""
        self._stamp_status(self.local_status)
        return self.local_status

    def _stamp_status(self, status: AgentStatus) -> None:
        self._version += 1
        self._local_status = replace(status, version=self._version, updated_at=self._clock())
        self.merge_status(self._local_status)

    def merge(self, card: AgentCard) -> CardEvent | None:
        """Merge a card from anywhere; fan out the resulting event."""
        if card.incarnation <= self._buried.get(card.agent_id, -1):
            return None  # a late copy of a dead or departed agent's card
        self._views.clear()
        event = self._registry.merge(card, self._clock())
        if event is not None:
            self._emit(event)
        return event

    def wants_status(self, status: AgentStatus) -> bool:
        """Whether ``status`` is newer than what is known of its agent (see the registry)."""
        return self._registry.wants_status(status)

    def merge_status(self, status: AgentStatus) -> CardEvent | None:
        """Merge a status; fan out the resulting event."""
        self._views.clear()
        event = self._registry.merge_status(status, self._clock())
        if event is not None:
            self._emit(event)
        return event

    def remove(self, agent_id: str) -> CardEvent | None:
        """Forget an agent; fan out REMOVED. Remembers how fresh it was (:meth:`removed_at`)."""
        event = self._registry.remove(agent_id)
        if event is not None:
            self._views.clear()
            _remember(self._removed, agent_id, event.card.freshness)
            self._emit(event)
        return event

    def removed_at(self, agent_id: str) -> tuple[int, int] | None:
        """The freshness ``agent_id`` had when its entry was last removed (None while
        it is listed, or if it never was): a card no newer than that is a replay."""
        if self._registry.get(agent_id) is not None:
            return None
        return self._removed.get(agent_id)

    def bury(self, agent_id: str, *, left: bool = False) -> CardEvent | None:
        """Remove an agent membership holds dead (or ``left``); refuse its cards of the
        same incarnation or older until :meth:`exhume` (a newer life's cards are
        accepted). The card of a dead one is kept for :meth:`exhume`: a death can be
        a false verdict; a departure is the member's own word."""
        card = self._registry.get(agent_id)
        if card is not None:
            _remember(self._buried, agent_id, card.incarnation)
            if left:
                self._graves.pop(agent_id, None)
            else:
                _remember(self._graves, agent_id, (card, self._clock()), _MAX_GRAVES)
        return self.remove(agent_id)

    def exhume(self, agent_id: str) -> CardEvent | None:
        """Membership holds ``agent_id`` alive again: accept its cards again and list
        the card :meth:`bury` removed (returns its ADDED event, if it was listed again).

        A falsely suspected member refutes with a higher SWIM incarnation, not with a
        newer card, and its peers only resend its card with their next refresh
        (``cards.heartbeat``, scaled with N): its card, refused as a replay while it
        was held dead, would otherwise stay out that long. The card goes back with
        the time it was buried as its last sighting, so the TTL still ends it if
        nothing renews it; a newer card already listed (a new life's) is kept.
        """
        self._buried.pop(agent_id, None)
        grave = self._graves.pop(agent_id, None)
        if self._registry.get(agent_id) is not None:
            return None
        self._removed.pop(agent_id, None)
        if grave is None:
            return None
        card, buried_at = grave
        self._views.clear()
        event = self._registry.merge(card, buried_at)
        if event is not None:
            self._emit(event)
        return event

    def expire(self) -> list[CardEvent]:
        """Drop remote cards older than the TTL; fan out REMOVED for each."""
        events = self._registry.expire(self._clock())
        if events:
            self._views.clear()
        for event in events:
            _remember(self._removed, event.card.agent_id, event.card.freshness)
            self._emit(event)
        return events

    def get(self, agent_id: str) -> AgentCard | None:
        """A known card."""
        return self._registry.get(agent_id)

    def cards(self, tool: str = "", tags: Sequence[str] = ()) -> list[AgentCard]:
        """Known cards matching the filters (a new list each call)."""
        key = (tool, tuple(tags))
        found = self._views.get(key)
        if found is None:
            if len(self._views) >= _MAX_VIEWS:
                self._views.clear()
            found = self._views[key] = self._registry.cards(tool, tags)
        return list(found)

    def __len__(self) -> int:
        return len(self._registry)

    async def watch(self, tool: str = "") -> AsyncIterator[CardEvent | None]:
        """Yield ADDED for every known card, then ``None`` (synced), then changes.

        Raises:
            OverflowError: the consumer fell too far behind.
        """
        queue: asyncio.Queue[CardEvent | _Signal] = asyncio.Queue()
        snapshot = self._registry.cards(tool)
        self._watchers.add(queue)
        try:
            for card in snapshot:
                yield CardEvent(CardEventType.ADDED, card)
            yield None
            while True:
                event = await queue.get()
                if event is _Signal.CLOSED:
                    return
                if event is _Signal.OVERFLOW:
                    raise OverflowError("card watcher fell too far behind")
                if not tool or event.card.offers(tool):
                    yield event
        finally:
            self._watchers.discard(queue)

    def close_watchers(self) -> None:
        """End every watch stream (node shutdown)."""
        for queue in self._watchers:
            queue.put_nowait(_Signal.CLOSED)

    async def expire_periodically(self, interval: float) -> None:
        """Run :meth:`expire` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.expire()

    def _emit(self, event: CardEvent) -> None:
        for queue in list(self._watchers):
            if queue.qsize() >= self._max_backlog:
                self._watchers.discard(queue)
                queue.put_nowait(_Signal.OVERFLOW)
            else:
                queue.put_nowait(event)
