"""Group commit: task writes issued in one event-loop iteration share one transaction.

A commit costs far more than the rows it writes (WAL frames for every touched
page), so batching the writes of concurrent tasks multiplies throughput while
keeping the rule that nothing is acknowledged before it is committed: every
write returns a future that resolves only after its batch committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from praxis_grpc.tasks.model import Task
from praxis_grpc.tasks.store import StoreUnavailable, TaskStore, Write, WriteResult

__all__ = ["Commit", "GroupCommit"]


class Commit(asyncio.Future[WriteResult]):
    """The outcome of one queued write; it cannot be cancelled.

    A queued write is committed whatever happens to whoever issued it, so its
    future is never cancelled either: a task cancelled while it awaits one
    gets ``CancelledError`` once the batch has committed, and can still read
    the result then (``await`` it again). This keeps a state change that
    started from being abandoned halfway without :func:`asyncio.shield`, whose
    extra future costs every awaited write another event-loop round.
    """

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._then: list[Callable[[Commit], None]] = []

    def cancel(self, msg: Any | None = None) -> bool:
        """Refuse: the write is committed regardless (see the class docstring)."""
        return False

    def then(self, callback: Callable[[Commit], None]) -> None:
        """Call ``callback(self)`` as soon as the outcome is set, in the call
        that sets it (at once if it is set already): before any task awaiting
        this future resumes and before any ``add_done_callback`` callback
        runs, without the event-loop round each of those costs. ``callback``
        must not block; it may queue writes (they go into the next batch).
        What it raises is reported to the loop's exception handler, like a
        done callback's.
        """
        if self.done():  # settled already: run it now
            self._run(callback)
        else:
            self._then.append(callback)

    def settle(self, result: WriteResult | None, error: BaseException | None = None) -> None:
        """Set the outcome (``error`` if given, else ``result``), then run the
        :meth:`then` callbacks. Called by the :class:`GroupCommit` only."""
        if error is None:
            self.set_result(result)
        else:
            self.set_exception(error)
        callbacks, self._then = self._then, []
        for callback in callbacks:
            self._run(callback)

    def _run(self, callback: Callable[[Commit], None]) -> None:
        try:
            callback(self)
        except Exception as exc:
            self.get_loop().call_exception_handler(
                {"message": "exception in a commit callback", "exception": exc, "future": self}
            )


class GroupCommit:
    """Batches writes to a :class:`TaskStore`.

    Writes are applied in the order they were issued, except that an update
    of a task whose previous pending write is also an update replaces that
    write (both futures resolve with the one result): only the latest state
    of a task needs committing, and every state it passed through is in it.
    Likewise an update of a task whose insert is pending is folded into the
    insert (one row written in its latest state): the insert's futures
    resolve as if the task had been inserted as first queued, the update's
    with None. If that insert is not stored (a duplicate), the update is
    applied on its own right after, as if it had not been folded.
    A batch is flushed at the first event-loop iteration after its first
    write in which no further write was queued, but at the latest
    ``max_wait_iterations`` iterations after it (or at once by :meth:`flush`,
    or when ``max_batch`` writes are pending): under load, when the writes
    of concurrent tasks arrive one per iteration, they share a commit instead
    of paying one each; a lone write waits one extra iteration. Runs on one
    event loop; not thread-safe.
    """

    def __init__(
        self, store: TaskStore, max_batch: int = 512, max_wait_iterations: int = 4
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_wait = max_wait_iterations
        self._pending: list[tuple[Write, list[Commit]]] = []
        # task id -> index in _pending of its latest pending write.
        self._latest: dict[str, int] = {}
        # index in _pending of an insert that updates were folded into ->
        # (the task first queued for insert, the updates' futures).
        self._folded: dict[int, tuple[Task, list[Commit]]] = {}
        self._scheduled: asyncio.Handle | None = None
        # Iterations the pending batch has waited, and its size at the last one.
        self._waited = 0
        self._seen = 0

    @property
    def store(self) -> TaskStore:
        """The store the writes go to."""
        return self._store

    def pending(self, task_id: str) -> bool:
        """True if a write of task ``task_id`` is queued and not committed yet."""
        return task_id in self._latest

    def inserting(self, task_id: str) -> bool:
        """True if the latest pending write of task ``task_id`` is an insert,
        so that an update queued now folds into it (commits with it)."""
        index = self._latest.get(task_id)
        return index is not None and self._pending[index][0].kind == "insert"

    def insert(self, task: Task) -> Commit:
        """Queue an insert; the future yields the stored task or the error."""
        return self._queue(Write("insert", task))

    def update(self, task: Task) -> Commit:
        """Queue a lifecycle update; the future yields None or the error."""
        return self._queue(Write("update", task))

    def fold(self, task: Task) -> None:
        """Fold a new state of a task into its pending insert, like an
        :meth:`update` whose outcome is the insert's (so no future of its own).

        Raises:
            ValueError: the task's latest pending write is not an insert.
        """
        index = self._latest.get(task.task_id)
        if index is None or self._pending[index][0].kind != "insert":
            raise ValueError(f"task {task.task_id} has no pending insert to fold into")
        self._fold(index, task)

    def _fold(self, index: int, task: Task) -> list[Commit]:
        """Make the pending insert at ``index`` write ``task``; returns the list of
        the futures of the updates folded into it."""
        earlier, futures = self._pending[index]
        updates = self._folded.setdefault(index, (earlier.task, []))[1]
        self._pending[index] = (Write("insert", task), futures)
        return updates

    def delete(self, task: Task) -> Commit:
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
        pending, self._pending = self._pending, []
        folded, self._folded = self._folded, {}
        self._latest.clear()
        for start in range(0, len(pending), self._max_batch):
            self._commit(pending[start : start + self._max_batch], start, folded)

    def _queue(self, write: Write) -> Commit:
        loop = asyncio.get_running_loop()
        future = Commit(loop=loop)
        task_id = write.task.task_id
        index = self._latest.get(task_id)
        if write.kind == "update" and index is not None:
            earlier, futures = self._pending[index]
            if earlier.kind == "update":
                futures.append(future)
                self._pending[index] = (write, futures)
                return future
            if earlier.kind == "insert":
                self._fold(index, write.task).append(future)
                return future
        self._latest[task_id] = len(self._pending)
        self._pending.append((write, [future]))
        if self._scheduled is None:
            self._waited = self._seen = 0
            self._scheduled = loop.call_soon(self._next_iteration)
        return future

    def _next_iteration(self) -> None:
        """Flush, unless writes keep arriving (see the class docstring)."""
        self._waited += 1
        queued = len(self._pending)
        if queued > self._seen and self._waited < self._max_wait and queued < self._max_batch:
            self._seen = queued
            self._scheduled = asyncio.get_running_loop().call_soon(self._next_iteration)
            return
        self.flush()

    def _commit(
        self,
        batch: Sequence[tuple[Write, list[Commit]]],
        start: int,
        folded: dict[int, tuple[Task, list[Commit]]],
    ) -> None:
        try:
            results = self._store.apply([write for write, _ in batch])
        except Exception as exc:
            # The whole transaction failed: nothing in the batch was written.
            failed = [futures for _, futures in batch]
            failed.extend(folded[i][1] for i in range(start, start + len(batch)) if i in folded)
            _fail(failed, exc)
            return
        retried: list[tuple[Write, list[Commit]]] = []
        for index, ((write, futures), result) in enumerate(zip(batch, results, strict=True)):
            fold = folded.get(start + index)
            if fold is None:
                for future in futures:
                    future.settle(result)
                continue
            first, updates = fold
            stored = result is write.task
            # The insert's futures first: their callbacks see the task inserted
            # before the updates' see it updated.
            for future in futures:
                future.settle(first if stored else result)
            if stored:
                for future in updates:
                    future.settle(None)
            else:
                retried.append((Write("update", write.task), updates))
        if retried:
            self._commit(retried, 0, {})


def _fail(failed: Sequence[Sequence[Commit]], exc: Exception) -> None:
    for futures in failed:
        for future in futures:
            error = StoreUnavailable(f"task store write failed: {exc}")
            error.__cause__ = exc
            future.settle(None, error)
