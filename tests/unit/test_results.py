"""The result gate (tasks/results.py) and the Struct contract it relies on,
with property tests: whatever a tool returns is either refused or survives
every trip a stored result makes (Struct, the wire, a standard parser)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.errors import InvalidArgument, ToolError
from praxis_grpc.tasks.json_values import (
    MAX_JSON_DEPTH,
    CheckedObject,
    check_json_object,
    compact_json,
)
from praxis_grpc.tasks.model import Reason, Task, TaskState
from praxis_grpc.tasks.results import checked_result, storable, struct_bytes
from praxis_grpc.wire import dict_to_struct, struct_to_dict

SETTINGS = settings(max_examples=200, deadline=None)


def nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = {"k": value} if depth % 2 else [value]
    return value


def scalars(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**1100), max_value=2**1100)
        | st.integers(min_value=-(2**60), max_value=2**60)
        | st.floats()
        | text
    )


def json_like(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of any JSON-ish shape: non-finite floats, ints beyond a double,
    and (through ``nest``) depths beyond the limit included."""
    values = st.recursive(
        scalars(text),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=30,
    )
    deep = st.tuples(values, st.integers(0, MAX_JSON_DEPTH + 4)).map(lambda t: nest(*t))
    return st.dictionaries(text, values | deep, max_size=5)


# Strings a protobuf parser can produce: no lone surrogates.
VALID_TEXT = st.text(max_size=12)
# Strings a tool can return: anything Python holds.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)


def as_doubles(value: Any) -> Any:
    """``value`` as a Struct holds it: every number a double."""
    if isinstance(value, dict):
        return {key: as_doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_doubles(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def outcome(check: Callable[..., Any], *args: Any) -> Any:
    """What ``check(*args)`` returned, or the domain error it raised."""
    try:
        return check(*args)
    except (InvalidArgument, ToolError) as exc:
        return exc


def over_the_wire(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` stored as a result, sent in a GetTaskResponse, parsed, converted back."""
    response = pb.GetTaskResponse(task=types_pb2.Task(result=dict_to_struct(value)))
    parsed = pb.GetTaskResponse.FromString(response.SerializeToString())
    return struct_to_dict(parsed.task.result, "result")


@SETTINGS
@given(json_like(VALID_TEXT))
def test_what_check_json_object_accepts_survives_the_wire(value: dict[str, Any]) -> None:
    refusal = outcome(check_json_object, value, "result")
    if isinstance(refusal, InvalidArgument):
        assert refusal.field.startswith("result")
    else:
        assert as_doubles(over_the_wire(value)) == as_doubles(value)


@SETTINGS
@given(json_like(ANY_TEXT), st.integers(1024, 4096))
def test_what_the_result_gate_accepts_survives_the_wire(
    value: dict[str, Any], max_bytes: int
) -> None:
    stored = outcome(checked_result, value, max_bytes)
    if isinstance(stored, ToolError):
        assert stored.reason in (Reason.RESULT_INVALID, Reason.RESULT_TOO_LARGE)
        assert len(stored.message) <= 200
        return
    assert as_doubles(stored) == as_doubles(value)
    assert as_doubles(over_the_wire(stored)) == as_doubles(value)
    assert struct_bytes(stored) <= max_bytes


def gate_by_definition(result: dict[str, Any], max_bytes: int) -> Any:
    """What checked_result documents, step by step: one trip through JSON,
    check_json_object, struct_bytes, the limit (None if accepted)."""
    normalized = json.loads(json.dumps(result, allow_nan=False))
    try:
        check_json_object(normalized, "result")
        size = struct_bytes(normalized)
    except InvalidArgument as exc:
        return f"tool returned a result that cannot be stored: {exc}"[:199]
    return size if size > max_bytes else None


@SETTINGS
@given(json_like(ANY_TEXT), st.integers(16, 4096))
def test_the_result_gate_refuses_and_measures_as_defined(
    value: dict[str, Any], max_bytes: int
) -> None:
    # However checked_result is made fast, it must refuse exactly what its
    # definition refuses, with the same message, and measure the same size.
    try:
        expected = gate_by_definition(value, max_bytes)
    except (TypeError, ValueError, RecursionError):
        return  # not JSON: refused before any check
    stored = outcome(checked_result, value, max_bytes)
    if isinstance(expected, str):
        assert isinstance(stored, ToolError)
        assert stored.message.startswith(expected)
    elif isinstance(expected, int):
        assert isinstance(stored, ToolError)
        assert f"result of {expected} bytes" in stored.message
    else:
        assert type(stored) is CheckedObject
        assert stored == json.loads(json.dumps(value))


@pytest.mark.parametrize("length", [0, 1, 120, 127, 128, 200, 16_383, 16_384, 70_000])
def test_the_size_of_long_strings_and_keys_counts_their_length_bytes(length: int) -> None:
    for result in ({"s": "é" * length}, {"k" * length: ["x" * length, {"x": "y" * length}]}):
        size = struct_bytes(result)
        message = dict_to_struct(result)
        assert message is not None
        assert size == message.ByteSize()
        assert checked_result(result, size) == result
        with pytest.raises(ToolError, match=f"result of {size} bytes"):
            checked_result(result, size - 1)


def test_nesting_at_the_limit_is_accepted_and_one_more_is_refused() -> None:
    shapes: list[Any] = [{}, []]
    for shape in shapes:
        inner: Any = shape
        for _ in range(MAX_JSON_DEPTH - 2):
            inner = {"k": inner}
        assert checked_result({"k": inner}, 1 << 20) == {"k": inner}
        with pytest.raises(ToolError, match="nested more than"):
            checked_result({"k": [inner]}, 1 << 20)


@SETTINGS
@given(json_like(VALID_TEXT))
def test_struct_bytes_is_the_struct_wire_size(value: dict[str, Any]) -> None:
    try:
        check_json_object(value, "result")
    except InvalidArgument:
        return
    message = dict_to_struct(value)
    assert message is not None
    assert struct_bytes(value) == message.ByteSize()


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"result": 2**1100}, "result.result: integer is too large for a JSON number"),
        ({"n": int("1" * 1000)}, "result.n: integer is too large"),
        ({"echo": nest({}, MAX_JSON_DEPTH)}, f"nested more than {MAX_JSON_DEPTH} levels deep"),
        ({"x": math.nan}, "not JSON"),
        ({"s": "\ud800"}, "not valid Unicode"),
        ({"x": object()}, "not JSON"),
        ([1, 2], "tool returned list, expected a JSON object"),
        ({"k" * 500: nest(1, MAX_JSON_DEPTH + 5)}, "nested more than"),
    ],
)
def test_results_that_cannot_be_stored_are_refused_naming_the_path(
    result: Any, message: str
) -> None:
    with pytest.raises(ToolError) as info:
        checked_result(result, 1024 * 1024)
    assert info.value.reason == Reason.RESULT_INVALID
    assert message in info.value.message
    assert len(info.value.message) <= 200


def test_the_size_limit_is_the_struct_size_and_inclusive() -> None:
    result = {"blob": "x" * 1000, "list": [None, 1.5, True]}
    size = struct_bytes(result)
    assert checked_result(result, size) == result
    with pytest.raises(ToolError, match=f"result of {size} bytes") as info:
        checked_result(result, size - 1)
    assert info.value.reason == Reason.RESULT_TOO_LARGE


def test_results_are_normalized_through_json() -> None:
    assert checked_result({"t": (1, 2), 3: "x"}, 1024) == {"t": [1, 2], "3": "x"}


def foreign(result: dict[str, Any]) -> Task:
    """A task agent-b reports COMPLETED with ``result``."""
    now = datetime(2024, 1, 1, tzinfo=UTC)
    return Task(
        task_id="t",
        tool="echo",
        arguments={},
        state=TaskState.COMPLETED,
        created_at=now,
        updated_at=now,
        owner_agent_id="agent-b",
        result=result,
        finished_at=now,
    )


def test_a_foreign_result_that_cannot_be_stored_fails_the_record() -> None:
    task = foreign({"echo": nest({}, MAX_JSON_DEPTH)})
    failed = storable(task, 1024 * 1024)
    assert failed.state is TaskState.FAILED
    assert failed.result is None
    assert failed.error is not None
    assert failed.error.reason == Reason.RESULT_INVALID
    assert "agent agent-b returned a result that cannot be stored" in failed.error.message
    fine = Task(**{**task.__dict__, "result": {"ok": 1}})
    assert storable(fine, 1024 * 1024) == fine
    assert storable(fine, 4).error.reason == Reason.RESULT_TOO_LARGE  # type: ignore[union-attr]


@SETTINGS
@given(json_like(ANY_TEXT) | st.lists(st.text()), st.booleans())
def test_the_compact_encoder_writes_what_json_writes(value: Any, sort_keys: bool) -> None:
    # Rows and request fingerprints are written with it: the text must not change.
    expected = json.JSONEncoder(separators=(",", ":"), sort_keys=sort_keys).encode(value)
    assert compact_json(sort_keys=sort_keys)(value) == expected


def test_a_foreign_result_that_is_json_already_is_kept_as_it_is() -> None:
    task = foreign({"n": 1, "items": [1.5, None, {"s": "x"}]})
    assert storable(task, 1024) is task
    tuples: dict[str, Any] = {"t": (1, 2)}
    assert storable(replace(task, result=tuples), 1024).result == {"t": [1, 2]}
