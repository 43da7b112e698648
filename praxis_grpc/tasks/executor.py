"""The local executor: runs this agent's own tasks, bounded, and recovers them.

Contract of :class:`LocalExecutor`:
    - :meth:`~LocalExecutor.submit` validates a submission (tool, arguments,
      tags, timeout), answers a repeat of an earlier request from the ledger
      (even while draining or full), refuses a new one while the node drains
      (FAILED_PRECONDITION) or its queue is full (RESOURCE_EXHAUSTED with a
      retry hint), and otherwise has the ledger commit the task before it
      returns; a committed task is queued even if the caller is cancelled.
    - At most ``max_concurrency`` tasks run at once, in arrival order, each
      within its timeout (then FAILED with DEADLINE_EXCEEDED).
    - WORKING is committed before a non-idempotent tool starts; an idempotent
      tool starts at once (recovery re-runs it whether or not WORKING reached
      the store). Every state change is written through the ledger.
    - A new idempotent task with a free slot, an empty queue, no idempotency
      key and an id no task holds here starts before its insert commits: its
      states fold into the insert (one write), nothing of it is shown before
      that commit, and if the insert fails its run is void. An
      :class:`~praxis_grpc.tools.base.InstantTool` then runs in the
      submitting call, with no runner, and the submission returns the
      finished task once the insert committed.
    - :meth:`~LocalExecutor.cancel` ends a queued task CANCELED at once and
      interrupts a running one, which then ends CANCELED.
    - :meth:`~LocalExecutor.start` first recovers what a previous run left
      unfinished (:func:`~praxis_grpc.tasks.recovery.plan_recovery`): requeued,
      failed, or rejected; a task already started ``tasks.max_attempts`` times
      is poisoned (FAILED), so no task crashes the node forever
      (tasks/restart.py applies the plan).
    - Tools that compute for long run in the tools' worker pool
      (tools/workers.py); the executor only awaits them, so it never blocks
      the event loop.
Runners are owned by one :class:`asyncio.TaskGroup`, hosted by a task that
:meth:`~LocalExecutor.start` creates and :meth:`~LocalExecutor.aclose` ends;
at most ``max_concurrency`` exist at once. Runs on one event loop; not
thread-safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from typing import Any

from praxis_grpc.errors import FailedPrecondition, NotFound, ResourceExhausted, ToolError
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.admission import EngineLimits, EngineLoad, SubmissionRules, check_task_id
from praxis_grpc.tasks.ids import new_task_id
from praxis_grpc.tasks.ledger import Clock, Ledger, utcnow
from praxis_grpc.tasks.model import Reason, Submission, Task, TaskError, TaskState
from praxis_grpc.tasks.restart import RecoveryReport, recover
from praxis_grpc.tasks.results import checked_result
from praxis_grpc.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

__all__ = ["EngineLimits", "EngineLoad", "LocalExecutor", "RecoveryReport"]


class LocalExecutor:
    """Runs this agent's tasks with bounded queueing and concurrency.

    Args:
        ledger: Where every task is recorded and read; the executor is its
            only writer of local tasks' states.
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        tools: ToolRegistry,
        limits: EngineLimits,
        metrics: Metrics,
        agent_tags: frozenset[str] = frozenset(),
        clock: Clock = utcnow,
    ) -> None:
        self._ledger = ledger
        self._rules = SubmissionRules(tools, limits, agent_tags)
        self._tools = tools
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._pending: OrderedDict[str, Task] = OrderedDict()
        self._admitting = 0
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._accepting = False
        self._dispatching = False
        self._group: asyncio.TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._mean_duration = 0.1
        self._histograms: dict[str, Any] = {}
        # Read when scraped: setting them at every start and end of a task
        # cost ~12 µs per task.
        metrics.task_queue_depth.set_function(lambda: len(self._pending))
        metrics.tasks_in_flight.set_function(lambda: len(self._running))

    @property
    def accepting(self) -> bool:
        """True while new submissions are admitted."""
        return self._accepting

    @property
    def limits(self) -> EngineLimits:
        """The admission and execution limits this executor enforces."""
        return self._limits

    def start(self) -> RecoveryReport:
        """Recover what a previous run left unfinished, then admit and run tasks.

        Needs a running event loop; runners start on its next iterations.
        """
        report = self._recover()
        self._stopped.clear()
        self._accepting = True
        self._dispatching = True
        self._host = asyncio.create_task(self._serve(), name="local-executor")
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
        """Validate, commit and queue a task (see :meth:`TaskEngine.submit`)."""
        if task_id is not None and not self._ledger.issued(task_id):
            check_task_id(task_id)
        timeout = self._rules.validate(submission)
        origin = origin_agent_id or self._ledger.agent_id
        key = submission.idempotency_key
        fingerprint = submission.fingerprint() if key or task_id is not None else ""
        # An id that is not live here is looked up in the store only when this
        # submission would be refused otherwise: the insert below refuses a
        # stored id itself (DuplicateTask), and that path answers like this one.
        admits = self._accepting and len(self._pending) + self._admitting < self._limits.queue_limit
        existing = self._ledger.duplicate_of(
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
            task_id=new_task_id() if task_id is None else task_id,
            tool=submission.tool,
            arguments=submission.arguments,
            state=TaskState.SUBMITTED,
            created_at=now,
            updated_at=now,
            owner_agent_id=self._ledger.agent_id,
            origin_agent_id=origin,
            idempotency_key=key,
            timeout=timeout,
            tags=submission.tags,
            preferred_agent=submission.preferred_agent,
            submitter=submission.submitter,
            target_agent=submission.target_agent,
            attempt=max(prior_attempts, 0),
            request_fingerprint=fingerprint,
        )
        if (
            not key
            and self._runs_at_once(task)
            and (task_id is None or self._ledger.is_unused(task_id))
        ):
            # Started before its insert commits: its states fold into the
            # insert (one write), and nothing of it is shown before that commit.
            written = self._ledger.insert(task)
            outcome = self._start_at_once(task, written)
            stored, deduplicated = self._ledger.inserted(task, await written)
            if outcome is not None and stored is task:
                return outcome, False  # committed with the insert
            return stored, deduplicated
        self._admitting += 1
        written = self._ledger.insert(task)
        written.then(lambda future: self._admitted(task, future))
        stored, deduplicated = self._ledger.inserted(task, await written)
        if deduplicated:
            return await self._existing(stored, task_id, dispatched)
        return stored, False

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
            and not self._ledger.owns(existing)
            and not existing.terminal
        ):
            log.info("task %s was dispatched here; running the record kept of it", task_id)
            return await self.adopt(existing), False
        return existing, True

    async def adopt(self, record: Task) -> Task:
        """Take over a foreign record (its owner was lost) and run it here.
        Committed before it is queued; queue limits do not apply to a task
        that was accepted already. Raises like :meth:`Ledger.adopt`."""
        task = await self._ledger.adopt(
            record, default_timeout=self._rules.default_timeout(record.tool)
        )
        self._pending[task.task_id] = task
        self._dispatch()
        return task

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel a queued or running task; a terminal task is returned unchanged.

        Raises:
            NotFound: No such task.
            FailedPrecondition: The task is a foreign record: only its owner
                can cancel it.
        """
        task = self._ledger.get(task_id)
        if task.terminal:
            return task
        if not self._ledger.owns(task):
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
        if self._running.get(task_id) is runner:
            # Cancelled before its first step: the coroutine never ran, so
            # neither did its clean-up. Free the slot and record the outcome here.
            del self._running[task_id]
            self._cancel_reasons.pop(task_id, None)
            self._dispatch()
            return await self._finish(task, TaskState.CANCELED, TaskError(Reason.CANCELED, message))
        return self._ledger.get(task_id)

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
        self._stopped.set()
        if self._host is not None:
            await asyncio.wait({self._host})
        self._ledger.journal.flush()
        self._pending.clear()

    def _admitted(self, task: Task, written: asyncio.Future[Any]) -> None:
        self._admitting -= 1
        if written.cancelled() or written.exception() is not None:
            return
        if written.result() is task:
            self._pending[task.task_id] = task
            self._dispatch()

    def _runs_at_once(self, task: Task) -> bool:
        """True if new ``task`` may start before its insert commits (if,
        besides, its id is unused here and it has no idempotency key, so its
        insert can only fail with the store): its tool is idempotent (had
        it run while the insert fails, running again is harmless); nothing
        arrived before it is waiting, and a slot is free."""
        return (
            self._group is not None
            and self._dispatching
            and not self._pending
            and not self._admitting
            and len(self._running) < self._limits.max_concurrency
            and task.tool in self._tools
            and self._tools.get(task.tool).spec.idempotent
        )

    def _start(self, task: Task, inserting: asyncio.Future[Any] | None = None) -> None:
        assert self._group is not None
        runner = self._group.create_task(self._run(task, inserting), name=f"task-{task.task_id}")
        self._running[task.task_id] = runner

    def _start_at_once(self, task: Task, inserting: asyncio.Future[Any]) -> Task | None:
        """Start new ``task`` before its insert commits (see :meth:`submit`).

        An :class:`~praxis_grpc.tools.base.InstantTool` runs here, in the
        submitting call, with no runner: its outcome folds into the insert,
        shown when that commits, and is returned. Any other tool runs in a
        runner (:meth:`_start`; returns None)."""
        # An InstantTool (the attribute is cheaper to test than the protocol).
        run_now = getattr(self._tools.get(task.tool), "run_now", None)
        if run_now is None:
            self._start(task, inserting)
            return None
        clock = asyncio.get_running_loop().time
        started = clock()
        task = task.start(self._clock())
        self._ledger.update_unread(task)  # folds into the insert
        try:
            result = run_now(dict(task.arguments))
            stored = checked_result(result, self._limits.max_result_bytes)
            outcome = task.complete(stored, self._clock())
        except ToolError as exc:
            error = TaskError(exc.reason, exc.message)
            outcome = task.finish_unsuccessfully(TaskState.FAILED, error, self._clock())
        except Exception as exc:
            log.exception("tool %s failed on task %s", task.tool, task.task_id)
            error = TaskError(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
            outcome = task.finish_unsuccessfully(TaskState.FAILED, error, self._clock())
        self._ledger.finish_unread(outcome)
        self._ran(task.tool, clock() - started)
        return outcome

    def _retry_after(self) -> float:
        backlog = len(self._pending) / self._limits.max_concurrency
        return min(max(backlog * self._mean_duration, 0.1), 30.0)

    def _recover(self) -> RecoveryReport:
        def idempotent(tool: str) -> bool | None:
            return self._tools.get(tool).spec.idempotent if tool in self._tools else None

        report, requeued = recover(self._ledger, idempotent, self._limits.max_attempts, self._clock)
        for task in requeued:
            self._pending[task.task_id] = task
        return report

    async def _serve(self) -> None:
        """Host the task group that owns the runners, until :meth:`aclose`."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._dispatch()
            try:
                await self._stopped.wait()
            finally:
                # Also when cancelled from outside: runners ending now start no others.
                self._group = None

    def _dispatch(self) -> None:
        group = self._group
        while (
            group is not None
            and self._dispatching
            and self._pending
            and len(self._running) < self._limits.max_concurrency
        ):
            _, task = self._pending.popitem(last=False)
            self._start(task)

    async def _run(self, task: Task, inserting: asyncio.Future[Any] | None) -> None:
        # A failure to record an outcome must not abort the group (and every
        # other runner with it): the task stays as last recorded.
        if inserting is not None and inserting.done():
            if _refused(inserting) or inserting.result() is not task:
                # Not stored (the store failed, or the id was taken): nothing to run.
                del self._running[task.task_id]
                self._dispatch()
                return
            inserting = None
        try:
            await self._execute(task, inserting)
        except Exception:
            log.exception("task %s: its outcome could not be recorded", task.task_id)

    async def _execute(self, task: Task, inserting: asyncio.Future[Any] | None = None) -> None:
        """Run ``task``; ``inserting``: the pending insert of a task started
        before it committed (see :meth:`submit`)."""
        tool = self._tools.get(task.tool)
        loop = asyncio.get_running_loop()
        started = loop.time()
        if task.timeout <= 0:
            # Stores of older versions lost an adopted task's timeout (0 s):
            # run it with the default rather than fail it at once.
            task = dataclasses.replace(task, timeout=self._rules.default_timeout(task.tool))
        try:
            task = task.start(self._clock())
            if inserting is not None and not inserting.done():
                self._ledger.update_unread(task)  # folds into the insert
            elif tool.spec.idempotent:
                # Recovery re-runs an idempotent task whether or not WORKING
                # reached the store, so the tool need not wait for that commit.
                self._ledger.update_nowait(task)
            else:
                # Durable before the tool can have any effect: recovery must know.
                task = await self._ledger.persist(task)
            async with asyncio.timeout(task.timeout):
                result = await tool.run(dict(task.arguments))
            stored = checked_result(result, self._limits.max_result_bytes)
            await self._ledger.persist(task.complete(stored, self._clock()))
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
            if _refused(inserting):  # its outcome failed with its insert: nothing to record
                log.warning("task %s was not stored (%s); its run is void", task.task_id, exc)
                return
            log.exception("tool %s failed on task %s", task.tool, task.task_id)
            error = TaskError(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
            await self._finish(task, TaskState.FAILED, error)
        finally:
            self._ran(task.tool, loop.time() - started)
            del self._running[task.task_id]
            self._cancel_reasons.pop(task.task_id, None)
            self._dispatch()

    def _interrupt(self, task: Task) -> None:
        """Shutdown reached a running task: hand it back or fail it (synchronously)."""
        now = self._clock()
        try:
            current = self._ledger.get(task.task_id)
        except NotFound:  # started before its insert committed: it stays SUBMITTED
            return
        if current.terminal:
            return
        if self._tools.get(task.tool).spec.idempotent:
            self._ledger.write_now(current.requeue(now))
            return
        error = TaskError(
            Reason.INTERRUPTED,
            f"the node shut down while the task was running; tool {task.tool!r} "
            "is not idempotent, so it will not run again",
        )
        self._ledger.write_now(current.finish_unsuccessfully(TaskState.FAILED, error, now))

    async def _finish(self, task: Task, state: TaskState, error: TaskError) -> Task:
        try:
            current = self._ledger.get(task.task_id)
        except NotFound:  # started before its insert committed: no one else changed it
            current = task
        if current.terminal:  # it finished before the cancellation was handled
            return current
        return await self._ledger.persist(
            current.finish_unsuccessfully(state, error, self._clock())
        )

    def _ran(self, tool: str, elapsed: float) -> None:
        """Count a run of ``tool`` that took ``elapsed`` seconds."""
        self._mean_duration = 0.9 * self._mean_duration + 0.1 * elapsed
        histogram = self._histograms.get(tool)
        if histogram is None:
            histogram = self._metrics.task_duration_seconds.labels(tool)
            self._histograms[tool] = histogram
        histogram.observe(elapsed)


def _refused(inserting: asyncio.Future[Any] | None) -> bool:
    """True if ``inserting`` (a runner's pending insert, if any) failed."""
    return inserting is not None and inserting.done() and inserting.exception() is not None
