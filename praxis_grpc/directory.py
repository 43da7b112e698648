"""The node's card directory: the registry plus change fan-out and the local card.

Wraps the pure :class:`~praxis_grpc.cards.CardRegistry` with what a running
node needs: publishing its own card whenever it changes, expiring stale
remote cards on a timer, and streaming events to any number of watchers.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from praxis_grpc.cards import AgentCard, CardEvent, CardEventType, CardRegistry

Clock = Callable[[], datetime]


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
        self._local: AgentCard | None = None

    @property
    def local(self) -> AgentCard:
        """This node's current card. Only valid after the first ``publish_local``."""
        if self._local is None:
            raise RuntimeError("the local card has not been published yet")
        return self._local

    def publish_local(self, card: AgentCard) -> AgentCard:
        """Adopt ``card`` as the local card, bumping the version if its content changed.

        ``card.version`` is ignored: the directory owns the version counter.
        """
        previous = self._local
        if previous is not None and previous.same_content(card):
            return previous
        version = previous.version + 1 if previous is not None else 1
        current = replace(card, version=version, updated_at=self._clock())
        self._local = current
        self.merge(current)
        return current

    def merge(self, card: AgentCard) -> CardEvent | None:
        """Merge a card from anywhere; fan out the resulting event."""
        event = self._registry.merge(card, self._clock())
        if event is not None:
            self._emit(event)
        return event

    def remove(self, agent_id: str) -> CardEvent | None:
        """Forget an agent; fan out REMOVED."""
        event = self._registry.remove(agent_id)
        if event is not None:
            self._emit(event)
        return event

    def expire(self) -> list[CardEvent]:
        """Drop remote cards older than the TTL; fan out REMOVED for each."""
        events = self._registry.expire(self._clock())
        for event in events:
            self._emit(event)
        return events

    def get(self, agent_id: str) -> AgentCard | None:
        """A known card."""
        return self._registry.get(agent_id)

    def cards(self, tool: str = "", tags: Sequence[str] = ()) -> list[AgentCard]:
        """Known cards matching the filters."""
        return self._registry.cards(tool, tags)

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
