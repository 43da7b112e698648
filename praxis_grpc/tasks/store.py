"""The task store plug point: the interface, its errors and the paging cursor.

The engine records every accepted task here before acknowledging it, and every
state change before acting on it, so a restarted node can recover what it had
accepted. :class:`praxis_grpc.testing.MemoryTaskStore` is the in-memory fake
with the same semantics; :class:`praxis_grpc.tasks.sqlite_store.SqliteTaskStore`
is the durable implementation.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from praxis_grpc.tasks.model import Task, TaskState

__all__ = [
    "UNFINISHED_STATES",
    "Cursor",
    "DuplicateTask",
    "StoreUnavailable",
    "TaskStore",
    "TaskStoreError",
    "UnknownTask",
    "Write",
    "WriteResult",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
# A token encodes a timestamp and a task id (a UUID): about 110 characters.
_MAX_TOKEN_LENGTH = 512
UNFINISHED_STATES: tuple[TaskState, ...] = (TaskState.SUBMITTED, TaskState.WORKING)


class TaskStoreError(Exception):
    """Base class of the store's own errors; they signal bugs, not client errors."""


class StoreUnavailable(TaskStoreError):
    """The store could not read or write (I/O error, full disk, locked
    database): nothing of the failed transaction was written; a retry may
    succeed. Its ``__cause__`` is the underlying error."""


class DuplicateTask(TaskStoreError):
    """A task with this ``task_id`` (or, on update, this idempotency key) exists."""

    def __init__(self, task_id: str, message: str = "") -> None:
        super().__init__(message or f"task {task_id!r} already exists")
        self.task_id = task_id


class UnknownTask(TaskStoreError, KeyError):
    """No task with this ``task_id`` is stored."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id!r} in the store")
        self.task_id = task_id

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message.
        return str(self.args[0])


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch; rejects naive datetimes."""
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: task timestamps must be timezone-aware")
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class Cursor:
    """A position in the newest-first task listing.

    A page that starts after a cursor holds the tasks strictly older than it
    in ``(created_at, task_id)`` order. Cursors stay valid while tasks are
    added; they carry no filter, so pass the same filter with each page.

    Attributes:
        created_at: ``created_at`` of the last task of the previous page.
        task_id: ``task_id`` of that task; breaks ties between equal timestamps.
    """

    created_at: datetime
    task_id: str

    @classmethod
    def at(cls, task: Task) -> Cursor:
        """The position of ``task``: the next page starts with the task after it."""
        return cls(created_at=task.created_at, task_id=task.task_id)

    def encode(self) -> str:
        """An opaque, URL-safe page token for clients."""
        payload = json.dumps(
            {"created_at": to_micros(self.created_at), "task_id": self.task_id},
            separators=(",", ":"),
        )
        return base64.urlsafe_b64encode(payload.encode()).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a token made by :meth:`encode`.

        An empty token is not a cursor: callers treat it as "first page".

        Raises:
            ValueError: ``token`` is not a page token this store issued.
        """
        if len(token) > _MAX_TOKEN_LENGTH:
            raise ValueError(f"invalid page token: longer than {_MAX_TOKEN_LENGTH} characters")
        if not _TOKEN.fullmatch(token):
            raise ValueError("invalid page token: not URL-safe base64")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            fields = json.loads(raw.decode())
        except (binascii.Error, ValueError, RecursionError):
            raise ValueError("invalid page token: not an encoded cursor") from None
        if not isinstance(fields, dict) or fields.keys() != {"created_at", "task_id"}:
            raise ValueError("invalid page token: unexpected content")
        micros, task_id = fields["created_at"], fields["task_id"]
        if type(micros) is not int or not isinstance(task_id, str):
            raise ValueError("invalid page token: unexpected field types")
        try:
            return cls(created_at=from_micros(micros), task_id=task_id)
        except OverflowError:
            raise ValueError("invalid page token: timestamp out of range") from None


@dataclass(frozen=True)
class Write:
    """One write of a batch: insert a new task, update a task's lifecycle (and
    owner), or delete the task with ``task.task_id``."""

    kind: Literal["insert", "update", "delete"]
    task: Task


WriteResult = Task | None | TaskStoreError


class TaskStore(Protocol):
    """Durable records of tasks, keyed by ``task_id``.

    Contract:
        - Every method is synchronous and fast: the engine calls it directly
          from the asyncio event loop. Each call is one short transaction.
        - Not thread-safe: never call it concurrently from several threads.
        - A write that returns has been committed; how durable a commit is
          depends on the implementation (see :class:`SqliteTaskStore`).
        - Stored tasks are copies: ``arguments`` and ``result`` round-trip
          through JSON (tuples come back as lists, keys as strings) and
          timestamps come back as equal UTC datetimes. Naive datetimes and
          values JSON cannot encode raise ``ValueError``/``TypeError``.
        - A read never fails on a stored value: a row whose ``arguments``,
          ``result`` or ``tags`` cannot be decoded (damaged) comes back with
          a placeholder there (``{}``, ``None``, ``()``) and the reason in
          ``Task.unreadable``. Checking that a decoded value can travel as a
          ``Struct`` is the reader's job (``wire.task_to_proto``).
        - After :meth:`close` every other method raises ``RuntimeError``.
    """

    def insert(self, task: Task) -> Task:
        """Record a new task durably before returning.

        Idempotency keys are scoped by origin: if ``task.idempotency_key`` is
        non-empty and a stored task has the same ``origin_agent_id`` and
        idempotency key, nothing is written and the stored task is returned;
        the caller compares ``request_fingerprint`` to tell a retry from a
        conflicting reuse of the key. The same key under another origin is
        another task. The key is checked before the id.

        Returns:
            ``task`` itself once stored, or (a copy of) the existing task holding
            its idempotency key.

        Raises:
            DuplicateTask: A task with ``task.task_id`` exists.
        """
        ...

    def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        """Perform ``writes`` in order, in one transaction (one commit).

        Each write behaves like :meth:`insert` or :meth:`update`; a delete
        removes the task with ``write.task.task_id`` (only the id is read). A
        per-write failure (:class:`DuplicateTask`, :class:`UnknownTask`) is
        returned in its result slot instead of raised, and does not undo the
        other writes. The call raises only when the transaction as a whole
        fails, in which case nothing was written.

        Returns:
            One result per write: for an insert the stored task (``task`` or
            the holder of its idempotency key), for an update or a delete
            ``None``, or the per-write error (:class:`UnknownTask` when the
            task to update or delete does not exist).
        """
        ...

    def update(self, task: Task) -> None:
        """Persist the lifecycle of ``task.task_id``: state, result, error,
        ``updated_at``/``started_at``/``finished_at``, attempt, and the owner
        with its timeout (``owner_agent_id`` changes when an entry node
        re-dispatches a task; an agent that adopts a record recorded without
        a client timeout sets its own default, which must survive a restart).

        Identity fields (tool, arguments, idempotency key, origin, tags,
        preferred agent, created_at, fingerprint) are fixed at insert;
        values passed here for them are ignored.

        Raises:
            UnknownTask: No task has that id.
        """
        ...

    def get(self, task_id: str) -> Task | None:
        """The stored task, or ``None`` if there is none with that id."""
        ...

    def find_by_idempotency_key(self, idempotency_key: str, origin_agent_id: str) -> Task | None:
        """The task of ``origin_agent_id`` holding ``idempotency_key``, or ``None``.

        An empty key matches no task.
        """
        ...

    def list(
        self,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        after: Cursor | None = None,
    ) -> tuple[builtins.list[Task], Cursor | None]:
        """One page of tasks, newest first by ``(created_at, task_id)``.

        Args:
            states: Keep only tasks in these states; empty keeps all.
            tool: Keep only tasks of this tool; empty keeps all.
            limit: Most tasks to return; at least 1.
            after: Start after this position; ``None`` starts at the newest.

        Returns:
            The page and the cursor of the next one, or ``None`` if this page
            is the last.

        Raises:
            ValueError: ``limit`` is less than 1.
        """
        ...

    def unfinished(self) -> builtins.list[Task]:
        """Tasks in SUBMITTED or WORKING, oldest first; read at startup recovery."""
        ...

    def count_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state; every state is a key."""
        ...

    def close(self) -> None:
        """Release the store. Idempotent."""
        ...
