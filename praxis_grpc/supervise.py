"""Background tasks of a node, owned in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
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

    def __init__(self, metrics: Metrics, on_critical: Callable[[str], Awaitable[None]]) -> None:
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
        task = asyncio.get_running_loop().create_task(
            self._run(name, work, critical, reason or f"{name} ended"), name=name
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, name: str, work: Coroutine[Any, Any, None], critical: bool, reason: str
    ) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._metrics.background_task_crashes_total.labels(name).inc()
            log.exception("background task %s failed", name)
            reason = f"{name} failed ({exc!r})"
        else:
            if not critical:
                return
        if critical and not self._closing:
            await self._on_critical(reason)

    async def aclose(self) -> None:
        """Cancel every task and wait for them (critical ones end quietly)."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
