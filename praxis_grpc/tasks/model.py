"""The task state machine. Pure: no I/O, no clock of its own."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from praxis_grpc.tasks.json_values import compact_json


class TaskState(enum.Enum):
    """Lifecycle states, aligned with A2A (values match ``praxis.v1.TaskState``)."""

    SUBMITTED = 1
    WORKING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELED = 5
    REJECTED = 6

    # Members are singletons compared by identity: hashed by identity too, in
    # C, instead of Enum.__hash__'s Python call (several per task: dict keys).
    __hash__ = object.__hash__

    @property
    def terminal(self) -> bool:
        """True for states a task never leaves."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED}
)

# The request fingerprint's canonical form (one encoder, not one per call).
_CANONICAL_JSON = compact_json(sort_keys=True)

_ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    # SUBMITTED -> SUBMITTED is a re-queue after recovery (attempt stays, no-op state).
    TaskState.SUBMITTED: frozenset(
        {TaskState.WORKING, TaskState.CANCELED, TaskState.REJECTED, TaskState.FAILED}
    ),
    # WORKING -> SUBMITTED hands an interrupted idempotent task back to the queue.
    TaskState.WORKING: frozenset(
        {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.SUBMITTED}
    ),
}


class Reason:
    """Machine-readable ``TaskError.reason`` values."""

    TOOL_ERROR = "TOOL_ERROR"
    INTERNAL = "INTERNAL"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELED = "CANCELED"
    INTERRUPTED = "INTERRUPTED"
    TOOL_UNAVAILABLE = "TOOL_UNAVAILABLE"
    # The tool's result cannot be stored (see tasks/results.py); the task FAILED.
    RESULT_INVALID = "RESULT_INVALID"
    RESULT_TOO_LARGE = "RESULT_TOO_LARGE"
    # The task's arguments or result cannot be returned (damaged, or written by
    # an older version) or do not fit a response: reads leave them out and say
    # so with one of these (see wire.py).
    STORED_VALUE_UNREADABLE = "STORED_VALUE_UNREADABLE"
    STORED_VALUE_TOO_LARGE = "STORED_VALUE_TOO_LARGE"
    # Started ``tasks.max_attempts`` times without finishing: it is not run again.
    POISONED = "POISONED"


class InvalidTransition(Exception):
    """A state change the state machine forbids (a bug, never a client error)."""


@dataclass(frozen=True)
class TaskError:
    """Why a task did not complete."""

    reason: str
    message: str


@dataclass(frozen=True)
class Task:
    """One task and its current state. Immutable: transitions return a copy."""

    task_id: str
    tool: str
    arguments: dict[str, Any]
    state: TaskState
    created_at: datetime
    updated_at: datetime
    owner_agent_id: str = ""
    # The agent that accepted the task from its client; idempotency keys are scoped to it.
    origin_agent_id: str = ""
    idempotency_key: str = ""
    timeout: float = 0.0
    tags: tuple[str, ...] = ()
    preferred_agent: str = ""
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    # The name of the API token the task was submitted with ("" without auth).
    submitter: str = ""
    # The only agent the task may run on ("" for any): it is never moved elsewhere.
    target_agent: str = ""
    request_fingerprint: str = field(default="", compare=False)
    # Set only by a store reading a damaged row: why a stored field could not
    # be decoded ("arguments: ..."); that field holds a placeholder ({},
    # None or ()) and must not be acted on.
    unreadable: tuple[str, ...] = ()

    @property
    def terminal(self) -> bool:
        """True once the task can no longer change."""
        return self.state.terminal

    def start(self, now: datetime) -> Task:
        """SUBMITTED -> WORKING; counts the attempt."""
        self._check(TaskState.WORKING)
        return self._evolved(
            state=TaskState.WORKING, started_at=now, updated_at=now, attempt=self.attempt + 1
        )

    def complete(self, result: dict[str, Any], now: datetime) -> Task:
        """WORKING -> COMPLETED with ``result``."""
        self._check(TaskState.COMPLETED)
        return self._evolved(
            state=TaskState.COMPLETED, result=result, updated_at=now, finished_at=now
        )

    def finish_unsuccessfully(self, state: TaskState, error: TaskError, now: datetime) -> Task:
        """-> FAILED, CANCELED or REJECTED with ``error``."""
        if state not in (TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED):
            raise InvalidTransition(f"{state.name} is not an unsuccessful terminal state")
        self._check(state)
        return self._evolved(state=state, error=error, updated_at=now, finished_at=now)

    def requeue(self, now: datetime) -> Task:
        """WORKING -> SUBMITTED: hand an interrupted task back to the queue."""
        self._check(TaskState.SUBMITTED)
        return self._evolved(state=TaskState.SUBMITTED, started_at=None, updated_at=now)

    def reassign(self, owner_agent_id: str, now: datetime) -> Task:
        """Hand an unfinished task to another agent: it becomes SUBMITTED there.

        Used by an entry node that re-dispatches a delegated task. ``attempt``
        is kept.

        Raises:
            InvalidTransition: The task is terminal.
        """
        if self.terminal:
            raise InvalidTransition(
                f"task {self.task_id}: a {self.state.name} task cannot be reassigned"
            )
        return self._evolved(
            owner_agent_id=owner_agent_id,
            state=TaskState.SUBMITTED,
            started_at=None,
            updated_at=now,
        )

    def mirror(self, remote: Task) -> Task:
        """Adopt the lifecycle ``remote`` reports, keeping this task's identity.

        Used by an entry node that follows the agent owning a delegated task:
        state, result, error, ``updated_at``/``started_at``/``finished_at``
        and attempt come from ``remote``, and so does the timeout when
        ``remote`` has one (the owner resolves a default the entry node does
        not know, and enforces it); every other field from ``self``. A
        terminal task mirrored with a report in its own state is returned
        unchanged (a repeated final report).

        Raises:
            InvalidTransition: ``remote`` is another task, or this task is
                terminal and ``remote`` is in another state.
        """
        if remote.task_id != self.task_id:
            raise InvalidTransition(
                f"task {self.task_id}: cannot mirror the report of task {remote.task_id}"
            )
        if self.terminal:
            if remote.state is not self.state:
                raise InvalidTransition(
                    f"task {self.task_id}: {self.state.name} -> {remote.state.name} is not allowed"
                )
            return self
        return self._evolved(
            state=remote.state,
            result=remote.result,
            error=remote.error,
            updated_at=remote.updated_at,
            started_at=remote.started_at,
            finished_at=remote.finished_at,
            attempt=remote.attempt,
            timeout=remote.timeout or self.timeout,
        )

    def _evolved(self, **changes: Any) -> Task:
        """A copy with ``changes``: :func:`dataclasses.replace` without its
        per-field ``__init__`` (a fifth of the cost, on every state change);
        only for the fixed field names of the transitions above."""
        task = object.__new__(Task)
        fields = task.__dict__
        fields.update(self.__dict__)
        fields.update(changes)
        return task

    def _check(self, target: TaskState) -> None:
        if target not in _ALLOWED.get(self.state, frozenset()):
            raise InvalidTransition(
                f"task {self.task_id}: {self.state.name} -> {target.name} is not allowed"
            )


@dataclass(frozen=True)
class Submission:
    """A request to run a task, as a client sent it."""

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    timeout: float | None = None
    tags: tuple[str, ...] = ()
    preferred_agent: str = ""
    # The name of the API token the client authenticated with ("" without
    # auth); set by the node from the caller, never by the client.
    submitter: str = ""
    # The only agent that may run the task ("" for any agent).
    target_agent: str = ""

    def fingerprint(self) -> str:
        """A digest identifying the request, to detect idempotency-key reuse."""
        fields: list[Any] = [
            self.tool,
            self.arguments,
            self.timeout,
            sorted(self.tags),
            self.preferred_agent,
        ]
        if self.submitter:  # appended only when set: digests stored before auth stay valid
            fields.append(self.submitter)
        if self.target_agent:  # tagged, so it never reads as a submitter
            fields.append({"target_agent": self.target_agent})
        canonical = _CANONICAL_JSON(fields)
        return hashlib.sha256(canonical.encode()).hexdigest()
