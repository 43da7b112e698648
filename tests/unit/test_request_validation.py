"""Request validation and conversion at the API boundary, by example and by
property (hypothesis): every request either converts or is refused with
InvalidArgument naming its field, and what converts round-trips."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from google.protobuf import duration_pb2, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc.api.errors import MAX_MESSAGE_BYTES, status_message
from praxis_grpc.api.interceptors import ThrottledLog
from praxis_grpc.errors import InvalidArgument, quote, quote_all
from praxis_grpc.tasks.json_values import MAX_JSON_DEPTH, check_json_object
from praxis_grpc.tasks.store import Cursor
from praxis_grpc.wire import dict_to_struct, duration_seconds, struct_to_dict
from praxis_grpc.wire_input import submission_from_proto

T = TypeVar("T")
LIMIT = 1024 * 1024
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": leaf}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_argument_size_is_checked_in_wire_bytes_before_conversion() -> None:
    # A NaN would be refused by the conversion; the size is refused first.
    arguments = _struct({"text": "x" * 2000})
    arguments.fields["bad"].number_value = math.nan
    request = pb.SubmitTaskRequest(tool="echo", arguments=arguments)
    with pytest.raises(InvalidArgument, match=r"^arguments: \d+ bytes exceeds the limit of 1024"):
        submission_from_proto(request, 1024)
    # Wire bytes, not escaped JSON: 300 CJK characters are 900 bytes of UTF-8
    # (1,800 of ASCII-escaped JSON); 400 are 1,200.
    fits = pb.SubmitTaskRequest(tool="echo", arguments=_struct({"t": "字" * 300}))
    assert submission_from_proto(fits, 1024).arguments == {"t": "字" * 300}
    too_big = pb.SubmitTaskRequest(tool="echo", arguments=_struct({"t": "字" * 400}))
    with pytest.raises(InvalidArgument, match=r"^arguments: "):
        submission_from_proto(too_big, 1024)


def test_depth_limit_names_the_deepest_accepted_path() -> None:
    assert struct_to_dict(_struct(_nested(MAX_JSON_DEPTH))) == _nested(MAX_JSON_DEPTH)
    with pytest.raises(InvalidArgument) as info:
        struct_to_dict(_struct(_nested(MAX_JSON_DEPTH + 1)))
    assert info.value.field == "arguments" + ".a" * MAX_JSON_DEPTH
    assert f"nested more than {MAX_JSON_DEPTH} levels deep" in info.value.message
    # Lists count as levels too, as in check_json_object.
    listed: Any = 1
    for _ in range(MAX_JSON_DEPTH):
        listed = [listed]
    with pytest.raises(InvalidArgument, match=r"^arguments\.x(\[0\]){19}: is nested"):
        struct_to_dict(_struct({"x": listed}))


def test_long_keys_are_clipped_in_field_paths() -> None:
    message = _struct({"k" * 5000: [1, math.inf]})
    with pytest.raises(InvalidArgument) as info:
        struct_to_dict(message)
    assert info.value.field == "arguments." + "k" * 39 + "…[1]"


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (1, 500_000_000, 1.5),
        (-1, -500_000_000, -1.5),
        (0, -5, -5e-9),
        (315_576_000_000, 999_999_999, 315_576_000_000 + 0.999999999),
    ],
)
def test_valid_durations(seconds: int, nanos: int, expected: float) -> None:
    value = duration_seconds(duration_pb2.Duration(seconds=seconds, nanos=nanos), "timeout")
    assert value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("seconds", "nanos", "problem"),
    [
        (1, -999_999_999, "same sign"),
        (-1, 1, "same sign"),
        (0, 10**9, "nanos"),
        (0, -(10**9), "nanos"),
        (315_576_000_001, 0, "seconds"),
        (-(2**63), 0, "seconds"),
    ],
)
def test_invalid_durations_name_the_field(seconds: int, nanos: int, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^timeout: not a valid Duration.*{problem}"):
        submission_from_proto(
            pb.SubmitTaskRequest(
                tool="echo", timeout=duration_pb2.Duration(seconds=seconds, nanos=nanos)
            ),
            LIMIT,
        )


def test_quotes_are_short() -> None:
    assert quote("nope") == "'nope'"
    assert quote("x" * 100_000) == "'" + "x" * 99 + "…'"
    assert quote_all(["gpu", "fast"]) == "['gpu', 'fast']"
    many = quote_all(["t" * 60] * 1000)
    assert len(many) < 250
    assert many.endswith("… 998 more]")


def test_status_messages_are_capped_in_utf8_bytes() -> None:
    assert status_message("short") == "short"
    capped = status_message("é" * 10_000)
    assert len(capped.encode()) <= MAX_MESSAGE_BYTES
    assert capped.endswith("…")


def test_page_tokens_are_bounded_before_decoding() -> None:
    with pytest.raises(ValueError, match="longer than"):
        Cursor.decode("W" * 100_000)
    deep = "W1tb" * 120  # base64 of "[[[" * 120: within the length bound
    with pytest.raises(ValueError, match="invalid page token"):
        Cursor.decode(deep)


def test_throttled_log_counts_what_it_suppresses(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    throttled = ThrottledLog(logging.getLogger("test.throttle"), 1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.throttle"):
        for _ in range(5):
            throttled.warning("bad request %d", 7)
        now[0] += 0.5
        throttled.warning("bad request %d", 8)
        now[0] += 0.6
        throttled.warning("bad request %d", 9)
        now[0] += 2
        throttled.warning("bad request %d", 10)
    assert [r.getMessage() for r in caplog.records] == [
        "bad request 7",
        "bad request 9 (5 more like it not logged)",
        "bad request 10",
    ]


# --- properties ---------------------------------------------------------------

_keys = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2.0**53, 2.0**53 + 2, -(2.0**63), 1e308, -0.0, 5e-324]),
)
_scalars = st.one_of(
    st.just(struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)),
    st.just(struct_pb2.Value()),  # no kind set: reads as null
    st.booleans().map(lambda b: struct_pb2.Value(bool_value=b)),
    _numbers.map(lambda x: struct_pb2.Value(number_value=x)),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(
        lambda s: struct_pb2.Value(string_value=s)
    ),
)


def _list_value(items: list[struct_pb2.Value]) -> struct_pb2.Value:
    value = struct_pb2.Value()
    value.list_value.values.extend(items)
    return value


def _struct_value(fields: dict[str, struct_pb2.Value]) -> struct_pb2.Value:
    value = struct_pb2.Value()
    for key, item in fields.items():
        value.struct_value.fields[key].CopyFrom(item)
    return value


_trees = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(_list_value),
        st.dictionaries(_keys, children, max_size=4).map(_struct_value),
    ),
    max_leaves=30,
)


@st.composite
def _values(draw: st.DrawFn) -> struct_pb2.Value:
    """A tree, sometimes wrapped in a chain of containers around the depth limit."""
    value = draw(_trees)
    for wrap in draw(st.lists(st.booleans(), max_size=MAX_JSON_DEPTH + 6)):
        value = _list_value([value]) if wrap else _struct_value({"k": value})
    return value


_structs = st.dictionaries(_keys, _values(), max_size=4).map(
    lambda fields: _struct_value(fields).struct_value
)


def _expected_problem(value: struct_pb2.Value, depth: int) -> bool:
    """True if ``value`` at nesting level ``depth`` holds a non-finite number
    or a container deeper than the limit (the reference the converter meets)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return not math.isfinite(value.number_value)
    if kind == "struct_value":
        children = list(value.struct_value.fields.values())
    elif kind == "list_value":
        children = list(value.list_value.values)
    else:
        return False
    return depth > MAX_JSON_DEPTH or any(_expected_problem(c, depth + 1) for c in children)


def _outcome(function: Callable[..., T], *args: Any) -> T | InvalidArgument:
    """What ``function`` returns, or the InvalidArgument it raises (any other
    exception fails the test)."""
    try:
        return function(*args)
    except InvalidArgument as exc:
        return exc


def _under_arguments(field: str) -> bool:
    return field == "arguments" or field.startswith(("arguments.", "arguments["))


@PROPERTY
@given(_structs)
def test_structs_convert_and_round_trip_or_are_refused_under_arguments(
    message: struct_pb2.Struct,
) -> None:
    bad = any(_expected_problem(v, 2) for v in message.fields.values())
    converted = _outcome(struct_to_dict, message)
    if isinstance(converted, InvalidArgument):
        assert bad
        assert _under_arguments(converted.field), converted.field
        return
    assert not bad
    check_json_object(converted, "arguments")  # what the store and responses need
    back = dict_to_struct(converted)
    assert back is not None
    assert struct_to_dict(back) == converted
    # Every client can parse the response that carries it.
    response = pb.SubmitTaskRequest(arguments=back).SerializeToString()
    assert pb.SubmitTaskRequest.FromString(response).arguments == back


_text = st.text(max_size=40) | st.text(alphabet="x", min_size=250, max_size=300)
_int64 = st.integers(-(2**63), 2**63 - 1)
_int32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def _requests(draw: st.DrawFn) -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest(
        tool=draw(_text),
        arguments=draw(_structs),
        idempotency_key=draw(_text),
        tags=draw(st.lists(_text, max_size=3)),
        preferred_agent=draw(_text),
        wait=draw(st.booleans()),
        task_id=draw(_text),
    )
    if draw(st.booleans()):
        request.timeout.CopyFrom(duration_pb2.Duration(seconds=draw(_int64), nanos=draw(_int32)))
    return request


@PROPERTY
@given(_requests(), st.integers(1024, LIMIT))
def test_submissions_convert_or_raise_invalid_argument(
    request: pb.SubmitTaskRequest, limit: int
) -> None:
    submission = _outcome(submission_from_proto, request, limit)
    if isinstance(submission, InvalidArgument):
        field = submission.field.split(".")[0].split("[")[0]
        assert field in {
            "tool",
            "arguments",
            "idempotency_key",
            "timeout",
            "tags",
            "preferred_agent",
            "origin_agent_id",
        }
        assert len(submission.message) < 400
        return
    assert submission.tool == request.tool
    assert request.arguments.ByteSize() <= limit
    assert submission.timeout is None or 0 < submission.timeout < math.inf
    check_json_object(submission.arguments, "arguments")
