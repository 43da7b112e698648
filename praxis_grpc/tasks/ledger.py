"""The task ledger: the one write path to the task store, and who is told of a change.

Contract:
    - Every write of a task on this node goes through a :class:`Ledger` and its
      :class:`~praxis_grpc.tasks.journal.GroupCommit` (shared with the node's
      other writers, so concurrent writes share commits). A state is shown to
      readers (:meth:`Ledger.get`, :meth:`Ledger.watch`, :meth:`Ledger.wait`)
      once committed; :meth:`Ledger.update_nowait` is the one exception, for a
      state recovery does not need.
    - Dedup: a task with an idempotency key is accepted at most once per key
      and origin (the agent that accepted it from its client); a task with a
      caller-chosen ``task_id`` once per id. A repeat of the same request is
      answered with the first task, a different request under the same key
      or id with ``AlreadyExists``.
    - Foreign records: an entry node keeps a record of each task it delegated
      (owned by another agent) in the same store, served like a local task
      (:meth:`Ledger.record`, :meth:`Ledger.forget`, :meth:`Ledger.adopt`).
      The ledger never runs anything: the executor (tasks/executor.py) runs
      this agent's tasks and writes each of their state changes here.

Unfinished tasks, local and foreign, are kept in memory so reads of them skip
the store. Everything runs on one asyncio event loop; no method is
thread-safe. Store calls are synchronous, as the store is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from praxis_grpc.errors import AlreadyExists, InvalidArgument, NotFound, quote
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.admission import check_task_id
from praxis_grpc.tasks.ids import new_task_id
from praxis_grpc.tasks.journal import Commit, GroupCommit
from praxis_grpc.tasks.model import Reason, Submission, Task, TaskError, TaskState
from praxis_grpc.tasks.store import (
    Cursor,
    DuplicateTask,
    TaskStore,
    TaskStoreError,
    UnknownTask,
    Write,
    WriteResult,
)
from praxis_grpc.tasks.watchers import TaskWatchers

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

__all__ = ["Clock", "Ledger", "utcnow"]

# Bounds the ids new_task_id() issued that were never used.
_MAX_FRESH_IDS = 1024


def utcnow() -> datetime:
    """The wall clock in UTC."""
    return datetime.now(UTC)


class Ledger:
    """The task records of one node: writes, dedup, notifications, foreign records.

    Args:
        journal: The group commit of ``store`` to write through, shared with
            other components of the node; by default the ledger makes its own.

    Raises:
        ValueError: ``journal`` writes to another store.
    """

    def __init__(
        self,
        *,
        store: TaskStore,
        metrics: Metrics,
        agent_id: str,
        clock: Clock = utcnow,
        journal: GroupCommit | None = None,
    ) -> None:
        if journal is not None and journal.store is not store:
            raise ValueError("the journal must write to the engine's task store")
        self._store = store
        self._journal = GroupCommit(store) if journal is None else journal
        self._metrics = metrics
        self._agent_id = agent_id
        self._clock = clock
        # Unfinished tasks (local and foreign records), so reads of them skip the store.
        self._live: dict[str, Task] = {}
        # Ids from new_task_id() that no stored task has yet.
        self._fresh: set[str] = set()
        # The latest state of tasks written by update_unread() (or persist() while
        # their insert is pending), until their insert commits.
        self._unread: dict[str, Task] = {}
        # Tasks whose terminal state finish_unread() folded into their pending insert.
        self._finished_unread: set[str] = set()
        self._watchers = TaskWatchers()
        self._counters: dict[tuple[str, TaskState], Any] = {}

    @property
    def agent_id(self) -> str:
        """The agent this ledger keeps tasks for: the owner of its local tasks."""
        return self._agent_id

    @property
    def journal(self) -> GroupCommit:
        """The group commit every write goes through."""
        return self._journal

    def owns(self, task: Task) -> bool:
        """True if ``task`` is this agent's own (local) task, not a foreign record."""
        return task.owner_agent_id == self._agent_id

    def new_task_id(self) -> str:
        """A new task id (:func:`~praxis_grpc.tasks.ids.new_task_id`) for a task
        to submit or record here.

        Until a task is stored under it, the ledger knows that no task has it
        and skips the store lookups that a submission or :meth:`record`
        otherwise makes for a given id.
        """
        task_id = new_task_id()
        if len(self._fresh) >= _MAX_FRESH_IDS:
            self._fresh.clear()  # ids issued but never used: they lose the shortcut
        self._fresh.add(task_id)
        return task_id

    def issued(self, task_id: str) -> bool:
        """True if :meth:`new_task_id` issued ``task_id`` (a canonical UUID)
        and no task was inserted under it yet."""
        return task_id in self._fresh

    def is_unused(self, task_id: str) -> bool:
        """True if no task holds ``task_id`` here: none is stored, live or
        being written under it (an id from :meth:`new_task_id` not inserted
        yet is known to be unused without reading the store)."""
        if task_id in self._fresh:
            return True
        return (
            task_id not in self._live
            and not self._journal.pending(task_id)
            and self._store.get(task_id) is None
        )

    def get(self, task_id: str) -> Task:
        """The task's current state, local or a foreign record. Raises NotFound."""
        task = self._live.get(task_id) or self._store.get(task_id)
        if task is None:
            raise NotFound(f"task {quote(task_id)} not found")
        return task

    async def wait(self, task_id: str) -> Task:
        """Block until the task is terminal and return it.

        Raises:
            NotFound: No such task, or its foreign record was forgotten.
        """
        return await self._watchers.wait(self.get(task_id))

    def watch(self, task_id: str) -> AsyncIterator[Task]:
        """Yield the current state, then every change, ending after the terminal one.

        Raises:
            NotFound: No such task, or its foreign record was forgotten.
        """
        return self._watchers.watch(task_id, self.get)

    def find_duplicate(
        self, submission: Submission, task_id: str | None = None, origin_agent_id: str = ""
    ) -> Task | None:
        """The task an equal earlier submission created, by ``task_id`` or by
        idempotency key (scoped to ``origin_agent_id``, default this agent),
        wherever it runs.

        Raises:
            InvalidArgument: ``task_id`` is not a canonical UUID.
            AlreadyExists: the id or key belongs to a different request.
        """
        check_task_id(task_id)
        key = submission.idempotency_key
        if task_id is None and not key:
            return None
        origin = origin_agent_id or self._agent_id
        return self.duplicate_of(key, task_id, origin, submission.fingerprint())

    def duplicate_of(
        self,
        key: str,
        task_id: str | None,
        origin: str,
        fingerprint: str,
        *,
        stored_ids: bool = True,
    ) -> Task | None:
        """:meth:`find_duplicate` for a checked task id and a computed
        fingerprint; with ``stored_ids=False`` only live tasks are matched by id."""
        if task_id is not None:
            existing = self._live.get(task_id)
            if existing is None and stored_ids and task_id not in self._fresh:
                existing = self._store.get(task_id)
            if existing is not None:
                return self._deduplicated(existing, fingerprint, by_id=True)
        if key:
            existing = self._store.find_by_idempotency_key(key, origin)
            if existing is not None:
                return self._deduplicated(existing, fingerprint)
        return None

    def insert(self, task: Task) -> Commit:
        """Queue the insert of a new local task; once committed it is live.

        The commit happens whatever becomes of the caller; read its outcome
        with :meth:`inserted`.
        """
        self._fresh.discard(task.task_id)
        written = self._journal.insert(task)
        written.then(lambda future: self._stored(task, future))
        return written

    def inserted(self, task: Task, result: WriteResult) -> tuple[Task, bool]:
        """What the committed :meth:`insert` of ``task`` gave its submission.

        Returns:
            ``(task, False)`` if it was stored; ``(existing, True)`` if a task
            of the same request holds its id (stored before, or a concurrent
            submission committed first) or its idempotency key and origin.

        Raises:
            AlreadyExists: that task belongs to a different request.
            TaskStoreError: the write failed.
        """
        if isinstance(result, DuplicateTask):
            existing = self._live.get(task.task_id) or self._store.get(task.task_id)
            if existing is not None:
                return self._deduplicated(existing, task.request_fingerprint, by_id=True), True
        if isinstance(result, TaskStoreError):
            raise result
        assert result is not None
        if result.task_id != task.task_id:
            return self._deduplicated(result, task.request_fingerprint), True
        return task, False

    async def persist(self, task: Task) -> Task:
        """Commit a state change of ``task``, then show it to readers, watchers
        and waiters. A change that started is always finished: a cancellation
        arriving during the commit is re-raised after it.

        Raises:
            TaskStoreError: the write failed; nobody is told of the change.
        """
        folded = task.task_id in self._unread and self._journal.inserting(task.task_id)
        if folded:
            # Folds into the pending insert: shown when that commits (see
            # _stored), so a waiter woken by it finds this state at once; counted
            # now, as update_unread() counts, so the metrics are not behind it.
            self._unread[task.task_id] = task
            self._count(task)
        write = self._journal.update(task)
        try:
            result = await write
        except asyncio.CancelledError:
            self._committed(await write, task, counted=folded)
            raise
        self._committed(result, task, counted=folded)
        return task

    def update_nowait(self, task: Task) -> None:
        """Queue the write of ``task`` and show it to readers at once, before it
        commits: only for a state that recovery does not depend on."""
        self._journal.update(task)
        self._published(task)

    def update_unread(self, task: Task) -> None:
        """Queue the write of a new state of a task whose :meth:`insert` is
        still pending, and count it, without showing it: nobody can read the
        task before its insert commits (the write folds into the insert, see
        :class:`~praxis_grpc.tasks.journal.GroupCommit`). Like
        :meth:`update_nowait`, only for a state recovery does not depend on."""
        self._journal.fold(task)
        self._count(task)
        self._unread[task.task_id] = task

    def finish_unread(self, task: Task) -> None:
        """:meth:`update_unread` for the terminal state of a task that finished
        before its insert committed, with no runner left to await its write:
        it is shown (in the store, and to watchers) when the insert commits;
        whoever awaits the insert has it already (see
        :meth:`~praxis_grpc.tasks.executor.LocalExecutor.submit`)."""
        self.update_unread(task)
        self._finished_unread.add(task.task_id)

    def write_now(self, task: Task) -> Task:
        """Commit a state change of ``task`` synchronously, then show it
        (recovery and shutdown, where no event-loop iteration may pass).

        Raises:
            TaskStoreError: the write failed.
        """
        self._committed(self._journal.write_now(Write("update", task)), task)
        return task

    def recover(self) -> tuple[list[Task], list[str]]:
        """Take up what a previous run left unfinished (call once, before any write).

        A damaged task (:attr:`Task.unreadable`) is failed with
        STORED_VALUE_UNREADABLE: running or re-dispatching it would act on
        placeholders. Foreign records are kept for the delegation component
        to re-attach to (:meth:`foreign_unfinished`).

        Returns:
            This agent's unfinished tasks, oldest first, for the executor to
            plan; and the ids of the damaged tasks failed here.
        """
        now = self._clock()
        local: list[Task] = []
        failed: list[str] = []
        for task in self._store.unfinished():
            if task.unreadable:
                error = TaskError(
                    Reason.STORED_VALUE_UNREADABLE,
                    "the stored task is damaged and cannot run: " + "; ".join(task.unreadable),
                )
                self.write_now(task.finish_unsuccessfully(TaskState.FAILED, error, now))
                failed.append(task.task_id)
                continue
            self._live[task.task_id] = task
            if self.owns(task):
                local.append(task)
        return local, failed

    def foreign_unfinished(self) -> list[Task]:
        """Stored unfinished tasks owned by other agents, oldest first: the
        records of delegated tasks, for the delegation component to follow."""
        return [task for task in self._store.unfinished() if not self.owns(task)]

    async def record(self, task: Task, *, durable: bool = True) -> Task:
        """Store the record of a task owned by another agent and notify its readers.

        Inserts ``task`` if its id is new, else updates the stored record's
        lifecycle and owner (:meth:`TaskStore.update`); returns once committed,
        like a local state change. The record never runs here; the caller
        keeps its lifecycle valid (:meth:`Task.mirror`, :meth:`Task.reassign`).
        With ``durable=False`` a stored record's new state is only shown, not
        written (an intermediate state its owner holds durably).

        Returns:
            ``task``, or the task of the same origin that already holds a new
            record's idempotency key (nothing is written; compare ``task_id``).

        Raises:
            ValueError: ``task`` is owned by this agent, or its id is a local
                task's.
            AlreadyExists: a new record's idempotency key belongs to a
                different request.
            TaskStoreError: the write failed.
        """
        known = self._foreign(task, "recorded")
        if not durable and known is not None:
            self._notify(task)
            return task
        self._fresh.discard(task.task_id)
        write = self._journal.insert(task) if known is None else self._journal.update(task)
        try:
            result = await write
        except asyncio.CancelledError:
            self._recorded(task, await write)
            raise
        return self._recorded(task, result)

    async def forget(self, task: Task) -> None:
        """Delete the record of a task owned by another agent, once committed
        (every candidate refused it); its watchers and waiters get NotFound.
        Forgetting a record that is not stored does nothing.

        Raises:
            ValueError: ``task`` is owned by this agent, or its id is a local
                task's.
            TaskStoreError: the write failed.
        """
        self._foreign(task, "forgotten")
        write = self._journal.delete(task)
        try:
            result = await write
        except asyncio.CancelledError:
            self._forgotten(task.task_id, await write)
            raise
        self._forgotten(task.task_id, result)

    async def adopt(self, record: Task, *, default_timeout: float) -> Task:
        """Make this agent the owner of a foreign record (its owner was lost),
        committed before it returns; the caller then runs it.

        A record without a client timeout gets ``default_timeout`` (this
        agent's default for its tool), as a submission would.

        Raises:
            ValueError: ``record`` is owned by this agent, or its id is a
                local task's.
            TaskStoreError: the write failed.
        """
        self._foreign(record, "adopted")
        task = record.reassign(self._agent_id, self._clock())
        if task.timeout <= 0:
            task = replace(task, timeout=default_timeout)
        return await self.persist(task)

    def list(
        self,
        *,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        page_token: str = "",
    ) -> tuple[Sequence[Task], str]:
        """One page of tasks, newest first, and the token of the next page ('' at the end)."""
        try:
            after = Cursor.decode(page_token) if page_token else None
        except ValueError as exc:
            raise InvalidArgument("page_token", str(exc)) from None
        tasks, cursor = self._store.list(states=states, tool=tool, limit=limit, after=after)
        return tasks, cursor.encode() if cursor else ""

    def _deduplicated(self, existing: Task, fingerprint: str, *, by_id: bool = False) -> Task:
        if existing.request_fingerprint and existing.request_fingerprint != fingerprint:
            if by_id:
                raise AlreadyExists(
                    f"task_id {quote(existing.task_id)} was already used for a different request"
                )
            raise AlreadyExists(
                f"idempotency_key {quote(existing.idempotency_key)} was already used for a "
                f"different request (task {existing.task_id})"
            )
        return self._live.get(existing.task_id, existing)

    def _foreign(self, task: Task, verb: str) -> Task | None:
        """The stored record of foreign ``task``, if any; refuses local tasks."""
        if self.owns(task):
            raise ValueError(f"task {task.task_id} is owned by this agent and cannot be {verb}")
        known = self._live.get(task.task_id)
        if known is None and task.task_id not in self._fresh:
            known = self._store.get(task.task_id)
        if known is not None and self.owns(known):
            raise ValueError(f"task {task.task_id} is a local task and cannot be {verb}")
        return known

    def _stored(self, task: Task, written: asyncio.Future[Any]) -> None:
        latest = self._unread.pop(task.task_id, task)  # committed with the insert
        finished = task.task_id in self._finished_unread
        if finished:
            self._finished_unread.discard(task.task_id)
        if written.cancelled() or written.exception() is not None:
            return
        if written.result() is task:
            self._count(task)
            if finished:  # stored finished: not live
                self._watchers.publish(latest)
                return
            # A runner that saw the insert done before this callback ran may
            # already have shown a newer state: keep that one.
            self._live.setdefault(task.task_id, latest)

    def _recorded(self, task: Task, result: WriteResult) -> Task:
        if isinstance(result, DuplicateTask):
            # A concurrent record() inserted this id first: update it instead.
            result = self._journal.write_now(Write("update", task))
        if isinstance(result, TaskStoreError):
            raise result
        if isinstance(result, Task) and result.task_id != task.task_id:
            return self._deduplicated(result, task.request_fingerprint)
        self._notify(task)
        return task

    def _forgotten(self, task_id: str, result: WriteResult) -> None:
        if isinstance(result, TaskStoreError) and not isinstance(result, UnknownTask):
            raise result
        self._live.pop(task_id, None)
        self._watchers.forgotten(task_id)

    def _committed(self, result: WriteResult, task: Task, *, counted: bool = False) -> None:
        if isinstance(result, TaskStoreError):
            raise result
        if counted:
            self._notify(task)
        else:
            self._published(task)

    def _published(self, task: Task) -> None:
        self._count(task)
        self._notify(task)

    def _notify(self, task: Task) -> None:
        if task.terminal:
            self._live.pop(task.task_id, None)
        else:
            self._live[task.task_id] = task
        self._watchers.publish(task)

    def _count(self, task: Task) -> None:
        key = (task.tool, task.state)
        counters = self._counters.get(key)
        if counters is None:
            counters = [self._metrics.tasks_total.labels(task.tool, task.state.name)]
            if task.terminal:  # a terminal state is reached once per task
                outcome = task.state.name.lower()
                counters.append(self._metrics.tasks_finished_total.labels(task.tool, outcome))
            self._counters[key] = counters
        for counter in counters:
            counter.inc()
