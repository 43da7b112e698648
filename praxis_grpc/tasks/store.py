"""The task store plug point and its SQLite implementation.

The engine records every accepted task here before acknowledging it, and every
state change before acting on it, so a restarted node can recover what it had
accepted. :class:`praxis_grpc.testing.MemoryTaskStore` is the in-memory fake
with the same semantics.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import re
import sqlite3
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from praxis_grpc.tasks.model import Task, TaskError, TaskState

__all__ = [
    "SCHEMA_VERSION",
    "UNFINISHED_STATES",
    "Cursor",
    "DuplicateTask",
    "SqliteTaskStore",
    "TaskStore",
    "TaskStoreError",
    "UnknownTask",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
UNFINISHED_STATES: tuple[TaskState, ...] = (TaskState.SUBMITTED, TaskState.WORKING)


class TaskStoreError(Exception):
    """Base class of the store's own errors; they signal bugs, not client errors."""


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


def _micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch; rejects naive datetimes."""
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: task timestamps must be timezone-aware")
    return (moment - _EPOCH) // _MICROSECOND


def _from_micros(micros: int) -> datetime:
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
            {"created_at": _micros(self.created_at), "task_id": self.task_id},
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
        if not _TOKEN.fullmatch(token):
            raise ValueError("invalid page token: not URL-safe base64")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            fields = json.loads(raw.decode())
        except (binascii.Error, ValueError):
            raise ValueError("invalid page token: not an encoded cursor") from None
        if not isinstance(fields, dict) or fields.keys() != {"created_at", "task_id"}:
            raise ValueError("invalid page token: unexpected content")
        micros, task_id = fields["created_at"], fields["task_id"]
        if type(micros) is not int or not isinstance(task_id, str):
            raise ValueError("invalid page token: unexpected field types")
        try:
            return cls(created_at=_from_micros(micros), task_id=task_id)
        except OverflowError:
            raise ValueError("invalid page token: timestamp out of range") from None


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
        - After :meth:`close` every other method raises ``RuntimeError``.
    """

    def insert(self, task: Task) -> Task:
        """Record a new task durably before returning.

        If ``task.idempotency_key`` is non-empty and a stored task already has
        that key, nothing is written and the stored task is returned; the
        caller compares ``request_fingerprint`` to tell a retry from a
        conflicting reuse of the key. The key is checked before the id.

        Returns:
            ``task`` itself once stored, or (a copy of) the existing task holding
            its idempotency key.

        Raises:
            DuplicateTask: A task with ``task.task_id`` exists.
        """
        ...

    def update(self, task: Task) -> None:
        """Replace every field of the stored task ``task.task_id``.

        Raises:
            UnknownTask: No task has that id.
            DuplicateTask: Another task holds ``task.idempotency_key``.
        """
        ...

    def get(self, task_id: str) -> Task | None:
        """The stored task, or ``None`` if there is none with that id."""
        ...

    def find_by_idempotency_key(self, idempotency_key: str) -> Task | None:
        """The task holding ``idempotency_key`` (non-empty), or ``None``."""
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


def _create_tasks_table(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY NOT NULL,
            tool TEXT NOT NULL,
            arguments TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            owner_agent_id TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            timeout REAL NOT NULL,
            tags TEXT NOT NULL,
            preferred_agent TEXT NOT NULL,
            result TEXT,
            error_reason TEXT,
            error_message TEXT,
            started_at INTEGER,
            finished_at INTEGER,
            attempt INTEGER NOT NULL,
            request_fingerprint TEXT NOT NULL
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (idempotency_key)"
        " WHERE idempotency_key != ''"
    )
    db.execute("CREATE INDEX tasks_by_created_at ON tasks (created_at, task_id)")
    db.execute("CREATE INDEX tasks_by_state ON tasks (state, created_at, task_id)")


# _MIGRATIONS[n] takes the schema from version n to n + 1 (``PRAGMA user_version``).
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_create_tasks_table,)
SCHEMA_VERSION = len(_MIGRATIONS)

_COLUMNS = (
    "task_id, tool, arguments, state, created_at, updated_at, owner_agent_id,"
    " idempotency_key, timeout, tags, preferred_agent, result, error_reason,"
    " error_message, started_at, finished_at, attempt, request_fingerprint"
)
_SELECT = f"SELECT {_COLUMNS} FROM tasks"  # noqa: S608 - fixed column list
_INSERT = (
    f"INSERT INTO tasks ({_COLUMNS}) VALUES (:task_id, :tool, :arguments, :state,"  # noqa: S608
    " :created_at, :updated_at, :owner_agent_id, :idempotency_key, :timeout, :tags,"
    " :preferred_agent, :result, :error_reason, :error_message, :started_at,"
    " :finished_at, :attempt, :request_fingerprint)"
)
_UPDATE = (
    "UPDATE tasks SET tool = :tool, arguments = :arguments, state = :state,"
    " created_at = :created_at, updated_at = :updated_at,"
    " owner_agent_id = :owner_agent_id, idempotency_key = :idempotency_key,"
    " timeout = :timeout, tags = :tags, preferred_agent = :preferred_agent,"
    " result = :result, error_reason = :error_reason, error_message = :error_message,"
    " started_at = :started_at, finished_at = :finished_at, attempt = :attempt,"
    " request_fingerprint = :request_fingerprint WHERE task_id = :task_id"
)
# "!= ''" lets SQLite use the partial index.
_BY_KEY = f"{_SELECT} WHERE idempotency_key = ? AND idempotency_key != ''"
_UNFINISHED = (
    f"{_SELECT} WHERE state IN ({', '.join(repr(s.name) for s in UNFINISHED_STATES)})"
    " ORDER BY created_at, task_id"
)


def _to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _row(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "tool": task.tool,
        "arguments": _to_json(task.arguments),
        "state": task.state.name,
        "created_at": _micros(task.created_at),
        "updated_at": _micros(task.updated_at),
        "owner_agent_id": task.owner_agent_id,
        "idempotency_key": task.idempotency_key,
        "timeout": float(task.timeout),
        "tags": _to_json(list(task.tags)),
        "preferred_agent": task.preferred_agent,
        "result": None if task.result is None else _to_json(task.result),
        "error_reason": None if task.error is None else task.error.reason,
        "error_message": None if task.error is None else task.error.message,
        "started_at": None if task.started_at is None else _micros(task.started_at),
        "finished_at": None if task.finished_at is None else _micros(task.finished_at),
        "attempt": task.attempt,
        "request_fingerprint": task.request_fingerprint,
    }


def _task(row: sqlite3.Row) -> Task:
    def moment(column: str) -> datetime | None:
        micros = row[column]
        return None if micros is None else _from_micros(micros)

    result, error_reason = row["result"], row["error_reason"]
    return Task(
        task_id=row["task_id"],
        tool=row["tool"],
        arguments=json.loads(row["arguments"]),
        state=TaskState[row["state"]],
        created_at=_from_micros(row["created_at"]),
        updated_at=_from_micros(row["updated_at"]),
        owner_agent_id=row["owner_agent_id"],
        idempotency_key=row["idempotency_key"],
        timeout=row["timeout"],
        tags=tuple(json.loads(row["tags"])),
        preferred_agent=row["preferred_agent"],
        result=None if result is None else json.loads(result),
        error=None if error_reason is None else TaskError(error_reason, row["error_message"]),
        started_at=moment("started_at"),
        finished_at=moment("finished_at"),
        attempt=row["attempt"],
        request_fingerprint=row["request_fingerprint"],
    )


class SqliteTaskStore:
    """A :class:`TaskStore` in one SQLite database file, in WAL mode.

    Durability: with ``fsync=False`` (``synchronous=NORMAL``) a commit reaches
    the write-ahead log in the OS page cache before the call returns, so it
    survives the process crashing or being killed (``kill -9``), but the most
    recent commits may be lost if the machine loses power or the OS crashes;
    the database stays consistent either way. With ``fsync=True``
    (``synchronous=FULL``) the log is fsynced at every commit, so commits also
    survive power loss (on storage that honours fsync), at the cost of one
    fsync per write.

    Each write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction. The
    connection allows use from a thread other than its creator, but it must
    only ever be used by one thread at a time (the event loop's). Another
    process holding the write lock makes a call wait up to ``busy_timeout``
    seconds, then raise ``sqlite3.OperationalError``.

    Args:
        path: Database file; missing parent directories are created.
        fsync: Sync the log at every commit (see above).
        busy_timeout: Seconds to wait for another connection's lock.

    Raises:
        RuntimeError: The database was written by a newer schema version, or
            cannot use WAL mode.
    """

    def __init__(self, path: Path, *, fsync: bool = False, busy_timeout: float = 5.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db: sqlite3.Connection | None = None
        db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        try:
            (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode != "wal":
                raise RuntimeError(f"{path}: SQLite cannot use WAL mode here (got {mode!r})")
            db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
            self._db = db
            self._migrate()
        except BaseException:
            self._db = None
            db.close()
            raise

    @property
    def schema_version(self) -> int:
        """The schema version of the open database (``PRAGMA user_version``)."""
        (version,) = self._open().execute("PRAGMA user_version").fetchone()
        return int(version)

    def insert(self, task: Task) -> Task:
        row = _row(task)
        with self._transaction() as db:
            if task.idempotency_key:
                existing = db.execute(_BY_KEY, (task.idempotency_key,)).fetchone()
                if existing is not None:
                    return _task(existing)
            if db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone():
                raise DuplicateTask(task.task_id)
            db.execute(_INSERT, row)
        return task

    def update(self, task: Task) -> None:
        row = _row(task)
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone():
                raise UnknownTask(task.task_id)
            if task.idempotency_key:
                holder = db.execute(_BY_KEY, (task.idempotency_key,)).fetchone()
                if holder is not None and holder[0] != task.task_id:
                    raise DuplicateTask(
                        task.task_id,
                        f"idempotency key {task.idempotency_key!r} belongs to task {holder[0]!r}",
                    )
            db.execute(_UPDATE, row)

    def find_by_idempotency_key(self, idempotency_key: str) -> Task | None:
        row = self._open().execute(_BY_KEY, (idempotency_key,)).fetchone()
        return None if row is None else _task(row)

    def get(self, task_id: str) -> Task | None:
        row = self._open().execute(f"{_SELECT} WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else _task(row)

    def list(
        self,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        after: Cursor | None = None,
    ) -> tuple[builtins.list[Task], Cursor | None]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if states:
            names = sorted({state.name for state in states})
            clauses.append(f"state IN ({', '.join('?' * len(names))})")
            params.extend(names)
        if tool:
            clauses.append("tool = ?")
            params.append(tool)
        if after is not None:
            clauses.append("(created_at, task_id) < (?, ?)")
            params.extend((_micros(after.created_at), after.task_id))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # Only fixed fragments and placeholders are interpolated.
        query = f"{_SELECT}{where} ORDER BY created_at DESC, task_id DESC LIMIT ?"
        rows = self._open().execute(query, (*params, limit + 1)).fetchall()
        page = [_task(row) for row in rows[:limit]]
        return page, Cursor.at(page[-1]) if len(rows) > limit else None

    def unfinished(self) -> builtins.list[Task]:
        return [_task(row) for row in self._open().execute(_UNFINISHED)]

    def count_by_state(self) -> dict[TaskState, int]:
        counts = dict.fromkeys(TaskState, 0)
        for name, count in self._open().execute("SELECT state, count(*) FROM tasks GROUP BY state"):
            counts[TaskState[name]] = count
        return counts

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"task store {self.path} is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {version} is newer than this build supports"
                f" ({SCHEMA_VERSION}); upgrade praxis-grpc"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as db:
                _MIGRATIONS[target - 1](db)
                db.execute(f"PRAGMA user_version = {target}")
