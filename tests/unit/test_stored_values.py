"""Reading tasks back: the stores decode damaged rows to marked tasks, the
proto conversion leaves out what no client could parse, responses fit the
message limit, and every accepted task round-trips through both stores."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.api.message_size import fit_page, fit_task
from praxis_grpc.errors import ToolError
from praxis_grpc.tasks.model import Reason, Task, TaskError, TaskState
from praxis_grpc.tasks.results import checked_result
from praxis_grpc.tasks.sqlite_store import SqliteTaskStore
from praxis_grpc.tasks.store import TaskStore
from praxis_grpc.testing import MemoryTaskStore
from praxis_grpc.wire import dict_to_struct, task_to_proto

T0 = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


def make_task(n: int = 1, **fields: Any) -> Task:
    values: dict[str, Any] = {
        "task_id": f"t-{n}",
        "tool": "echo",
        "arguments": {"n": n},
        "state": TaskState.COMPLETED,
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
        "result": {"echo": {"n": n}},
    }
    values.update(fields)
    return Task(**values)


def deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteTaskStore]:
    with closing(SqliteTaskStore(tmp_path / "tasks.db")) as store:
        yield store


def damage(store: SqliteTaskStore, task_id: str, column: str, text: str) -> None:
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute(f"UPDATE tasks SET {column} = ? WHERE task_id = ?", (text, task_id))


@pytest.mark.parametrize(
    ("column", "text", "why"),
    [
        ("arguments", '{"a": ', "arguments: the stored value is not valid JSON"),
        ("arguments", "[1, 2]", "arguments: the stored value is not a JSON object"),
        ("arguments", "[" * 100_000 + "]" * 100_000, "arguments: the stored value is not valid"),
        ("result", "NaN]", "result: the stored value is not valid JSON"),
        ("result", '{"n": ' + "9" * 5000 + "}", "result: the stored value is not valid JSON"),
        ("tags", '["a", 1]', "tags: the stored value is not a JSON list of strings"),
    ],
)
def test_a_damaged_json_column_reads_back_as_a_marked_placeholder(
    sqlite_store: SqliteTaskStore, column: str, text: str, why: str
) -> None:
    for n in (1, 2, 3):
        sqlite_store.insert(make_task(n, tags=("x",)))
    damage(sqlite_store, "t-2", column, text)
    task = sqlite_store.get("t-2")
    assert task is not None
    assert len(task.unreadable) == 1
    assert task.unreadable[0].startswith(why)
    assert len(task.unreadable[0]) < 200
    placeholder: Any = {"arguments": {}, "result": None, "tags": ()}[column]
    assert getattr(task, column) == placeholder
    assert (task.task_id, task.state, task.created_at) == (
        "t-2",
        TaskState.COMPLETED,
        T0 + timedelta(seconds=2),
    )
    page, _ = sqlite_store.list()
    assert [t.task_id for t in page] == ["t-3", "t-2", "t-1"]
    assert page[1] == task
    assert not page[0].unreadable
    assert not page[2].unreadable


def test_unreadable_values_are_left_out_of_the_message_and_named() -> None:
    task = make_task(
        state=TaskState.FAILED,
        arguments={},
        result=None,
        error=TaskError("TOOL_ERROR", "boom"),
        unreadable=("arguments: the stored value is not valid JSON (x)",),
    )
    message = task_to_proto(task)
    assert not message.HasField("arguments")
    assert not message.HasField("result")
    assert message.error.reason == Reason.STORED_VALUE_UNREADABLE
    assert message.error.message == (
        "arguments: the stored value is not valid JSON (x) (the task's own error: TOOL_ERROR: boom)"
    )


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"result": {"result": 2**1100}}, ["result.result: integer is too large"]),
        ({"arguments": deep(33)}, ["arguments.a.a"]),
        ({"arguments": deep(33), "result": {"echo": deep(33)}}, ["arguments.a", "result.echo"]),
        ({"result": {"x": float("inf")}}, ["result.x: inf is not a finite number"]),
    ],
)
def test_values_no_client_could_parse_are_left_out(
    fields: dict[str, Any], named: list[str]
) -> None:
    # What an older version stored: task_to_proto raised OverflowError, or a
    # client failed to parse the over-deep Struct.
    message = task_to_proto(make_task(**fields))
    response = pb.GetTaskResponse.FromString(pb.GetTaskResponse(task=message).SerializeToString())
    assert response.task == message
    assert message.error.reason == Reason.STORED_VALUE_UNREADABLE
    for text in named:
        assert text in message.error.message
    for field in fields:
        assert not message.HasField(field)
    if "arguments" not in fields:
        assert message.arguments == dict_to_struct({"n": 1})


def test_a_readable_task_converts_unchanged() -> None:
    message = task_to_proto(make_task())
    assert message.result == dict_to_struct({"echo": {"n": 1}})
    assert not message.HasField("error")


def test_a_task_too_large_for_a_response_keeps_its_identity_and_error() -> None:
    task = make_task(
        state=TaskState.FAILED,
        arguments={"blob": "x" * 5000},
        result=None,
        error=TaskError("TOOL_ERROR", "boom"),
    )
    small = fit_task(task_to_proto(make_task()), 1000)
    assert small == task_to_proto(make_task())
    message = fit_task(task_to_proto(task), 1000)
    assert message.ByteSize() < 1000
    assert (message.task_id, message.state) == (task.task_id, types_pb2.TASK_STATE_FAILED)
    assert not message.HasField("arguments")
    assert message.error.reason == Reason.STORED_VALUE_TOO_LARGE
    assert "the task's own error: TOOL_ERROR: boom" in message.error.message


def test_a_page_stops_before_the_task_that_would_overflow_it() -> None:
    tasks = [make_task(n, arguments={"blob": "x" * 400}) for n in range(10)]
    converted: list[Task] = []

    def convert(task: Task) -> types_pb2.Task:
        converted.append(task)
        return task_to_proto(task)

    limit = 2000
    page = fit_page(tasks, convert, limit)
    assert 1 < len(page) < len(tasks)
    assert pb.ListTasksResponse(tasks=page).ByteSize() <= limit
    with_next = pb.ListTasksResponse(tasks=[*page, task_to_proto(tasks[len(page)])])
    assert with_next.ByteSize() > limit
    assert len(converted) == len(page) + 1  # the rest is not converted
    assert [m.task_id for m in page] == [t.task_id for t in tasks[: len(page)]]


def test_a_task_too_large_for_any_page_is_shrunk_where_it_starts_one() -> None:
    big = make_task(2, arguments={"blob": "x" * 5000})
    tasks = [make_task(1), big, make_task(3)]
    first = fit_page(tasks, task_to_proto, 1000)
    assert [m.task_id for m in first] == ["t-1"]
    second = fit_page(tasks[1:], task_to_proto, 1000)
    assert [m.task_id for m in second] == ["t-2", "t-3"]
    assert second[0].error.reason == Reason.STORED_VALUE_TOO_LARGE
    assert fit_page([], task_to_proto, 1000) == []


# Values a task may hold once accepted (arguments from a parsed Struct, results
# through the gate): generated freely, kept if the gate accepts them.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


def accepted(value: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return checked_result(value, 1024 * 1024)
    except ToolError:
        return None


_OBJECTS = (
    st.dictionaries(st.text(max_size=6), _VALUES, max_size=5)
    .map(accepted)
    .filter(lambda value: value is not None)
)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    impl: TaskStore = (
        SqliteTaskStore(tmp_path / "tasks.db") if request.param == "sqlite" else MemoryTaskStore()
    )
    with closing(impl):
        yield impl


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arguments=_OBJECTS,
    result=_OBJECTS,
    tags=st.lists(st.text(max_size=8), max_size=3),
    key=st.text(max_size=12),
)
def test_every_accepted_task_round_trips_unchanged(
    store: TaskStore,
    arguments: dict[str, Any],
    result: dict[str, Any],
    tags: list[str],
    key: str,
) -> None:
    task = Task(
        task_id=str(uuid.uuid4()),
        tool="echo",
        arguments=arguments,
        state=TaskState.SUBMITTED,
        created_at=T0,
        updated_at=T0,
        idempotency_key=key and str(uuid.uuid4()) + key,
        tags=tuple(tags),
        timeout=1.5,
    )
    store.insert(task)
    assert store.get(task.task_id) == task
    done = task.start(T0).complete(result, T0 + timedelta(seconds=1))
    store.update(done)
    back = store.get(task.task_id)
    assert back == done
    assert not back.unreadable
    message = task_to_proto(back)
    assert not message.HasField("error")
    assert message.result == dict_to_struct(result)
    assert message.arguments == dict_to_struct(arguments)


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 0.5, 1.5, 60.0, 3600.25, -1.5, -0.25, 1e9 + 0.75])
def test_durations_convert_as_protobuf_converts_them(seconds: float) -> None:
    expected = duration_pb2.Duration()
    expected.FromNanoseconds(round(seconds * 1e9))
    assert task_to_proto(make_task(timeout=seconds)).timeout == expected


def test_times_set_by_one_transition_convert_like_separate_ones() -> None:
    later = T0 + timedelta(seconds=3, microseconds=7)
    task = make_task(created_at=T0, started_at=later, updated_at=later, finished_at=later)
    copy = make_task(
        created_at=T0 + timedelta(0),
        started_at=later + timedelta(0),
        updated_at=later + timedelta(0),
        finished_at=later + timedelta(0),
    )
    assert task.updated_at is task.finished_at
    assert copy.updated_at is not copy.finished_at
    message = task_to_proto(task)
    assert message == task_to_proto(copy)
    assert message.finished_at.ToDatetime(UTC) == later
    assert message.created_at.ToDatetime(UTC) == T0
    assert task_to_proto(make_task(created_at=T0, updated_at=T0)).created_at == message.created_at


def test_a_checked_result_converts_like_a_plain_one() -> None:
    result = {"echo": {"n": [1, 2.5, None, True, "x"], "m": {}}}
    checked = checked_result(result, 1 << 20)
    assert task_to_proto(make_task(result=checked)) == task_to_proto(make_task(result=result))
    # A plain dict is still checked: what an older version stored is left out.
    message = task_to_proto(make_task(result={"x": float("nan")}))
    assert not message.HasField("result")
