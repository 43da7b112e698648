"""Struct and task conversion at the API boundary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import struct_pb2

from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.errors import InvalidArgument
from praxis_grpc.tasks.model import Task, TaskError, TaskState
from praxis_grpc.wire import dict_to_struct, struct_to_dict, task_from_proto, task_to_proto


def test_round_trip_keeps_integers_integral() -> None:
    data = {"n": 3, "x": 2.5, "s": "é", "b": True, "none": None, "list": [1, {"deep": [2.0]}]}
    message = dict_to_struct(data)
    assert message is not None
    back = struct_to_dict(message)
    assert back == {"n": 3, "x": 2.5, "s": "é", "b": True, "none": None, "list": [1, {"deep": [2]}]}
    assert isinstance(back["n"], int)
    assert isinstance(back["x"], float)


def test_non_finite_numbers_are_rejected_with_their_path() -> None:
    message = struct_pb2.Struct()
    message.update({"outer": {"values": [1, 2]}})
    outer = message.fields["outer"].struct_value
    outer.fields["values"].list_value.values[1].number_value = float("nan")
    with pytest.raises(InvalidArgument, match=r"arguments\.outer\.values\[1\]: nan"):
        struct_to_dict(message)


def _task(**fields: Any) -> Task:
    moment = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)
    task = Task(
        task_id="0b6f5a52-52f4-4a51-9b59-7d3f7a0c1f2e",
        tool="echo",
        arguments={"text": "hé", "n": 3, "nested": {"list": [1, 2.5, None, True]}},
        state=TaskState.SUBMITTED,
        created_at=moment,
        updated_at=moment,
    )
    return replace(task, **fields)


def test_task_round_trips_through_its_message() -> None:
    start = datetime(2024, 5, 17, 12, 30, 46, 5, tzinfo=UTC)
    end = start + timedelta(seconds=3, microseconds=999999)
    tasks = [
        _task(),
        _task(
            state=TaskState.COMPLETED,
            result={"answer": 42, "ratio": 0.5, "items": ["a", {"b": False}]},
            owner_agent_id="agent-b",
            origin_agent_id="agent-a",
            idempotency_key="key-1",
            timeout=12.75,
            tags=("gpu", "eu-west"),
            preferred_agent="agent-b",
            updated_at=end,
            started_at=start,
            finished_at=end,
            attempt=2,
        ),
        _task(
            state=TaskState.FAILED,
            error=TaskError("TOOL_ERROR", "it broke: ✗"),
            arguments={},
            updated_at=end,
            finished_at=end,
        ),
    ]
    for task in tasks:
        message = types_pb2.Task.FromString(task_to_proto(task).SerializeToString())
        back = task_from_proto(message)
        assert back == task
        assert back.created_at.utcoffset() == timedelta(0)
    assert task_to_proto(tasks[1]).origin_agent_id == "agent-a"


def test_task_from_proto_reads_unset_and_zero_fields_as_absent() -> None:
    message = task_to_proto(_task())
    message.started_at.SetInParent()  # present but zero
    message.ClearField("timeout")

    task = task_from_proto(message)

    assert (task.started_at, task.finished_at, task.result, task.error) == (None, None, None, None)
    assert task.timeout == 0.0
    assert task.origin_agent_id == ""


def test_task_from_proto_rejects_an_unknown_state() -> None:
    message = task_to_proto(_task())
    message.state = types_pb2.TASK_STATE_UNSPECIFIED

    with pytest.raises(InvalidArgument, match=r"^task\.state: 0 is not a task state"):
        task_from_proto(message)


def test_task_from_proto_takes_the_arguments_the_caller_holds() -> None:
    message = task_to_proto(_task(arguments={"n": 1}))
    held = {"n": 1}

    task = task_from_proto(message, held)

    assert task.arguments is held  # not decoded again
    assert task == task_from_proto(message)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 1),
        (1_715_949_046, 999_999_999),
        (-1, 500_000_000),
        (-62_135_596_800, 0),  # 0001-01-01T00:00:00Z
        (253_402_300_799, 999_999_999),  # 9999-12-31T23:59:59.999999999Z
    ],
)
def test_timestamps_read_as_protobuf_reads_them(seconds: int, nanos: int) -> None:
    message = task_to_proto(_task())
    message.updated_at.seconds, message.updated_at.nanos = seconds, nanos

    read = task_from_proto(message).updated_at

    expected = message.updated_at.ToDatetime(tzinfo=UTC)
    assert (read, read.utcoffset()) == (expected, timedelta(0))


def test_a_timestamp_out_of_range_is_refused_as_protobuf_refuses_it() -> None:
    message = task_to_proto(_task())
    message.updated_at.seconds = 253_402_300_800

    with pytest.raises(ValueError, match="Timestamp is not valid"):
        task_from_proto(message)
