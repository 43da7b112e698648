"""Fencing: a node refuses work from a coordinator older than one it has seen.

Every dispatch of an active-passive coordinator carries its term (the
consensus fencing token). A node remembers the highest token it has seen, on
disk so a restart does not forget it, and refuses dispatches carrying a lower
one: a coordinator that was deposed while paused (SIGSTOP, a long GC, a
partition) and has not noticed yet cannot start work any more.
"""

from __future__ import annotations

import os
from pathlib import Path

from praxis_grpc.errors import FailedPrecondition

__all__ = ["Fence"]


class Fence:
    """The highest fencing token seen, persisted at ``path``."""

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

    def admit(self, token: int) -> None:
        """Accept work carrying ``token`` (0: not fenced), remembering it.

        Raises:
            FailedPrecondition: ``token`` is older than one already seen.
        """
        if token in (0, self._highest):
            return
        if token < self._highest:
            raise FailedPrecondition(
                f"fencing_token {token} is older than {self._highest}: the sender is no "
                "longer the coordinator"
            )
        self._highest = token
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(f"{token}\n")
        os.replace(temporary, self._path)
