"""Progress of ``praxis up`` while its nodes start, on stderr.

On a terminal each node gets a spinner and its current step (rich Live);
otherwise (piped, or ``--json``) each step is one plain line, so stdout keeps
only the result.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

_STEPS = {
    "starting": "starting",
    "ready": "serving; joining the mesh",
    "meshed": "in the mesh",
}


class StartProgress:
    """Collects ``(node, step)`` events; a context manager around the start."""

    def __init__(self, live: bool) -> None:
        self._steps: dict[str, str] = {}
        self._live: Any = None
        if live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._render(), console=Console(stderr=True), refresh_per_second=8, transient=True
            )

    def __enter__(self) -> StartProgress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, name: str, step: str) -> None:
        """Node ``name`` reached ``step`` (``starting``, ``ready``, ``meshed``)."""
        self._steps[name] = step
        if self._live is not None:
            self._live.update(self._render())
        else:
            print(f"praxis up: {name}: {_STEPS.get(step, step)}", file=sys.stderr, flush=True)

    def _render(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        for name, step in self._steps.items():
            mark: Any = "[green]✓[/]" if step == "meshed" else Spinner("dots")
            grid.add_row(mark, name, _STEPS.get(step, step))
        if not self._steps:
            grid.add_row(Spinner("dots"), "starting nodes")
        return grid
