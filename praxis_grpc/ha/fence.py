"""Fencing: a node refuses work from a coordinator older than one it has seen.

Every dispatch of an active-passive coordinator carries its term (the
consensus fencing token). A node remembers the highest token it has admitted,
on disk so a restart does not forget it, and refuses dispatches carrying a
lower one: a coordinator that was deposed while paused (SIGSTOP, a long GC, a
partition) and has not noticed yet cannot start work any more. Rules:

    - A dispatch without a token (0) is refused: in active-passive mode only
      a coordinator dispatches, and it always has a term.
    - A token older than the highest admitted, or than the term this node
      has seen the consensus group reach, is refused (its sender was deposed).
    - A token newer than any term this node has seen the group reach is
      refused and not remembered: it is not (yet) a term, and remembering it
      would make the node refuse every real coordinator after it (the caller,
      :meth:`~praxis_grpc.ha.coordinator.HaController.admit`, first waits a
      little for its view of the group to catch up).
    - A coordinator admits its own term when it takes office
      (:meth:`Fence.take_office`), before it dispatches or adopts anything, so
      a dispatch of its predecessor is refused by it too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from praxis_grpc.errors import FailedPrecondition

log = logging.getLogger(__name__)

__all__ = ["Fence"]


class Fence:
    """The highest fencing token admitted, persisted at ``path``. Not
    thread-safe; :meth:`admit` and :meth:`take_office` write the file
    synchronously (a few bytes, only when the token grows)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._highest = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            self._highest = 0
        except ValueError:
            raise ValueError(f"{path}: not a fencing token") from None

    @property
    def highest(self) -> int:
        """The highest token admitted so far (0: none)."""
        return self._highest

    def admit(self, token: int, observed_term: int) -> None:
        """Accept a dispatch carrying ``token``, remembering it.

        Args:
            token: The dispatch's fencing token.
            observed_term: The newest term this node has seen the consensus
                group reach.

        Raises:
            FailedPrecondition: ``token`` is 0, older than one admitted or
                than ``observed_term``, or newer than ``observed_term``
                (nothing is remembered then).
        """
        if token == 0:
            raise FailedPrecondition(
                "fencing_token is missing: in active-passive mode a dispatch must carry "
                "its coordinator's term"
            )
        newest = max(self._highest, observed_term)
        if token < newest:
            raise FailedPrecondition(
                f"fencing_token {token} is older than term {newest}: the sender is no "
                "longer the coordinator"
            )
        if token > observed_term:
            raise FailedPrecondition(
                f"fencing_token {token} is newer than term {observed_term}, the newest "
                "this node has seen the consensus group reach"
            )
        self._remember(token)

    def take_office(self, term: int) -> None:
        """Admit this node's own ``term`` as it becomes the coordinator.

        Consensus terms only increase, so a remembered token above the term
        this node now leads in was never a term of this group (a value
        written before tokens were checked, or another cluster's): it is
        replaced, with a warning, rather than keep the coordinator from its
        own dispatches.
        """
        if term < self._highest:
            log.warning(
                "fencing token %d in %s is above term %d, which this node now leads in: "
                "it was never a term of this group; replacing it",
                self._highest,
                self._path,
                term,
            )
        if term != self._highest:
            self._remember(term)

    def _remember(self, token: int) -> None:
        if token == self._highest:
            return
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(f"{token}\n")
        os.replace(temporary, self._path)
        self._highest = token
