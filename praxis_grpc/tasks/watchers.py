"""Who is told of a task's state changes: watchers (every change) and waiters (the end).

Contract of :class:`TaskWatchers`:
    - :meth:`~TaskWatchers.publish` and :meth:`~TaskWatchers.forgotten` never
      block and may be called from callbacks; a watcher receives every state
      published after it subscribed, in order, and a waiter the first
      terminal one.
    - The owner of the watchers (the ledger) publishes a state only once it
      is committed; readers get the current state from it, not from here.
    - Nothing is kept for a task nobody watches or waits for.
Runs on one asyncio event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from praxis_grpc.errors import NotFound, quote
from praxis_grpc.tasks.model import Task

__all__ = ["TaskWatchers"]


class TaskWatchers:
    """The subscribers to state changes of tasks, by task id."""

    def __init__(self) -> None:
        # None tells a watcher that its (foreign) task was forgotten.
        self._watchers: dict[str, set[asyncio.Queue[Task | None]]] = {}
        self._waiters: dict[str, list[asyncio.Future[Task]]] = {}

    async def wait(self, current: Task) -> Task:
        """``current`` if terminal, else the terminal state published next.

        Raises:
            NotFound: the task was forgotten meanwhile.
        """
        if current.terminal:
            return current
        task_id = current.task_id
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(task_id, [])
        waiters.append(future)
        try:
            return await future
        finally:
            if future in waiters:
                waiters.remove(future)
                if not waiters:
                    self._waiters.pop(task_id, None)

    async def watch(self, task_id: str, current: Callable[[str], Task]) -> AsyncIterator[Task]:
        """Yield ``current(task_id)``, then every published state, ending after
        the terminal one.

        Raises:
            NotFound: the task was forgotten meanwhile (or ``current`` raises it).
        """
        queue: asyncio.Queue[Task | None] = asyncio.Queue()
        state = current(task_id)
        watchers = self._watchers.setdefault(task_id, set())
        watchers.add(queue)
        try:
            yield state
            while not state.terminal:
                change = await queue.get()
                if change is None:
                    raise NotFound(f"task {quote(task_id)} not found")
                state = change
                yield state
        finally:
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(task_id, None)

    def publish(self, task: Task) -> None:
        """Tell the task's watchers of its new state, and its waiters if terminal."""
        for queue in self._watchers.get(task.task_id, ()):
            queue.put_nowait(task)
        if task.terminal:
            for future in self._waiters.pop(task.task_id, ()):
                if not future.done():
                    future.set_result(task)

    def forgotten(self, task_id: str) -> None:
        """Tell the task's watchers and waiters it is gone (they raise NotFound)."""
        for queue in self._watchers.get(task_id, ()):
            queue.put_nowait(None)
        for future in self._waiters.pop(task_id, ()):
            if not future.done():
                future.set_exception(NotFound(f"task {quote(task_id)} not found"))
