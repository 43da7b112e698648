"""Group commit: task writes issued in one event-loop iteration share one transaction.

A commit costs far more than the rows it writes (WAL frames for every touched
page), so batching the writes of concurrent tasks multiplies throughput while
keeping the rule that nothing is acknowledged before it is committed: every
write returns a future that resolves only after its batch committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from praxis_grpc.tasks.model import Task
from praxis_grpc.tasks.store import TaskStore, TaskStoreError, Write, WriteResult


class GroupCommit:
    """Batches writes to a :class:`TaskStore`.

    Writes are applied in the order they were issued. A batch is flushed on
    the next event-loop iteration after its first write (or at once by
    :meth:`flush`), so a write never waits for more than the work already
    scheduled in that iteration. Runs on one event loop; not thread-safe.
    """

    def __init__(self, store: TaskStore, max_batch: int = 512) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[Write, asyncio.Future[WriteResult]]] = []
        self._scheduled: asyncio.Handle | None = None

    @property
    def store(self) -> TaskStore:
        """The store the writes go to."""
        return self._store

    def insert(self, task: Task) -> asyncio.Future[WriteResult]:
        """Queue an insert; the future yields the stored task or the error."""
        return self._queue(Write("insert", task))

    def update(self, task: Task) -> asyncio.Future[WriteResult]:
        """Queue a lifecycle update; the future yields None or the error."""
        return self._queue(Write("update", task))

    def delete(self, task: Task) -> asyncio.Future[WriteResult]:
        """Queue the removal of ``task.task_id``; the future yields None or the error."""
        return self._queue(Write("delete", task))

    def write_now(self, write: Write) -> WriteResult:
        """Flush what is pending, then apply ``write`` synchronously."""
        self.flush()
        (result,) = self._store.apply([write])
        return result

    def flush(self) -> None:
        """Commit every pending write now, in one transaction per ``max_batch``."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._commit(batch)

    def _queue(self, write: Write) -> asyncio.Future[WriteResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()
        self._pending.append((write, future))
        if self._scheduled is None:
            self._scheduled = loop.call_soon(self.flush)
        return future

    def _commit(self, batch: Sequence[tuple[Write, asyncio.Future[WriteResult]]]) -> None:
        try:
            results = self._store.apply([write for write, _ in batch])
        except Exception as exc:
            # The whole transaction failed: nothing in the batch was written.
            for _, future in batch:
                if not future.done():
                    future.set_exception(TaskStoreError(f"task store write failed: {exc}"))
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
