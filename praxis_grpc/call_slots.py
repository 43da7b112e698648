"""Calls in progress per caller, bounded (``cluster.max_calls_per_peer``).

A node serves the peer service to every member, over the members-only gRPC
listener and over libp2p (``/praxis/peer/1.0.0``). Each transport bounds the
calls and streams in progress from any one peer, so a member (or a
compromised one) that floods a node takes at most its share of it, and the
others are still served. Pure: no I/O, no clock.
"""

from __future__ import annotations

__all__ = ["PerPeerSlots"]


class PerPeerSlots:
    """Counts the calls in progress per peer id and refuses one past ``limit``.

    Not thread-safe: one instance per event loop (the gRPC listener's
    asyncio loop, or the libp2p host's trio thread). Holds an entry only for
    a peer with a call in progress.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self._calls: dict[str, int] = {}

    def acquire(self, peer: str) -> bool:
        """Take a slot for a call from ``peer``; False (nothing taken) if it has ``limit``."""
        held = self._calls.get(peer, 0)
        if held >= self.limit:
            return False
        self._calls[peer] = held + 1
        return True

    def release(self, peer: str) -> None:
        """Give back a slot :meth:`acquire` took for ``peer``."""
        held = self._calls.get(peer, 0)
        if held <= 1:
            self._calls.pop(peer, None)
        else:
            self._calls[peer] = held - 1

    def in_progress(self, peer: str) -> int:
        """Calls from ``peer`` holding a slot."""
        return self._calls.get(peer, 0)

    def __len__(self) -> int:
        """Peers with a call in progress."""
        return len(self._calls)
