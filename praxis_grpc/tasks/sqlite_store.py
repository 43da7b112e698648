"""The durable :class:`~praxis_grpc.tasks.store.TaskStore`: one SQLite file in WAL mode."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from praxis_grpc.tasks.json_values import compact_json
from praxis_grpc.tasks.model import Task, TaskError, TaskState
from praxis_grpc.tasks.store import (
    UNFINISHED_STATES,
    Cursor,
    DuplicateTask,
    TaskStoreError,
    UnknownTask,
    Write,
    WriteResult,
    from_micros,
    to_micros,
)

__all__ = ["SCHEMA_VERSION", "SqliteTaskStore"]


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


def _scope_idempotency_keys_by_origin(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE tasks ADD COLUMN origin_agent_id TEXT NOT NULL DEFAULT ''")
    # Every task stored so far was accepted by the agent that ran it.
    db.execute("UPDATE tasks SET origin_agent_id = owner_agent_id")
    db.execute("DROP INDEX tasks_by_idempotency_key")
    db.execute(
        "CREATE UNIQUE INDEX tasks_by_origin_idempotency_key"
        " ON tasks (origin_agent_id, idempotency_key) WHERE idempotency_key != ''"
    )


def _record_submitters(db: sqlite3.Connection) -> None:
    # Tasks stored before api.auth existed were submitted by nobody in particular.
    db.execute("ALTER TABLE tasks ADD COLUMN submitter TEXT NOT NULL DEFAULT ''")


def _record_targets(db: sqlite3.Connection) -> None:
    # Tasks stored before SubmitTaskRequest.target_agent could run anywhere.
    db.execute("ALTER TABLE tasks ADD COLUMN target_agent TEXT NOT NULL DEFAULT ''")


# _MIGRATIONS[n] takes the schema from version n to n + 1 (``PRAGMA user_version``).
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_tasks_table,
    _scope_idempotency_keys_by_origin,
    _record_submitters,
    _record_targets,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_COLUMNS = (
    "task_id, tool, arguments, state, created_at, updated_at, owner_agent_id,"
    " origin_agent_id, idempotency_key, timeout, tags, preferred_agent, result,"
    " error_reason, error_message, started_at, finished_at, attempt, request_fingerprint,"
    " submitter, target_agent"
)
_SELECT = f"SELECT {_COLUMNS} FROM tasks"  # noqa: S608 - fixed column list
# Positional parameters in _COLUMNS order (see _row): binding them is cheaper than by name.
_INSERT = f"INSERT INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' * 21)})"  # noqa: S608
# Only the lifecycle columns, the owner and its timeout change after insert;
# identity columns are fixed. Parameters in the order of _lifecycle_row.
_UPDATE = (
    "UPDATE tasks SET state = ?, updated_at = ?, result = ?, error_reason = ?,"
    " error_message = ?, started_at = ?, finished_at = ?, attempt = ?, owner_agent_id = ?,"
    " timeout = ? WHERE task_id = ?"
)
_DELETE = "DELETE FROM tasks WHERE task_id = ?"
_BY_ID = f"{_SELECT} WHERE task_id = ?"
# "!= ''" lets SQLite use the partial index.
_BY_KEY = f"{_SELECT} WHERE origin_agent_id = ? AND idempotency_key = ? AND idempotency_key != ''"
_UNFINISHED = (
    f"{_SELECT} WHERE state IN ({', '.join(repr(s.name) for s in UNFINISHED_STATES)})"
    " ORDER BY created_at, task_id"
)


# One encoder for every row: json.dumps builds a new one per call when given
# separators (several calls per written task). Rows hold checked values only.
_to_json: Callable[[Any], str] = compact_json()


def _row(task: Task) -> tuple[Any, ...]:
    """The insert parameters of ``task``, in ``_COLUMNS`` order."""
    return (
        task.task_id,
        task.tool,
        _to_json(task.arguments),
        task.state.name,
        to_micros(task.created_at),
        to_micros(task.updated_at),
        task.owner_agent_id,
        task.origin_agent_id,
        task.idempotency_key,
        float(task.timeout),
        _to_json(list(task.tags)) if task.tags else "[]",
        task.preferred_agent,
        *_outcome(task),
        task.attempt,
        task.request_fingerprint,
        task.submitter,
        task.target_agent,
    )


def _lifecycle_row(task: Task) -> tuple[Any, ...]:
    """The update parameters of ``task``, in ``_UPDATE`` order."""
    return (
        task.state.name,
        to_micros(task.updated_at),
        *_outcome(task),
        task.attempt,
        task.owner_agent_id,
        float(task.timeout),
        task.task_id,
    )


def _outcome(task: Task) -> tuple[Any, ...]:
    """result, error_reason, error_message, started_at, finished_at: the
    columns both an insert and an update write, in that order."""
    error = task.error
    return (
        None if task.result is None else _to_json(task.result),
        None if error is None else error.reason,
        None if error is None else error.message,
        None if task.started_at is None else to_micros(task.started_at),
        None if task.finished_at is None else to_micros(task.finished_at),
    )


def _task(row: sqlite3.Row) -> Task:
    """The task of ``row``. A JSON column that does not decode to its type
    (damaged) comes back as a placeholder, named in ``Task.unreadable``, so
    one bad row cannot fail a read that includes it."""

    def moment(column: str) -> datetime | None:
        micros = row[column]
        return None if micros is None else from_micros(micros)

    unreadable: builtins.list[str] = []
    result, error_reason = row["result"], row["error_reason"]
    return Task(
        task_id=row["task_id"],
        tool=row["tool"],
        arguments=_decoded(row, "arguments", dict, {}, unreadable),
        state=TaskState[row["state"]],
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        owner_agent_id=row["owner_agent_id"],
        origin_agent_id=row["origin_agent_id"],
        idempotency_key=row["idempotency_key"],
        timeout=row["timeout"],
        tags=tuple(_decoded(row, "tags", list, [], unreadable)),
        preferred_agent=row["preferred_agent"],
        result=None if result is None else _decoded(row, "result", dict, None, unreadable),
        error=None if error_reason is None else TaskError(error_reason, row["error_message"]),
        started_at=moment("started_at"),
        finished_at=moment("finished_at"),
        attempt=row["attempt"],
        request_fingerprint=row["request_fingerprint"],
        submitter=row["submitter"],
        target_agent=row["target_agent"],
        unreadable=tuple(unreadable),
    )


def _decoded(
    row: sqlite3.Row, column: str, kind: type, placeholder: Any, unreadable: builtins.list[str]
) -> Any:
    """Column ``column`` of ``row`` as JSON of type ``kind`` (dict, or list of
    strings), or ``placeholder`` with the reason added to ``unreadable``."""
    try:
        value = json.loads(row[column])
    except (ValueError, RecursionError, TypeError) as exc:
        why = f"the stored value is not valid JSON ({_clip(str(exc))})"
    else:
        if isinstance(value, dict) and kind is dict:
            return value
        if isinstance(value, list) and kind is list and all(isinstance(v, str) for v in value):
            return value
        why = f"the stored value is not a JSON {'object' if kind is dict else 'list of strings'}"
    unreadable.append(f"{column}: {why}")
    return placeholder


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        (result,) = self.apply([Write("insert", task)])
        if isinstance(result, TaskStoreError):
            raise result
        assert result is not None
        return result

    def update(self, task: Task) -> None:
        (result,) = self.apply([Write("update", task)])
        if isinstance(result, TaskStoreError):
            raise result

    def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        # _transaction() inlined: this runs once per group commit.
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        try:
            results = [self._write(db, write) for write in writes]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return results

    @staticmethod
    def _write(db: sqlite3.Connection, write: Write) -> WriteResult:
        task = write.task
        if write.kind != "insert":
            if write.kind == "update":
                changed = db.execute(_UPDATE, _lifecycle_row(task)).rowcount
            else:
                changed = db.execute(_DELETE, (task.task_id,)).rowcount
            return None if changed else UnknownTask(task.task_id)
        try:
            db.execute(_INSERT, _row(task))
        except sqlite3.IntegrityError:
            # A failed statement is undone alone; the transaction goes on.
            if task.idempotency_key:
                key = (task.origin_agent_id, task.idempotency_key)
                existing = db.execute(_BY_KEY, key).fetchone()
                if existing is not None:
                    return _task(existing)
            return DuplicateTask(task.task_id)
        return task

    def find_by_idempotency_key(self, idempotency_key: str, origin_agent_id: str) -> Task | None:
        row = self._open().execute(_BY_KEY, (origin_agent_id, idempotency_key)).fetchone()
        return None if row is None else _task(row)

    def get(self, task_id: str) -> Task | None:
        row = self._open().execute(_BY_ID, (task_id,)).fetchone()
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
            params.extend((to_micros(after.created_at), after.task_id))
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
