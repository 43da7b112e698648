"""Background tasks of a node, owned in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from praxis_grpc.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["Supervisor"]


class Supervisor:
    """Starts named tasks on the running loop and owns them until they end.

    - A task that ends with an error is logged and counted
      (``praxis_background_task_crashes_total{task}``).
    - A *critical* task is one the node cannot serve without (the role
      switch): if it ends at all, returning or raising, before
      :meth:`aclose`, ``on_critical`` is awaited with the reason (the node
      stops serving: NOT_SERVING, refuses tasks, its process exits 1).
    - A finished task is dropped at once: the set holds only running tasks.
    """

    def __init__(
        self, metrics: Metrics, on_critical: Callable[[str], Coroutine[Any, Any, None]]
    ) -> None:
        self._metrics = metrics
        self._on_critical = on_critical
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def __len__(self) -> int:
        """How many tasks are running."""
        return len(self._tasks)

    def start(
        self,
        name: str,
        work: Coroutine[Any, Any, None],
        *,
        critical: bool = False,
        reason: str = "",
    ) -> None:
        """Run ``work`` as task ``name``. ``reason``: for a critical task,
        why the node fails when it returns without an error."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)

        def ended(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._ended(task, critical, reason or f"{name} ended")

        task.add_done_callback(ended)

    def _ended(self, task: asyncio.Task[None], critical: bool, reason: str) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._metrics.background_task_crashes_total.labels(task.get_name()).inc()
            log.error("background task %s failed", task.get_name(), exc_info=error)
            reason = f"{task.get_name()} failed ({error!r})"
        if critical and not self._closing:
            self.start("fail", self._on_critical(reason))

    async def aclose(self) -> None:
        """Cancel every task and wait for them (critical ones end quietly)."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Their outcomes were (or are being) reported by their done callbacks.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)  # their done callbacks may not have run yet
