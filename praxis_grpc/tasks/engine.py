"""The local task engine: admission, queue, execution, cancellation, recovery.

Delivery on one node:
    - A task is committed to the store before :meth:`TaskEngine.submit`
      returns, and every state change is committed before anyone is told of
      it, so what a client saw survives a crash of the process. Writes of
      concurrent tasks share commits (:class:`~praxis_grpc.tasks.journal.GroupCommit`).
    - A task with an idempotency key is accepted at most once per key; a
      repeated submission returns the first task (``deduplicated``).
    - WORKING is committed before a non-idempotent tool starts; after a
      crash, recovery follows :func:`~praxis_grpc.tasks.recovery.plan_recovery`
      (an idempotent task is re-run whether or not WORKING reached the store,
      so its tool starts without waiting for that commit).

Everything here runs on one asyncio event loop; no method is thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from praxis_grpc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ToolError,
)
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.journal import GroupCommit
from praxis_grpc.tasks.model import Reason, Submission, Task, TaskError, TaskState
from praxis_grpc.tasks.recovery import Action, plan_recovery
from praxis_grpc.tasks.store import Cursor, TaskStore, TaskStoreError, Write
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
    max_argument_bytes: int = 1024 * 1024


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
    """Runs tasks on this node with bounded queueing and concurrency."""

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
    ) -> None:
        self._store = store
        self._journal = GroupCommit(store)
        self._tools = tools
        self._limits = limits
        self._metrics = metrics
        self._agent_id = agent_id
        self._agent_tags = agent_tags
        self._clock = clock
        self._pending: OrderedDict[str, Task] = OrderedDict()
        self._admitting = 0
        # Unfinished tasks of this process, so reads of live tasks skip the store.
        self._live: dict[str, Task] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._watchers: dict[str, set[asyncio.Queue[Task]]] = {}
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

    async def submit(self, submission: Submission) -> tuple[Task, bool]:
        """Validate, commit and enqueue a task.

        The task is queued even if the caller is cancelled while the commit is
        in flight: once written, a task is never left behind.

        Returns:
            The task and whether it was deduplicated by its idempotency key.

        Raises:
            InvalidArgument: malformed tool, arguments or timeout.
            NotFound: the tool is not offered here.
            AlreadyExists: the idempotency key belongs to a different request.
            FailedPrecondition: the node is draining or lacks required tags.
            ResourceExhausted: the queue is full.
        """
        timeout = self._validate(submission)
        key = submission.idempotency_key
        fingerprint = submission.fingerprint() if key else ""
        if key:
            existing = self._store.find_by_idempotency_key(key)
            if existing is not None:
                return self._deduplicated(existing, fingerprint), True
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
            task_id=str(uuid.uuid4()),
            tool=submission.tool,
            arguments=submission.arguments,
            state=TaskState.SUBMITTED,
            created_at=now,
            updated_at=now,
            owner_agent_id=self._agent_id,
            idempotency_key=key,
            timeout=timeout,
            tags=submission.tags,
            preferred_agent=submission.preferred_agent,
            request_fingerprint=fingerprint,
        )
        self._admitting += 1
        written = self._journal.insert(task)
        written.add_done_callback(lambda future: self._admitted(task, future))
        stored = await asyncio.shield(written)
        if isinstance(stored, TaskStoreError):
            raise stored
        assert stored is not None
        if stored.task_id != task.task_id:
            return self._deduplicated(stored, fingerprint), True
        return task, False

    def get(self, task_id: str) -> Task:
        """The task's current state. Raises NotFound."""
        task = self._live.get(task_id) or self._store.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        return task

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
        """Block until the task is terminal and return it. Raises NotFound."""
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
        """Yield the current state, then every change, ending after the terminal one."""
        queue: asyncio.Queue[Task] = asyncio.Queue()
        current = self.get(task_id)
        watchers = self._watchers.setdefault(task_id, set())
        watchers.add(queue)
        try:
            yield current
            while not current.terminal:
                current = await queue.get()
                yield current
        finally:
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(task_id, None)

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel a queued or running task; a terminal task is returned unchanged."""
        task = self.get(task_id)
        if task.terminal:
            return task
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
        size = len(json.dumps(submission.arguments, separators=(",", ":")))
        if size > self._limits.max_argument_bytes:
            raise InvalidArgument(
                "arguments",
                f"{size} bytes exceeds the limit of {self._limits.max_argument_bytes} bytes",
            )
        tool = self._tools.validate(submission.tool, submission.arguments)
        missing = set(submission.tags) - self._agent_tags
        if missing:
            raise FailedPrecondition(
                f"no capable agent: tags {sorted(missing)} are required but this node "
                f"has {sorted(self._agent_tags)}"
            )
        if submission.timeout is None:
            return min(
                tool.spec.default_timeout or self._limits.default_timeout,
                self._limits.max_timeout,
            )
        if submission.timeout <= 0:
            raise InvalidArgument("timeout", "must be positive")
        if submission.timeout > self._limits.max_timeout:
            raise InvalidArgument(
                "timeout",
                f"{submission.timeout:g}s exceeds this node's maximum of "
                f"{self._limits.max_timeout:g}s",
            )
        return submission.timeout

    def _deduplicated(self, existing: Task, fingerprint: str) -> Task:
        if existing.request_fingerprint and existing.request_fingerprint != fingerprint:
            raise AlreadyExists(
                f"idempotency_key {existing.idempotency_key!r} was already used for a "
                f"different request (task {existing.task_id})"
            )
        return self._live.get(existing.task_id, existing)

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
        for decision in plan_recovery(self._store.unfinished(), idempotent):
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
            await self._persist(task.complete(_json_object(result), self._clock()))
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
            result = await asyncio.shield(write)
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
        if task.terminal:
            self._live.pop(task.task_id, None)
        else:
            self._live[task.task_id] = task
        self._count(task)
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


def _json_object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise ToolError(f"tool returned {type(result).__name__}, expected a JSON object")
    try:
        normalized: dict[str, Any] = json.loads(json.dumps(result, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ToolError(f"tool returned a result that is not JSON: {exc}") from None
    return normalized
