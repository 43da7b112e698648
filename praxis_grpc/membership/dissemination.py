"""Which signed items to piggyback next: memberlist's transmit-limited queue.

Each item is sent a bounded number of times (``retransmit_limit``), items sent
least often go first, and a newer item about the same member (or the same
payload key of the same origin) replaces the older one still queued.
"""

from __future__ import annotations

from dataclasses import dataclass

from praxis_grpc.membership.claims import Claim, Item


def item_name(item: Item) -> tuple[str, ...]:
    """The slot an item occupies: one per member, one per (origin, key)."""
    if isinstance(item, Claim):
        return ("member", item.member)
    return ("payload", item.origin, item.key)


@dataclass(slots=True)
class _Queued:
    item: Item
    transmits: int
    order: int


class BroadcastQueue:
    """Items waiting to be piggybacked; not thread-safe (owned by one state machine)."""

    def __init__(self) -> None:
        self._queued: dict[tuple[str, ...], _Queued] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._queued)

    def push(self, item: Item) -> None:
        """Queue ``item``, replacing whatever was queued under its name."""
        self._order += 1
        self._queued[item_name(item)] = _Queued(item, 0, self._order)

    def take(self, budget: int, limit: int) -> tuple[Item, ...]:
        """Items for one message: least-sent first, newest first among equals.

        Takes items while their sizes fit ``budget`` bytes (always at least one)
        and counts a transmission for each; an item sent ``limit`` times leaves.
        """
        if not self._queued:
            return ()
        chosen: list[Item] = []
        used = 0
        for entry in sorted(self._queued.values(), key=lambda e: (e.transmits, -e.order)):
            size = entry.item.size()
            if chosen and used + size > budget:
                continue
            chosen.append(entry.item)
            used += size
            entry.transmits += 1
            if entry.transmits >= limit:
                del self._queued[item_name(entry.item)]
            if used >= budget:
                break
        return tuple(chosen)
