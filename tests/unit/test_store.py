"""The TaskStore contract, checked against the SQLite store and the in-memory fake."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import praxis_grpc
from praxis_grpc.tasks.model import Task, TaskError, TaskState
from praxis_grpc.tasks.sqlite_store import _MIGRATIONS, SCHEMA_VERSION, SqliteTaskStore
from praxis_grpc.tasks.store import Cursor, DuplicateTask, TaskStore, UnknownTask, Write
from praxis_grpc.testing import MemoryTaskStore

T0 = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


def make_task(task_id: str = "t-1", **fields: Any) -> Task:
    values: dict[str, Any] = {
        "tool": "echo",
        "arguments": {"text": "hi"},
        "state": TaskState.SUBMITTED,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Task(task_id=task_id, **values)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    impl: TaskStore
    if request.param == "sqlite":
        impl = SqliteTaskStore(tmp_path / "state" / "tasks.db")
    else:
        impl = MemoryTaskStore()
    with closing(impl):
        yield impl


def test_round_trip_keeps_every_field(store: TaskStore) -> None:
    task = make_task(
        tool="analyse",
        arguments={
            "text": "naïve café ☕ 日本語 \U0001f600",
            "nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}], "empty": {}},
            "big": 2**62,
        },
        state=TaskState.FAILED,
        updated_at=T0 + timedelta(seconds=3, microseconds=7),
        owner_agent_id="agent-a",
        origin_agent_id="agent-entry",
        idempotency_key="key-1",
        timeout=12.75,
        tags=("gpu", "eu-west"),
        preferred_agent="agent-b",
        result={"partial": [1, 2], "note": "ünïcode"},
        error=TaskError("TOOL_ERROR", "it broke: ✗"),
        started_at=T0 + timedelta(microseconds=1),
        finished_at=T0 + timedelta(seconds=3, microseconds=7),
        attempt=2,
        request_fingerprint="sha256:abc",
        submitter="alice",
    )
    assert store.insert(task) is task

    stored = store.get(task.task_id)

    assert stored == task
    assert stored.request_fingerprint == "sha256:abc"  # not part of Task equality
    assert stored.created_at.tzinfo is not None
    assert stored.created_at.utcoffset() == timedelta(0)
    assert stored.created_at.microsecond == 123456


def test_round_trip_keeps_empty_optionals(store: TaskStore) -> None:
    task = make_task(arguments={})

    store.insert(task)
    stored = store.get(task.task_id)

    assert stored == task
    assert stored is not None
    assert (stored.result, stored.error, stored.started_at, stored.finished_at) == (
        None,
        None,
        None,
        None,
    )
    assert stored.tags == ()


def test_stored_tasks_are_copies(store: TaskStore) -> None:
    task = make_task(arguments={"items": [1]})
    store.insert(task)

    task.arguments["items"].append(2)
    first = store.get(task.task_id)
    assert first is not None
    first.arguments["items"].append(3)

    assert store.get(task.task_id) == make_task(arguments={"items": [1]})


def test_timestamps_in_other_zones_come_back_as_the_same_instant_in_utc(
    store: TaskStore,
) -> None:
    local = T0.astimezone(timezone(timedelta(hours=5, minutes=30)))
    store.insert(make_task(created_at=local, updated_at=local))

    stored = store.get("t-1")

    assert stored is not None
    assert stored.created_at == T0
    assert stored.created_at.utcoffset() == timedelta(0)


def test_naive_timestamps_are_rejected(store: TaskStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.insert(make_task(created_at=datetime(2024, 1, 1)))
    assert store.get("t-1") is None


def test_get_unknown_is_none(store: TaskStore) -> None:
    assert store.get("nope") is None


def test_idempotency_key_returns_existing_task(store: TaskStore) -> None:
    first = make_task("t-1", idempotency_key="k", request_fingerprint="fp-1")
    second = make_task("t-2", idempotency_key="k", request_fingerprint="fp-2", tool="other")
    store.insert(first)

    existing = store.insert(second)

    assert existing == first
    assert existing.request_fingerprint == "fp-1"
    assert store.get("t-2") is None


def test_idempotency_keys_are_scoped_by_origin(store: TaskStore) -> None:
    mine = make_task("t-1", idempotency_key="k", origin_agent_id="agent-a")
    theirs = make_task("t-2", idempotency_key="k", origin_agent_id="agent-b")

    assert store.insert(mine) is mine
    assert store.insert(theirs) is theirs

    assert store.find_by_idempotency_key("k", "agent-a") == mine
    assert store.find_by_idempotency_key("k", "agent-b") == theirs
    assert store.find_by_idempotency_key("k", "agent-c") is None
    assert store.find_by_idempotency_key("", "agent-a") is None
    assert store.insert(make_task("t-3", idempotency_key="k", origin_agent_id="agent-b")) == theirs


def test_find_by_idempotency_key_ignores_empty_keys(store: TaskStore) -> None:
    store.insert(make_task("t-1"))

    assert store.find_by_idempotency_key("", "") is None


def test_idempotency_key_is_checked_before_task_id(store: TaskStore) -> None:
    store.insert(make_task("t-1", idempotency_key="k"))

    assert store.insert(make_task("t-1", idempotency_key="k", tool="other")).tool == "echo"


def test_empty_idempotency_keys_never_collide(store: TaskStore) -> None:
    store.insert(make_task("t-1"))
    store.insert(make_task("t-2"))

    assert store.get("t-1") is not None
    assert store.get("t-2") is not None


def test_duplicate_task_id_raises(store: TaskStore) -> None:
    store.insert(make_task("t-1"))

    with pytest.raises(DuplicateTask, match="t-1") as caught:
        store.insert(make_task("t-1", tool="other"))

    assert caught.value.task_id == "t-1"
    assert store.get("t-1") == make_task("t-1")


def test_update_replaces_the_task(store: TaskStore) -> None:
    task = make_task(idempotency_key="k")
    store.insert(task)
    later = T0 + timedelta(seconds=1)

    done = task.start(later).complete({"answer": 42}, later + timedelta(seconds=1))
    store.update(done)

    assert store.get(task.task_id) == done
    assert store.count_by_state()[TaskState.COMPLETED] == 1


def test_update_unknown_raises(store: TaskStore) -> None:
    with pytest.raises(UnknownTask, match="ghost") as caught:
        store.update(make_task("ghost"))

    assert isinstance(caught.value, KeyError)
    assert str(caught.value) == "no task 'ghost' in the store"


def test_update_leaves_identity_fields_alone(store: TaskStore) -> None:
    store.insert(make_task("t-1", idempotency_key="k1", origin_agent_id="entry"))
    store.insert(make_task("t-2", idempotency_key="k2", origin_agent_id="entry"))
    later = T0 + timedelta(seconds=1)

    store.update(
        replace(
            make_task("t-2", idempotency_key="k1", tool="other", origin_agent_id="x").start(later)
        )
    )

    stored = store.get("t-2")
    assert stored is not None
    assert (stored.idempotency_key, stored.tool) == ("k2", make_task("t-2").tool)
    assert stored.origin_agent_id == "entry"
    assert (stored.state, stored.started_at, stored.attempt) == (TaskState.WORKING, later, 1)


def test_update_persists_the_owner(store: TaskStore) -> None:
    task = make_task(owner_agent_id="agent-b", origin_agent_id="entry", idempotency_key="k")
    store.insert(task)

    moved = task.reassign("agent-c", T0 + timedelta(seconds=1))
    store.update(moved)

    assert store.get(task.task_id) == moved
    assert store.find_by_idempotency_key("k", "entry") == moved


def test_update_persists_the_timeout_of_an_adopter(store: TaskStore) -> None:
    # A record kept without a client timeout (0) gets the default of the agent
    # that adopts it; a restart must find that, not "a timeout of 0s".
    record = make_task(owner_agent_id="agent-b", origin_agent_id="entry", timeout=0.0)
    store.insert(record)

    adopted = replace(record.reassign("agent-a", T0 + timedelta(seconds=1)), timeout=60.0)
    store.update(adopted)

    assert store.get(record.task_id) == adopted
    assert store.unfinished() == [adopted]


def test_every_write_path_keeps_the_timeout(store: TaskStore) -> None:
    inserted = make_task("t-1", timeout=7.5)
    (result,) = store.apply([Write("insert", inserted)])
    assert result is inserted
    changed = replace(inserted.start(T0), timeout=9.0)
    store.apply([Write("update", changed)])
    stored = store.get("t-1")
    assert stored is not None
    assert stored.timeout == 9.0
    page, _ = store.list()
    assert [task.timeout for task in page] == [9.0]


def test_sqlite_reopen_keeps_an_updated_timeout(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    record = make_task(owner_agent_id="agent-b", timeout=0.0)
    with closing(SqliteTaskStore(path)) as first:
        first.insert(record)
        first.update(replace(record.reassign("agent-a", T0), timeout=30.0))
    with closing(SqliteTaskStore(path)) as second:
        stored = second.get(record.task_id)
    assert stored is not None
    assert stored.timeout == 30.0


def test_delete_removes_the_task_and_frees_its_key(store: TaskStore) -> None:
    task = make_task(idempotency_key="k", origin_agent_id="entry")
    store.insert(task)
    store.insert(make_task("t-2"))

    assert store.apply([Write("delete", task)]) == [None]

    assert store.get(task.task_id) is None
    assert store.find_by_idempotency_key("k", "entry") is None
    assert [t.task_id for t in store.list()[0]] == ["t-2"]
    again = make_task(idempotency_key="k", origin_agent_id="entry", tool="other")
    assert store.insert(again) is again


def test_delete_of_an_unknown_task_is_a_per_write_error(store: TaskStore) -> None:
    kept = make_task("t-1")

    results = store.apply([Write("delete", make_task("ghost")), Write("insert", kept)])

    assert isinstance(results[0], UnknownTask)
    assert results[0].task_id == "ghost"
    assert results[1] is kept
    assert store.get("t-1") == kept


def test_apply_mixes_writes_in_order(store: TaskStore) -> None:
    first = make_task("t-1")
    later = T0 + timedelta(seconds=1)

    results = store.apply(
        [
            Write("insert", first),
            Write("update", first.start(later)),
            Write("insert", make_task("t-1", tool="other")),
            Write("delete", first),
            Write("update", first),
        ]
    )

    assert results[:2] == [first, None]
    assert isinstance(results[2], DuplicateTask)
    assert results[3] is None
    assert isinstance(results[4], UnknownTask)
    assert store.get("t-1") is None


def test_list_is_newest_first_and_filters(store: TaskStore) -> None:
    specs = [
        ("a", "echo", TaskState.SUBMITTED),
        ("b", "sum", TaskState.WORKING),
        ("c", "echo", TaskState.COMPLETED),
        ("d", "sum", TaskState.FAILED),
        ("e", "echo", TaskState.WORKING),
    ]
    for minute, (task_id, tool, state) in enumerate(specs):
        moment = T0 + timedelta(minutes=minute)
        store.insert(make_task(task_id, tool=tool, state=state, created_at=moment))

    def ids(**filters: Any) -> list[str]:
        page, cursor = store.list(**filters)
        assert cursor is None
        return [task.task_id for task in page]

    assert ids() == ["e", "d", "c", "b", "a"]
    assert ids(tool="echo") == ["e", "c", "a"]
    assert ids(states={TaskState.WORKING}) == ["e", "b"]
    assert ids(states=[TaskState.WORKING, TaskState.SUBMITTED], tool="echo") == ["e", "a"]
    assert ids(tool="missing") == []
    assert ids(states=[TaskState.CANCELED]) == []


def test_paging_breaks_timestamp_ties_by_task_id(store: TaskStore) -> None:
    # Nine tasks share one timestamp; three are older and three newer.
    for n in range(15):
        offset = -1 if n < 3 else (1 if n >= 12 else 0)
        store.insert(make_task(f"t-{n:02d}", created_at=T0 + timedelta(microseconds=offset)))
    expected = (
        [f"t-{n:02d}" for n in (14, 13, 12)]
        + [f"t-{n:02d}" for n in range(11, 2, -1)]
        + [f"t-{n:02d}" for n in (2, 1, 0)]
    )

    seen: list[str] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        page, cursor = store.list(limit=4, after=cursor)
        pages += 1
        seen.extend(task.task_id for task in page)
        if cursor is None:
            break
        assert len(page) == 4
        cursor = Cursor.decode(cursor.encode())

    assert seen == expected
    assert pages == 4


def test_paging_with_filter_and_exact_last_page(store: TaskStore) -> None:
    for n in range(6):
        state = TaskState.WORKING if n % 2 else TaskState.SUBMITTED
        store.insert(make_task(f"t-{n}", state=state))

    first, cursor = store.list(states=[TaskState.WORKING], limit=2)
    assert [t.task_id for t in first] == ["t-5", "t-3"]
    assert cursor is not None
    second, cursor = store.list(states=[TaskState.WORKING], limit=2, after=cursor)
    assert [t.task_id for t in second] == ["t-1"]
    assert cursor is None

    exact, cursor = store.list(limit=6)
    assert len(exact) == 6
    assert cursor is None


def test_list_rejects_a_limit_below_one(store: TaskStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list(limit=0)


def test_cursor_round_trips_as_a_url_safe_token() -> None:
    cursor = Cursor(created_at=T0, task_id="tâsk/+?=")

    token = cursor.encode()

    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert Cursor.decode(token) == cursor


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token!",
        "A",
        "QUJD",
        _b64(b"\xff\xfe"),
        _b64(b"[1, 2]"),
        _b64(b'{"created_at": 1}'),
        _b64(b'{"created_at": "1", "task_id": "t"}'),
        _b64(b'{"created_at": true, "task_id": "t"}'),
        _b64(b'{"created_at": 1, "task_id": "t", "extra": 0}'),
        _b64(b'{"created_at": 99999999999999999999, "task_id": "t"}'),
    ],
)
def test_cursor_decode_rejects_garbage(token: str) -> None:
    with pytest.raises(ValueError, match="invalid page token"):
        Cursor.decode(token)


def test_unfinished_is_oldest_first(store: TaskStore) -> None:
    store.insert(make_task("late", created_at=T0 + timedelta(seconds=2)))
    store.insert(make_task("done", state=TaskState.COMPLETED, created_at=T0 - timedelta(days=1)))
    store.insert(make_task("b-tie", state=TaskState.WORKING))
    store.insert(make_task("a-tie", state=TaskState.WORKING))
    store.insert(make_task("early", created_at=T0 - timedelta(seconds=2)))
    store.insert(make_task("gone", state=TaskState.CANCELED))

    assert [t.task_id for t in store.unfinished()] == ["early", "a-tie", "b-tie", "late"]


def test_count_by_state_includes_every_state(store: TaskStore) -> None:
    assert store.count_by_state() == dict.fromkeys(TaskState, 0)

    store.insert(make_task("a"))
    store.insert(make_task("b", state=TaskState.WORKING))
    store.insert(make_task("c", state=TaskState.WORKING))
    store.insert(make_task("d", state=TaskState.REJECTED))

    counts = store.count_by_state()
    assert counts[TaskState.SUBMITTED] == 1
    assert counts[TaskState.WORKING] == 2
    assert counts[TaskState.REJECTED] == 1
    assert counts[TaskState.COMPLETED] == 0
    assert set(counts) == set(TaskState)


def test_closed_store_refuses_calls_and_close_is_idempotent(store: TaskStore) -> None:
    store.close()
    store.close()

    with pytest.raises(RuntimeError, match="closed"):
        store.get("t-1")


def test_sqlite_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    task = make_task(idempotency_key="k", result={"ok": True}, request_fingerprint="fp")
    with closing(SqliteTaskStore(path, fsync=True)) as store:
        store.insert(task)
        store.insert(make_task("t-2", state=TaskState.WORKING))

    with closing(SqliteTaskStore(path)) as store:
        assert store.schema_version == SCHEMA_VERSION
        reopened = store.get(task.task_id)
        assert reopened == task
        assert reopened.request_fingerprint == "fp"
        assert store.insert(make_task("t-3", idempotency_key="k")) == task
        assert [t.task_id for t in store.unfinished()] == ["t-1", "t-2"]


def test_sqlite_migrates_a_version_1_database(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        _MIGRATIONS[0](db)
        db.execute("PRAGMA user_version = 1")
        # Rows as version 1 wrote them: no origin column, keys unique store-wide.
        for task_id, key, owner, state in (
            ("t-1", "k", "agent-a", "SUBMITTED"),
            ("t-2", "", "agent-a", "COMPLETED"),
        ):
            db.execute(
                "INSERT INTO tasks VALUES (?, 'echo', '{\"text\":\"hi\"}', ?, ?, ?, ?, ?,"
                " 5.0, '[\"gpu\"]', '', NULL, NULL, NULL, NULL, NULL, 0, 'fp')",
                (task_id, state, 1_000_000, 2_000_000, owner, key),
            )

    with closing(SqliteTaskStore(path)) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        first = store.get("t-1")
        assert first is not None
        assert (first.owner_agent_id, first.origin_agent_id) == ("agent-a", "agent-a")
        assert (first.idempotency_key, first.request_fingerprint) == ("k", "fp")
        assert first.arguments == {"text": "hi"}
        assert first.tags == ("gpu",)
        assert first.created_at == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
        second = store.get("t-2")
        assert second is not None
        assert second.state is TaskState.COMPLETED
        # Dedup on the migrated key, now scoped by origin.
        retry = make_task("t-3", idempotency_key="k", origin_agent_id="agent-a")
        assert store.insert(retry) == first
        other = make_task("t-4", idempotency_key="k", origin_agent_id="agent-b")
        assert store.insert(other) is other
        assert store.find_by_idempotency_key("k", "agent-a") == first
        indexes = {row["name"] for row in store._open().execute("PRAGMA index_list(tasks)")}
        assert "tasks_by_idempotency_key" not in indexes
        assert "tasks_by_origin_idempotency_key" in indexes

    with closing(SqliteTaskStore(path)) as store:  # reopening migrates nothing more
        assert store.schema_version == SCHEMA_VERSION
        assert {t.task_id for t in store.list()[0]} == {"t-1", "t-2", "t-4"}


def test_sqlite_migrates_a_version_2_database_to_tasks_without_a_submitter(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        _MIGRATIONS[0](db)
        _MIGRATIONS[1](db)
        db.execute("PRAGMA user_version = 2")
        db.execute(
            "INSERT INTO tasks VALUES ('t-1', 'echo', '{}', 'SUBMITTED', 1, 2, 'a', 'k', 5.0,"
            " '[]', '', NULL, NULL, NULL, NULL, NULL, 0, 'fp', 'a')"
        )

    with closing(SqliteTaskStore(path)) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        old = store.get("t-1")
        assert old is not None
        assert (old.submitter, old.origin_agent_id, old.idempotency_key) == ("", "a", "k")
        store.insert(make_task("t-2", submitter="bob"))
    with closing(SqliteTaskStore(path)) as store:
        assert store.get("t-2") == make_task("t-2", submitter="bob")


def test_sqlite_uses_wal_and_the_requested_sync_level(tmp_path: Path) -> None:
    for fsync, level in ((False, 1), (True, 2)):  # NORMAL, FULL
        path = tmp_path / f"tasks-{fsync}.db"
        with closing(SqliteTaskStore(path, fsync=fsync)) as store:
            db = store._open()
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == level
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(RuntimeError, match="newer than this build"):
        SqliteTaskStore(path)


def test_sqlite_commit_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash" / "tasks.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from datetime import datetime, timezone
        from pathlib import Path
        from praxis_grpc.tasks.model import Task, TaskState
        from praxis_grpc.tasks.sqlite_store import SqliteTaskStore

        now = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=timezone.utc)
        store = SqliteTaskStore(Path({str(path)!r}))
        store.insert(Task("survivor", "echo", {{"text": "still here"}},
                          TaskState.WORKING, now, now, request_fingerprint="fp"))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(praxis_grpc.__file__).parents[1])}

    crashed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=60, check=False
    )

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    # The commit sits in the WAL, never checkpointed: recovery must replay it.
    assert path.with_name("tasks.db-wal").stat().st_size > 0
    with closing(SqliteTaskStore(path)) as store:
        survivor = store.get("survivor")
        assert survivor is not None
        assert survivor.arguments == {"text": "still here"}
        assert survivor.request_fingerprint == "fp"
        assert [t.task_id for t in store.unfinished()] == ["survivor"]
