"""Lifeguard's timing: suspicion that shortens with confirmations, and local health.

A suspicion starts at the longest timeout and shrinks toward the shortest as
independent members confirm it (``k`` confirmations reach the shortest), on a
log scale as memberlist's ``remainingSuspicionTime``. The local health
multiplier (memberlist's ``awareness``) slows a node's own probing while it
misses acks or has to refute suspicion of itself: such a node is more likely
the slow one than its targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class Suspicion:
    """One member's suspicion at this node.

    Attributes:
        started: when this node first suspected the member.
        k: confirmations that bring the timeout down to ``shortest``.
        shortest: the timeout after ``k`` confirmations.
        longest: the timeout with none.
        accusers: members whose suspicion counted (the first one included).
    """

    started: float
    k: int
    shortest: float
    longest: float
    accusers: set[str] = field(default_factory=set)

    @property
    def confirmations(self) -> int:
        """Independent confirmations after the first accusation."""
        return max(0, len(self.accusers) - 1)

    def confirm(self, accuser: str) -> bool:
        """Count ``accuser``; True when it is new and could shorten the timeout."""
        if accuser in self.accusers or self.confirmations >= self.k:
            return False
        self.accusers.add(accuser)
        return True

    @property
    def deadline(self) -> float:
        """When the member is declared dead unless it refutes first."""
        if self.k < 1:
            return self.started + self.shortest
        fraction = math.log(self.confirmations + 1) / math.log(self.k + 1)
        timeout = self.longest - fraction * (self.longest - self.shortest)
        return self.started + max(self.shortest, timeout)


class Awareness:
    """The local health multiplier: probe period and timeout times ``score + 1``."""

    def __init__(self, maximum: int) -> None:
        self._maximum = maximum
        self.score = 0

    def apply(self, delta: int) -> None:
        """Move the score by ``delta``, kept within ``[0, maximum - 1]``."""
        self.score = min(self._maximum - 1, max(0, self.score + delta))

    def scale(self, seconds: float) -> float:
        """``seconds`` stretched by the current score."""
        return seconds * (self.score + 1)
