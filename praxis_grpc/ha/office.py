"""This node's tenure as active-passive coordinator, as the parts built
before the :class:`~praxis_grpc.ha.coordinator.HaController` read it."""

from __future__ import annotations

from praxis_grpc.consensus.base import Consensus, Leadership

__all__ = ["Office"]


class Office:
    """Written only by the one ``HaController`` it is given to; read by the
    router (:meth:`in_office`: this node is no routing candidate), the
    replicated records and delegations (:meth:`term`: the fencing token).

    Attributes:
        leadership: The latest leadership the controller observed.
        leading_term: The term this node took over in (0: it does not coordinate).
        seated: From the start of a take-over until the step-down.
    """

    def __init__(self, consensus: Consensus) -> None:
        self._consensus = consensus
        self.leadership = Leadership()
        self.leading_term = 0
        self.seated = False

    @property
    def leading(self) -> bool:
        """True while this node is the coordinator (took over in the current term)."""
        return self.leading_term != 0 and self.leadership.is_self

    def term(self) -> int:
        """The term this node coordinates in (0 when it does not, or when the
        backend already reports that term lost): its fencing token."""
        if not self.leading:
            return 0
        current = self._consensus.leadership()
        return self.leading_term if current.is_self and current.term == self.leading_term else 0

    def in_office(self) -> bool:
        """True from the start of a take-over until the step-down: the
        coordinator coordinates and does not execute."""
        return self.seated
