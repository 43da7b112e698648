"""What the failure detector's verdicts do to the node: dead and left members lose their cards.

:class:`MemberRoster` receives SWIM's member changes (see
:mod:`praxis_grpc.discovery.members`) on the node's event loop. A member
declared dead (by the probe path or a refused connection) or that left is
removed from the card directory at once, and its late cards are refused until
it is alive again; then the card a death verdict removed is listed again (the
verdict was false). The counts per state feed ``praxis_members``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from praxis_grpc.directory import CardDirectory
from praxis_grpc.membership import State
from praxis_grpc.metrics import Metrics

log = logging.getLogger(__name__)

_GONE = (State.DEAD, State.LEFT)


class MemberRoster:
    """Implements :class:`~praxis_grpc.discovery.members.MemberEvents` for a node.

    Args:
        directory: whose cards a verdict removes.
        metrics: where member states and SWIM counts go.
        forget_after: seconds a dead or left member is still counted (the
            membership layer's ``gossip_to_the_dead``).
    """

    def __init__(
        self,
        *,
        directory: CardDirectory,
        metrics: Metrics,
        forget_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._metrics = metrics
        self._forget_after = forget_after
        self._clock = clock
        self._states: dict[str, tuple[State, float]] = {}
        self._count()

    def on_member(self, member: str, state: State, incarnation: int) -> None:
        now = self._clock()
        self._states[member] = (state, now)
        if state in _GONE:
            if self._directory.bury(member, left=state is State.LEFT) is not None:
                log.info("member %s is %s; its card was removed", member, state.name.lower())
        elif self._directory.exhume(member) is not None:
            log.info(
                "member %s is %s again; its last card is listed again", member, state.name.lower()
            )
        horizon = now - self._forget_after
        for gone in [m for m, (s, t) in self._states.items() if s in _GONE and t <= horizon]:
            del self._states[gone]
        self._count()

    def on_probe(self, outcome: str) -> None:
        self._metrics.swim_probes_total.labels(outcome).inc()

    def on_message(self, kind: str, direction: str) -> None:
        self._metrics.swim_messages_total.labels(kind, direction).inc()

    def _count(self) -> None:
        counts = dict.fromkeys(State, 0)
        counts[State.ALIVE] = 1  # ourselves
        for state, _ in self._states.values():
            counts[state] += 1
        for state, count in counts.items():
            self._metrics.members.labels(state.name.lower()).set(count)
