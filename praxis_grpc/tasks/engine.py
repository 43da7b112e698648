"""The local task engine: admission, queue, execution, cancellation, recovery.

Delivery on one node:
    - A task is committed to the store before :meth:`TaskEngine.submit`
      returns, and every state change is committed before anyone is told of
      it, so what a client saw survives a crash of the process. Writes of
      concurrent tasks share commits (:class:`~praxis_grpc.tasks.journal.GroupCommit`).
    - A task with an idempotency key is accepted at most once per key and
      origin (the agent that accepted it from its client); a repeated
      submission returns the first task (``deduplicated``). So is a task
      submitted with an explicit ``task_id``, once per id.
    - WORKING is committed before a non-idempotent tool starts; after a
      crash, recovery follows :func:`~praxis_grpc.tasks.recovery.plan_recovery`
      (an idempotent task is re-run whether or not WORKING reached the store,
      so its tool starts without waiting for that commit).

Foreign records: an entry node that delegates a task to another agent keeps
a record of it in the same store (owned by that agent, see :meth:`TaskEngine.record`),
so ``get``, ``list``, ``watch`` and ``wait`` serve it like a local task. Such
records never run, queue or count in the load here, and recovery leaves them
to the delegation component (:meth:`TaskEngine.foreign_unfinished`).

Everything here runs on one asyncio event loop; no method is thread-safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from praxis_grpc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ToolError,
    quote,
    quote_all,
)
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.journal import GroupCommit
from praxis_grpc.tasks.model import Reason, Submission, Task, TaskError, TaskState
from praxis_grpc.tasks.recovery import Action, plan_recovery
from praxis_grpc.tasks.results import checked_result
from praxis_grpc.tasks.store import (
    Cursor,
    DuplicateTask,
    TaskStore,
    TaskStoreError,
    UnknownTask,
    Write,
    WriteResult,
)
from praxis_grpc.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

__all__ = ["EngineLimits", "EngineLoad", "RecoveryReport", "Submission", "TaskEngine"]


def utcnow() -> datetime:
    """The wall clock in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class EngineLimits:
    """Admission and execution limits (from ``tasks`` in the config)."""

    max_concurrency: int = 8
    queue_limit: int = 1000
    default_timeout: float = 60.0
    max_timeout: float = 3600.0
    # A result's size as a protobuf Struct (see tasks/results.py).
    max_result_bytes: int = 1024 * 1024
    max_attempts: int = 3


@dataclass(frozen=True)
class EngineLoad:
    """The engine's load right now."""

    in_flight: int
    queued: int
    capacity: int
    queue_limit: int


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`TaskEngine.start` did with the tasks a previous run left."""

    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()


class TaskEngine:
    """Runs tasks on this node with bounded queueing and concurrency.

    Args:
        journal: The group commit of ``store`` to write through, shared with
            other components of the node; by default the engine makes its own.

    Raises:
        ValueError: ``journal`` writes to another store.
    """

    def __init__(
        self,
        *,
        store: TaskStore,
        tools: ToolRegistry,
        limits: EngineLimits,
        metrics: Metrics,
        agent_id: str,
        agent_tags: frozenset[str] = frozenset(),
        clock: Clock = utcnow,
        journal: GroupCommit | None = None,
    ) -> None:
        if journal is not None and journal.store is not store:
            raise ValueError("the journal must write to the engine's task store")
        self._store = store
        self._journal = GroupCommit(store) if journal is None else journal
        self._tools = tools
        self._limits = limits
        self._metrics = metrics
        self._agent_id = agent_id
        self._agent_tags = agent_tags
        self._clock = clock
        self._pending: OrderedDict[str, Task] = OrderedDict()
        self._admitting = 0
        # Unfinished tasks (local and foreign records), so reads of them skip the store.
        self._live: dict[str, Task] = {}
        # Ids from new_task_id() that no stored task has yet.
        self._fresh: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_reasons: dict[str, str] = {}
        # None tells a watcher that its (foreign) task was forgotten.
        self._watchers: dict[str, set[asyncio.Queue[Task | None]]] = {}
        self._waiters: dict[str, list[asyncio.Future[Task]]] = {}
        self._accepting = False
        self._dispatching = False
        self._mean_duration = 0.1
        self._counters: dict[tuple[str, TaskState], Any] = {}
        self._histograms: dict[str, Any] = {}

    @property
    def accepting(self) -> bool:
        """True while new submissions are admitted."""
        return self._accepting

    @property
    def agent_id(self) -> str:
        """The agent this engine runs tasks for: the owner of its local tasks."""
        return self._agent_id

    @property
    def limits(self) -> EngineLimits:
        """The admission and execution limits this engine enforces."""
        return self._limits

    @property
    def journal(self) -> GroupCommit:
        """The group commit every write of this engine goes through; components
        writing to the same store share it so their writes share commits."""
        return self._journal

    def start(self) -> RecoveryReport:
        """Recover what a previous run left unfinished, then admit and dispatch."""
        report = self._recover()
        self._accepting = True
        self._dispatching = True
        self._dispatch()
        return report

    def set_accepting(self, accepting: bool) -> None:
        """Admit (True) or refuse (False, draining) new submissions."""
        self._accepting = accepting

    def load(self) -> EngineLoad:
        """Current in-flight and queued counts against their limits."""
        return EngineLoad(
            in_flight=len(self._running),
            queued=len(self._pending),
            capacity=self._limits.max_concurrency,
            queue_limit=self._limits.queue_limit,
        )

    async def submit(
        self,
        submission: Submission,
        *,
        task_id: str | None = None,
        origin_agent_id: str = "",
        prior_attempts: int = 0,
        dispatched: bool = False,
    ) -> tuple[Task, bool]:
        """Validate, commit and enqueue a task.

        The task is queued even if the caller is cancelled while the commit is
        in flight: once written, a task is never left behind. A submission
        that matches an existing task by ``task_id`` or by idempotency key is
        answered with that task even while the node drains or its queue is full.

        Args:
            submission: The request.
            task_id: The id the task must have (a delegating node chooses it),
                as a canonical lowercase UUID; by default a new one. If a task
                with this id exists (local or a foreign record), it is returned.
            origin_agent_id: The agent that accepted the task from its client,
                stored on the task and scoping its idempotency key; empty means
                this agent.
            prior_attempts: Starts the task already made on other agents (a
                re-dispatch); its ``attempt`` counts on from there, so recovery
                sees every start (see ``tasks.max_attempts``).
            dispatched: The submission is another node's dispatch of
                ``task_id`` here, admitted by the caller (in active-passive
                mode: fenced). Only a dispatch adopts an unfinished foreign
                record of that id (see :meth:`_existing`); anything else is
                answered with the record.

        Returns:
            The task and whether it was deduplicated (an existing task with
            this ``task_id``, or with this idempotency key and origin).

        Raises:
            InvalidArgument: malformed task id, tool, arguments or timeout.
            AlreadyExists: the task id or idempotency key belongs to a
                different request (a task stored without a request fingerprint
                matches any request).
            FailedPrecondition: the tool is not offered here, or the node is
                draining or lacks required tags.
            ResourceExhausted: the queue is full.
        """
        _check_task_id(task_id)
        timeout = self._validate(submission)
        origin = origin_agent_id or self._agent_id
        key = submission.idempotency_key
        fingerprint = submission.fingerprint() if key or task_id is not None else ""
        # An id that is not live here is looked up in the store only when this
        # submission would be refused otherwise: the insert below refuses a
        # stored id itself (DuplicateTask), and that path answers like this one.
        admits = self._accepting and len(self._pending) + self._admitting < self._limits.queue_limit
        existing = self._duplicate_of(
            key, task_id, origin, fingerprint, stored_ids=bool(key) or not admits
        )
        if existing is not None:
            return await self._existing(existing, task_id, dispatched)
        if not self._accepting:
            self._metrics.tasks_rejected_total.labels("draining").inc()
            raise FailedPrecondition("node is draining and accepts no new tasks")
        if len(self._pending) + self._admitting >= self._limits.queue_limit:
            self._metrics.tasks_rejected_total.labels("queue_full").inc()
            raise ResourceExhausted(
                f"task queue is full ({self._limits.queue_limit} queued)",
                retry_after=self._retry_after(),
            )
        now = self._clock()
        task = Task(
            task_id=str(uuid.uuid4()) if task_id is None else task_id,
            tool=submission.tool,
            arguments=submission.arguments,
            state=TaskState.SUBMITTED,
            created_at=now,
            updated_at=now,
            owner_agent_id=self._agent_id,
            origin_agent_id=origin,
            idempotency_key=key,
            timeout=timeout,
            tags=submission.tags,
            preferred_agent=submission.preferred_agent,
            attempt=max(prior_attempts, 0),
            request_fingerprint=fingerprint,
        )
        self._admitting += 1
        self._fresh.discard(task.task_id)
        written = self._journal.insert(task)
        written.add_done_callback(lambda future: self._admitted(task, future))
        stored = await written
        if isinstance(stored, DuplicateTask) and task_id is not None:
            # A task with this id was stored before, or a concurrent
            # submission of the same id committed first.
            existing = self._live.get(task_id) or self._store.get(task_id)
            if existing is not None:
                return await self._existing(
                    self._deduplicated(existing, fingerprint, by_id=True), task_id, dispatched
                )
        if isinstance(stored, TaskStoreError):
            raise stored
        assert stored is not None
        if stored.task_id != task.task_id:
            return self._deduplicated(stored, fingerprint), True
        return task, False

    async def _existing(
        self, existing: Task, task_id: str | None, dispatched: bool
    ) -> tuple[Task, bool]:
        """Answer a submission that matched ``existing``.

        A dispatch of a task id this node holds only as an unfinished foreign
        record (kept from when it routed or coordinated the task, and no
        longer followed) is the cluster sending it here to run: this node
        adopts it. Answering with the record instead would leave the task with
        no one running it. Only an admitted dispatch adopts (the fence has
        refused one from a deposed coordinator by then).
        """
        if (
            dispatched
            and existing.task_id == task_id
            and not self._local(existing)
            and not existing.terminal
        ):
            log.info("task %s was dispatched here; running the record kept of it", task_id)
            return await self.adopt(existing), False
        return existing, True

    def new_task_id(self) -> str:
        """A new task id (a random UUID) for a task to submit or record here.

        Until a task is stored under it, the engine knows that no task has it
        and skips the store lookups that :meth:`submit` and :meth:`record`
        otherwise make for a given id.
        """
        task_id = str(uuid.uuid4())
        if len(self._fresh) >= _MAX_FRESH_IDS:
            self._fresh.clear()  # ids issued but never used: they lose the shortcut
        self._fresh.add(task_id)
        return task_id

    def get(self, task_id: str) -> Task:
        """The task's current state, local or a foreign record. Raises NotFound."""
        task = self._live.get(task_id) or self._store.get(task_id)
        if task is None:
            raise NotFound(f"task {quote(task_id)} not found")
        return task

    def foreign_unfinished(self) -> list[Task]:
        """Stored unfinished tasks owned by other agents, oldest first.

        These are the records of tasks this node delegated and still follows;
        recovery leaves them alone so the delegation component can re-attach
        to their owners after a restart.
        """
        return [task for task in self._store.unfinished() if not self._local(task)]

    async def record(self, task: Task, *, durable: bool = True) -> Task:
        """Store the record of a task owned by another agent and notify its readers.

        Inserts ``task`` if its id is new, otherwise updates the stored
        record's lifecycle and owner (see :meth:`TaskStore.update`), through
        the shared journal; returns once committed, like a local state
        change (a cancellation arriving during the commit is re-raised after
        it). Then :meth:`get`, :meth:`watch` and :meth:`wait` see the new
        state. The record never runs here. The caller keeps the lifecycle
        valid (:meth:`Task.mirror`, :meth:`Task.reassign`).

        With ``durable=False`` an already stored record's new state is only
        shown to readers, not written (an intermediate state its owner
        reported: the owner has it durably, and the entry node re-reads it
        after a restart).

        Returns:
            The stored task: ``task``, or, when a new record's idempotency key
            is already held by a task of the same origin, that task (nothing
            is written; compare ``task_id`` to tell).

        Raises:
            ValueError: ``task`` is owned by this agent, or its id is a local
                task's.
            AlreadyExists: the idempotency key of a new record belongs to a
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
        _check_task_id(task_id)
        key = submission.idempotency_key
        if task_id is None and not key:
            return None
        origin = origin_agent_id or self._agent_id
        return self._duplicate_of(key, task_id, origin, submission.fingerprint())

    def _duplicate_of(
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

    async def adopt(self, record: Task) -> Task:
        """Take over a foreign record (its owner was lost): this agent now owns
        and runs it. Committed before it is queued; queue limits do not apply
        to a task that was accepted already."""
        self._foreign(record, "adopted")
        task = record.reassign(self._agent_id, self._clock())
        if task.timeout <= 0:
            # Recorded without a client timeout: this agent's default applies,
            # as it would have to a submission (not "a timeout of 0s").
            task = replace(task, timeout=self._default_timeout(task.tool))
        task = await self._persist(task)
        self._enqueue(task)
        self._dispatch()
        return task

    async def forget(self, task: Task) -> None:
        """Delete the record of a task owned by another agent, once committed.

        Used when every candidate refused a delegated task, so the rejected
        submission leaves nothing behind. Forgetting a record that is not
        stored does nothing. Watchers and waiters of the task get NotFound.

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

    async def wait(self, task_id: str) -> Task:
        """Block until the task is terminal and return it.

        Raises:
            NotFound: No such task, or its foreign record was forgotten.
        """
        task = self.get(task_id)
        if task.terminal:
            return task
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

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """Yield the current state, then every change, ending after the terminal one.

        Raises:
            NotFound: No such task, or its foreign record was forgotten.
        """
        queue: asyncio.Queue[Task | None] = asyncio.Queue()
        current = self.get(task_id)
        watchers = self._watchers.setdefault(task_id, set())
        watchers.add(queue)
        try:
            yield current
            while not current.terminal:
                change = await queue.get()
                if change is None:
                    raise NotFound(f"task {quote(task_id)} not found")
                current = change
                yield current
        finally:
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(task_id, None)

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel a queued or running task; a terminal task is returned unchanged.

        Raises:
            NotFound: No such task.
            FailedPrecondition: The task is a foreign record: only its owner
                can cancel it.
        """
        task = self.get(task_id)
        if task.terminal:
            return task
        if not self._local(task):
            raise FailedPrecondition(
                f"task {task_id} runs on agent {task.owner_agent_id}; cancel it there"
            )
        message = reason or "canceled by client"
        runner = self._running.get(task_id)
        if runner is None:
            self._pending.pop(task_id, None)
            return await self._finish(task, TaskState.CANCELED, TaskError(Reason.CANCELED, message))
        self._cancel_reasons[task_id] = message
        runner.cancel()
        await asyncio.wait({runner})
        return self.get(task_id)

    async def aclose(self, grace: float) -> None:
        """Stop: refuse new tasks, let running ones finish for ``grace`` seconds, then
        interrupt the rest. Queued tasks stay SUBMITTED in the store and run after
        the next start; interrupted ones are handed back the same way when their
        tool is idempotent and end FAILED (INTERRUPTED) otherwise."""
        self._accepting = False
        self._dispatching = False
        running = set(self._running.values())
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        for runner in list(self._running.values()):
            runner.cancel()
        if self._running:
            await asyncio.wait(set(self._running.values()))
        self._journal.flush()
        self._pending.clear()
        self._update_gauges()

    def _validate(self, submission: Submission) -> float:
        if not submission.tool:
            raise InvalidArgument("tool", "is required")
        # The size of the arguments is checked on the wire, where they arrive
        # (api.task_service.submission_from_proto): one limit, in protobuf bytes.
        try:
            tool = self._tools.validate(submission.tool, submission.arguments)
        except NotFound as exc:
            # Not "no such task": this node, asked to run it, cannot (README).
            raise FailedPrecondition(f"no capable agent: {exc.message}") from None
        missing = set(submission.tags) - self._agent_tags
        if missing:
            raise FailedPrecondition(
                f"no capable agent: tags {quote_all(sorted(missing))} are required but this "
                f"node has {sorted(self._agent_tags)}"
            )
        if submission.timeout is None:
            return self._default_timeout(tool.spec.name)
        if submission.timeout <= 0:
            raise InvalidArgument("timeout", "must be positive")
        if submission.timeout > self._limits.max_timeout:
            raise InvalidArgument(
                "timeout",
                f"{submission.timeout:g}s exceeds this node's maximum of "
                f"{self._limits.max_timeout:g}s",
            )
        return submission.timeout

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

    def _default_timeout(self, tool: str) -> float:
        own = self._tools.get(tool).spec.default_timeout if tool in self._tools else None
        return min(own or self._limits.default_timeout, self._limits.max_timeout)

    def _local(self, task: Task) -> bool:
        return task.owner_agent_id == self._agent_id

    def _foreign(self, task: Task, verb: str) -> Task | None:
        """The stored record of foreign ``task``, if any; refuses local tasks."""
        if self._local(task):
            raise ValueError(f"task {task.task_id} is owned by this agent and cannot be {verb}")
        known = self._live.get(task.task_id)
        if known is None and task.task_id not in self._fresh:
            known = self._store.get(task.task_id)
        if known is not None and self._local(known):
            raise ValueError(f"task {task.task_id} is a local task and cannot be {verb}")
        return known

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
        for queue in self._watchers.get(task_id, ()):
            queue.put_nowait(None)
        for future in self._waiters.pop(task_id, ()):
            if not future.done():
                future.set_exception(NotFound(f"task {quote(task_id)} not found"))

    def _admitted(self, task: Task, written: asyncio.Future[Any]) -> None:
        self._admitting -= 1
        if written.cancelled() or written.exception() is not None:
            return
        if written.result() is task:
            self._count(task)
            self._enqueue(task)
            self._dispatch()

    def _retry_after(self) -> float:
        backlog = len(self._pending) / self._limits.max_concurrency
        return min(max(backlog * self._mean_duration, 0.1), 30.0)

    def _recover(self) -> RecoveryReport:
        def idempotent(tool: str) -> bool | None:
            return self._tools.get(tool).spec.idempotent if tool in self._tools else None

        outcome: dict[Action, list[str]] = {action: [] for action in Action}
        now = self._clock()
        local: list[Task] = []
        for task in self._store.unfinished():
            if task.unreadable:
                # Running or re-dispatching it would act on placeholders.
                error = TaskError(
                    Reason.STORED_VALUE_UNREADABLE,
                    "the stored task is damaged and cannot run: " + "; ".join(task.unreadable),
                )
                self._write_now(task.finish_unsuccessfully(TaskState.FAILED, error, now))
                outcome[Action.FAIL].append(task.task_id)
            elif self._local(task):
                local.append(task)
            else:  # a foreign record: the delegation component re-attaches to it
                self._live[task.task_id] = task
        for decision in plan_recovery(local, idempotent, self._limits.max_attempts):
            task = decision.task
            if decision.action is Action.REQUEUE:
                if task.state is TaskState.WORKING:
                    task = self._write_now(task.requeue(now))
                self._enqueue(task)
            else:
                assert decision.error is not None
                state = TaskState.FAILED if decision.action is Action.FAIL else TaskState.REJECTED
                self._write_now(task.finish_unsuccessfully(state, decision.error, now))
            outcome[decision.action].append(task.task_id)
        report = RecoveryReport(*(tuple(outcome[a]) for a in Action))
        if any(outcome.values()):
            log.info(
                "recovered tasks: %d requeued, %d failed, %d rejected",
                len(report.requeued),
                len(report.failed),
                len(report.rejected),
            )
        return report

    def _enqueue(self, task: Task) -> None:
        self._pending[task.task_id] = task
        self._live[task.task_id] = task

    def _dispatch(self) -> None:
        while (
            self._dispatching
            and self._pending
            and len(self._running) < self._limits.max_concurrency
        ):
            task_id, task = self._pending.popitem(last=False)
            runner = asyncio.create_task(self._execute(task), name=f"task-{task_id}")
            self._running[task_id] = runner
        self._update_gauges()

    async def _execute(self, task: Task) -> None:
        tool = self._tools.get(task.tool)
        loop = asyncio.get_running_loop()
        started = loop.time()
        if task.timeout <= 0:
            # Stores of older versions lost an adopted task's timeout (0 s):
            # run it with the default rather than fail it at once.
            task = dataclasses.replace(task, timeout=self._default_timeout(task.tool))
        try:
            task = task.start(self._clock())
            if tool.spec.idempotent:
                # Recovery re-runs an idempotent task whether or not WORKING
                # reached the store, so the tool need not wait for that commit.
                self._journal.update(task)
                self._published(task)
            else:
                # Durable before the tool can have any effect: recovery must know.
                task = await self._persist(task)
            async with asyncio.timeout(task.timeout):
                result = await tool.run(dict(task.arguments))
            stored = checked_result(result, self._limits.max_result_bytes)
            await self._persist(task.complete(stored, self._clock()))
        except TimeoutError:
            expired = TaskError(
                Reason.DEADLINE_EXCEEDED, f"task exceeded its timeout of {task.timeout:g}s"
            )
            await self._finish(task, TaskState.FAILED, expired)
        except ToolError as exc:
            await self._finish(task, TaskState.FAILED, TaskError(exc.reason, exc.message))
        except asyncio.CancelledError:
            message = self._cancel_reasons.pop(task.task_id, None)
            if message is None:
                self._interrupt(task)
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._finish(task, TaskState.CANCELED, TaskError(Reason.CANCELED, message))
        except Exception as exc:
            log.exception("tool %s failed on task %s", task.tool, task.task_id)
            error = TaskError(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
            await self._finish(task, TaskState.FAILED, error)
        finally:
            elapsed = loop.time() - started
            self._mean_duration = 0.9 * self._mean_duration + 0.1 * elapsed
            self._durations(task.tool).observe(elapsed)
            del self._running[task.task_id]
            self._dispatch()

    def _interrupt(self, task: Task) -> None:
        """Shutdown reached a running task: hand it back or fail it (synchronously)."""
        now = self._clock()
        current = self.get(task.task_id)
        if current.terminal:
            return
        if self._tools.get(task.tool).spec.idempotent:
            self._write_now(current.requeue(now))
            return
        error = TaskError(
            Reason.INTERRUPTED,
            f"the node shut down while the task was running; tool {task.tool!r} "
            "is not idempotent, so it will not run again",
        )
        self._write_now(current.finish_unsuccessfully(TaskState.FAILED, error, now))

    async def _finish(self, task: Task, state: TaskState, error: TaskError) -> Task:
        current = self.get(task.task_id)
        if current.terminal:  # it finished before the cancellation was handled
            return current
        return await self._persist(current.finish_unsuccessfully(state, error, self._clock()))

    async def _persist(self, task: Task) -> Task:
        """Commit ``task`` (group commit), then make it visible to readers,
        watchers and waiters. A state change that started is always finished:
        a cancellation arriving during the commit is re-raised after it."""
        write = self._journal.update(task)
        try:
            result = await write
        except asyncio.CancelledError:
            result = await write
            self._record(result, task)
            raise
        self._record(result, task)
        return task

    def _record(self, result: object, task: Task) -> None:
        if isinstance(result, TaskStoreError):
            raise result
        self._published(task)

    def _write_now(self, task: Task) -> Task:
        result = self._journal.write_now(Write("update", task))
        if isinstance(result, TaskStoreError):
            raise result
        self._published(task)
        return task

    def _published(self, task: Task) -> None:
        self._count(task)
        self._notify(task)

    def _notify(self, task: Task) -> None:
        if task.terminal:
            self._live.pop(task.task_id, None)
        else:
            self._live[task.task_id] = task
        for queue in self._watchers.get(task.task_id, ()):
            queue.put_nowait(task)
        if task.terminal:
            for future in self._waiters.pop(task.task_id, ()):
                if not future.done():
                    future.set_result(task)

    def _count(self, task: Task) -> None:
        key = (task.tool, task.state)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._metrics.tasks_total.labels(task.tool, task.state.name)
            self._counters[key] = counter
        counter.inc()

    def _durations(self, tool: str) -> Any:
        histogram = self._histograms.get(tool)
        if histogram is None:
            histogram = self._metrics.task_duration_seconds.labels(tool)
            self._histograms[tool] = histogram
        return histogram

    def _update_gauges(self) -> None:
        self._metrics.task_queue_depth.set(len(self._pending))
        self._metrics.tasks_in_flight.set(len(self._running))


# Bounds the ids new_task_id() issued that were never used.
_MAX_FRESH_IDS = 1024


def _check_task_id(task_id: str | None) -> None:
    if task_id is not None and not _canonical_uuid(task_id):
        raise InvalidArgument(
            "task_id",
            f"{quote(task_id)} must be a UUID in canonical (lowercase, hyphenated) form",
        )


def _canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
