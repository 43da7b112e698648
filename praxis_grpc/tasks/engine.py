"""The task engine: this node's task ledger and local executor, built together.

Two components, one job each:
    - :class:`~praxis_grpc.tasks.ledger.Ledger` (:attr:`TaskEngine.ledger`):
      the one write path to the task store (group commit), dedup by task id
      and idempotency key, watch/wait notifications, and the records of tasks
      owned by other agents (record, forget, adopt).
    - :class:`~praxis_grpc.tasks.executor.LocalExecutor`
      (:attr:`TaskEngine.executor`): the bounded queue, concurrency limit,
      deadlines, cancellation, recovery and poisoning of this agent's tasks.

Delivery on one node:
    - A task is committed to the store before :meth:`TaskEngine.submit`
      returns, and every state change is committed before anyone is told of
      it, so what a client saw survives a crash of the process.
    - A task with an idempotency key is accepted at most once per key and
      origin (the agent that accepted it from its client); a repeated
      submission returns the first task (``deduplicated``). So is a task
      submitted with an explicit ``task_id``, once per id.
    - WORKING is committed before a non-idempotent tool starts; after a
      crash, recovery follows :func:`~praxis_grpc.tasks.recovery.plan_recovery`.

Foreign records (:meth:`TaskEngine.record`) are served by ``get``, ``list``,
``watch`` and ``wait`` like local tasks but never run, queue or count in the
load here; recovery leaves them to the delegation component
(:meth:`TaskEngine.foreign_unfinished`). Everything runs on one asyncio event
loop; no method is thread-safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Coroutine, Sequence
from typing import Any

from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.admission import EngineLimits
from praxis_grpc.tasks.executor import EngineLoad, LocalExecutor, RecoveryReport
from praxis_grpc.tasks.journal import GroupCommit
from praxis_grpc.tasks.ledger import Clock, Ledger, utcnow
from praxis_grpc.tasks.model import Submission, Task, TaskState
from praxis_grpc.tasks.store import TaskStore
from praxis_grpc.tools.registry import ToolRegistry

__all__ = ["EngineLimits", "EngineLoad", "RecoveryReport", "Submission", "TaskEngine"]


class TaskEngine:
    """Runs tasks on this node with bounded queueing and concurrency, and keeps
    the records of the tasks it delegated.

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
        self._ledger = Ledger(
            store=store, metrics=metrics, agent_id=agent_id, clock=clock, journal=journal
        )
        self._executor = LocalExecutor(
            ledger=self._ledger,
            tools=tools,
            limits=limits,
            metrics=metrics,
            agent_tags=agent_tags,
            clock=clock,
        )

    @property
    def ledger(self) -> Ledger:
        """The task records: writes, dedup, notifications, foreign records."""
        return self._ledger

    @property
    def executor(self) -> LocalExecutor:
        """The runner of this agent's tasks."""
        return self._executor

    @property
    def accepting(self) -> bool:
        """True while new submissions are admitted."""
        return self._executor.accepting

    @property
    def agent_id(self) -> str:
        """The agent this engine runs tasks for: the owner of its local tasks."""
        return self._ledger.agent_id

    @property
    def limits(self) -> EngineLimits:
        """The admission and execution limits this engine enforces."""
        return self._executor.limits

    @property
    def journal(self) -> GroupCommit:
        """The group commit every write of this engine goes through; components
        writing to the same store share it so their writes share commits."""
        return self._ledger.journal

    def start(self) -> RecoveryReport:
        """Recover what a previous run left unfinished, then admit and dispatch."""
        return self._executor.start()

    def set_accepting(self, accepting: bool) -> None:
        """Admit (True) or refuse (False, draining) new submissions."""
        self._executor.set_accepting(accepting)

    def load(self) -> EngineLoad:
        """Current in-flight and queued counts against their limits."""
        return self._executor.load()

    def submit(
        self,
        submission: Submission,
        *,
        task_id: str | None = None,
        origin_agent_id: str = "",
        prior_attempts: int = 0,
        dispatched: bool = False,
    ) -> Coroutine[Any, Any, tuple[Task, bool]]:
        """Validate, commit and enqueue a task (a coroutine to await: the
        executor's own, with no coroutine of this method around it).

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
                record of that id; anything else is answered with the record.

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
        return self._executor.submit(
            submission,
            task_id=task_id,
            origin_agent_id=origin_agent_id,
            prior_attempts=prior_attempts,
            dispatched=dispatched,
        )

    def new_task_id(self) -> str:
        """A new task id; see :meth:`Ledger.new_task_id`."""
        return self._ledger.new_task_id()

    def get(self, task_id: str) -> Task:
        """The task's current state, local or a foreign record. Raises NotFound."""
        return self._ledger.get(task_id)

    def foreign_unfinished(self) -> list[Task]:
        """Stored unfinished tasks owned by other agents; see :meth:`Ledger.foreign_unfinished`."""
        return self._ledger.foreign_unfinished()

    async def record(self, task: Task, *, durable: bool = True) -> Task:
        """Store the record of a task owned by another agent; see :meth:`Ledger.record`."""
        return await self._ledger.record(task, durable=durable)

    def find_duplicate(
        self, submission: Submission, task_id: str | None = None, origin_agent_id: str = ""
    ) -> Task | None:
        """The task an equal earlier submission created; see :meth:`Ledger.find_duplicate`."""
        return self._ledger.find_duplicate(submission, task_id, origin_agent_id)

    async def adopt(self, record: Task) -> Task:
        """Take over a foreign record and run it here; see :meth:`LocalExecutor.adopt`."""
        return await self._executor.adopt(record)

    async def forget(self, task: Task) -> None:
        """Delete the record of a foreign task; see :meth:`Ledger.forget`."""
        await self._ledger.forget(task)

    def list(
        self,
        *,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        page_token: str = "",
    ) -> tuple[Sequence[Task], str]:
        """One page of tasks, newest first, and the token of the next page ('' at the end)."""
        return self._ledger.list(states=states, tool=tool, limit=limit, page_token=page_token)

    async def wait(self, task_id: str) -> Task:
        """Block until the task is terminal and return it; see :meth:`Ledger.wait`."""
        return await self._ledger.wait(task_id)

    def watch(self, task_id: str) -> AsyncIterator[Task]:
        """The task's current state, then every change; see :meth:`Ledger.watch`."""
        return self._ledger.watch(task_id)

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel a queued or running task; see :meth:`LocalExecutor.cancel`."""
        return await self._executor.cancel(task_id, reason)

    async def aclose(self, grace: float) -> None:
        """Stop running tasks; see :meth:`LocalExecutor.aclose`."""
        await self._executor.aclose(grace)
