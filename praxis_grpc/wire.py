"""Conversions between domain objects and ``praxis.v1`` messages, shared by
the public servicers (api/), the peer protocol (peers/) and the card codec."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.cards import AgentCard, CardLoad, Endpoint, ToolInfo
from praxis_grpc.errors import InvalidArgument, clip
from praxis_grpc.tasks.json_values import MAX_JSON_DEPTH, CheckedObject, check_json_object
from praxis_grpc.tasks.model import Reason, Task, TaskError, TaskState

_ROLES = {
    "peer": types_pb2.AGENT_ROLE_PEER,
    "coordinator": types_pb2.AGENT_ROLE_COORDINATOR,
    "standby": types_pb2.AGENT_ROLE_STANDBY,
}
_MAX_SAFE_INT = 2**53  # integers above this are not exact in a double
_MAX_OMITTED_MESSAGE = 600
_MAX_KEY_SHOWN = 40  # characters of an object key shown in a field path
# google/protobuf/duration.proto: about 10,000 years, and nanos of one second.
_MAX_DURATION_SECONDS = 315_576_000_000
_MAX_NANOS = 999_999_999
# google/protobuf/timestamp.proto: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRANSPORTS = {
    "grpc": types_pb2.TRANSPORT_GRPC,
    "libp2p": types_pb2.TRANSPORT_LIBP2P,
    "peer": types_pb2.TRANSPORT_PEER_TLS,
}


_ROLE_NAMES = {value: name for name, value in _ROLES.items()}
_TRANSPORT_NAMES = {value: name for name, value in _TRANSPORTS.items()}
_TASK_STATES = {state.value: state for state in TaskState}
_NOTHING: frozenset[str] = frozenset()


def struct_to_dict(
    message: struct_pb2.Struct, path: str = "arguments", *, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """A Struct as a plain JSON-compatible dict.

    Struct numbers are doubles; integral ones come back as ``int`` so tools
    see ``3`` where a client sent ``3``. ``path`` names the field in errors.
    Accepts what :func:`~praxis_grpc.tasks.json_values.check_json_object`
    accepts, so the dict converts back to a Struct that every client can parse.

    Raises:
        InvalidArgument: a number is NaN or infinite (not JSON), or an object
            or list is nested more than ``max_depth`` levels deep (the Struct
            itself is level 1); the field is the offending value's path below
            ``path``, such as ``arguments.rows[3].name``.
    """
    try:
        return _object(message, 2, max_depth)
    except _Refused as exc:
        raise InvalidArgument(_path(path, reversed(exc.parts)), exc.message) from None


class _Refused(Exception):
    """A value that is not JSON; ``parts`` is its path, innermost first,
    collected as the exception leaves each level (the accepting path builds no
    path strings)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.parts: list[str | int] = []


def _object(message: struct_pb2.Struct, depth: int, max_depth: int) -> dict[str, Any]:
    """The fields of ``message``, whose values are at nesting level ``depth``."""
    result = {}
    for key, value in message.fields.items():
        try:
            result[key] = _value(value, depth, max_depth)
        except _Refused as exc:
            exc.parts.append(key)
            raise
    return result


def _value(value: struct_pb2.Value, depth: int, max_depth: int) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "null_value" or kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise _Refused(f"{number} is not a finite number")
        return int(number) if number.is_integer() and abs(number) <= _MAX_SAFE_INT else number
    if kind == "bool_value":
        return value.bool_value
    if depth > max_depth:
        raise _Refused(f"is nested more than {max_depth} levels deep")
    if kind == "struct_value":
        return _object(value.struct_value, depth + 1, max_depth)
    items = []
    for index, item in enumerate(value.list_value.values):
        try:
            items.append(_value(item, depth + 1, max_depth))
        except _Refused as exc:
            exc.parts.append(index)
            raise
    return items


def _path(root: str, parts: Iterable[str | int]) -> str:
    """``arguments`` and ``["rows", 3]`` -> ``arguments.rows[3]``; long keys are clipped."""
    return root + "".join(
        f"[{part}]" if isinstance(part, int) else f".{clip(part, _MAX_KEY_SHOWN)}" for part in parts
    )


def duration_seconds(message: duration_pb2.Duration, field: str) -> float:
    """A Duration in seconds, if it is valid by the rules of
    ``google/protobuf/duration.proto``.

    Raises:
        InvalidArgument: ``seconds`` is outside ±315,576,000,000, ``nanos``
            outside ±999,999,999, or the two have opposite signs.
    """
    seconds, nanos = message.seconds, message.nanos
    if not -_MAX_DURATION_SECONDS <= seconds <= _MAX_DURATION_SECONDS:
        problem = f"seconds must be within ±{_MAX_DURATION_SECONDS}"
    elif not -_MAX_NANOS <= nanos <= _MAX_NANOS:
        problem = f"nanos must be within ±{_MAX_NANOS}"
    elif (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        problem = "seconds and nanos must have the same sign"
    else:
        return seconds + nanos / 1e9
    raise InvalidArgument(field, f"not a valid Duration ({problem})")


def dict_to_struct(data: dict[str, Any] | None) -> struct_pb2.Struct | None:
    """A plain JSON-compatible dict as a Struct (None stays None)."""
    if data is None:
        return None
    message = struct_pb2.Struct()
    message.update(data)
    return message


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A datetime as a Timestamp (None stays None)."""
    if value is None:
        return None
    # Equivalent to Timestamp.FromDatetime for aware datetimes, without its
    # pure-Python calendar arithmetic (this runs several times per response).
    seconds = value.timestamp()
    return timestamp_pb2.Timestamp(seconds=math.floor(seconds), nanos=value.microsecond * 1000)


@overload
def duration(seconds: float) -> duration_pb2.Duration: ...
@overload
def duration(seconds: None) -> None: ...
def duration(seconds: float | None) -> duration_pb2.Duration | None:
    """Seconds as a Duration (None stays None), rounded to the nanosecond."""
    if seconds is None:
        return None
    # Duration.FromNanoseconds without its pure-Python normalisation: whole
    # seconds and nanos of the same sign.
    whole, nanos = divmod(abs(round(seconds * 1e9)), 1_000_000_000)
    if seconds < 0:
        return duration_pb2.Duration(seconds=-whole, nanos=-nanos)
    return duration_pb2.Duration(seconds=whole, nanos=nanos)


def task_to_proto(task: Task, arguments: struct_pb2.Struct | None = None) -> types_pb2.Task:
    """A domain task as ``praxis.v1.Task``; never fails on the task's values.

    ``arguments``, when given, is the task's arguments already as a Struct
    (the request's), which saves converting them back.

    Arguments or a result that cannot be returned (the store could not
    decode them, see ``Task.unreadable``, or they break the contract of
    :mod:`praxis_grpc.tasks.json_values`: values stored by an older version)
    are left unset, and ``error`` says so with reason
    ``STORED_VALUE_UNREADABLE`` (see :func:`omitted_error`), so one bad task
    cannot fail a read that includes it.
    """
    omitted = list(task.unreadable)
    damaged = {entry.partition(":")[0] for entry in omitted} if omitted else _NOTHING
    if arguments is None and "arguments" not in damaged:
        arguments = _returnable(task.arguments, "arguments", omitted)
    result = None
    if task.result is not None and "result" not in damaged:
        result = _returnable(task.result, "result", omitted)
    error = task.error
    if omitted:
        error = omitted_error(Reason.STORED_VALUE_UNREADABLE, "; ".join(omitted), task.error)
    # A transition sets several of the times to one value: converted once.
    updated = task.updated_at
    updated_at = timestamp(updated)
    created_at = updated_at if task.created_at is updated else timestamp(task.created_at)
    started_at = updated_at if task.started_at is updated else timestamp(task.started_at)
    finished_at = updated_at if task.finished_at is updated else timestamp(task.finished_at)
    return types_pb2.Task(
        task_id=task.task_id,
        tool=task.tool,
        arguments=arguments,
        state=task.state.value,  # type: ignore[arg-type]
        result=result,
        error=types_pb2.TaskError(reason=error.reason, message=error.message) if error else None,
        idempotency_key=task.idempotency_key,
        owner_agent_id=task.owner_agent_id,
        origin_agent_id=task.origin_agent_id,
        timeout=duration(task.timeout),
        tags=task.tags,
        preferred_agent=task.preferred_agent,
        created_at=created_at,
        updated_at=updated_at,
        started_at=started_at,
        finished_at=finished_at,
        attempt=task.attempt,
        submitter=task.submitter,
        target_agent=task.target_agent,
    )


def omitted_error(reason: str, why: str, own: TaskError | None) -> TaskError:
    """The error of a task message whose arguments and/or result were left out.

    ``reason`` is ``STORED_VALUE_UNREADABLE`` or ``STORED_VALUE_TOO_LARGE``;
    the task's own error, if any, follows in the message.
    """
    message = _clip(why, _MAX_OMITTED_MESSAGE)
    if own is not None and own.reason != reason:
        message += f" (the task's own error: {own.reason}: {_clip(own.message, 1000)})"
    return TaskError(reason, message)


def _returnable(value: dict[str, Any], field: str, omitted: list[str]) -> struct_pb2.Struct | None:
    """``value`` as a Struct, or None (noted in ``omitted``) if no reader could
    take it back (see the json_values contract)."""
    try:
        if type(value) is not CheckedObject:
            check_json_object(value, field)
        return dict_to_struct(value)
    except InvalidArgument as exc:
        omitted.append(_clip(str(exc), 200))
    except (ValueError, TypeError, OverflowError) as exc:  # check_json_object misses these
        omitted.append(_clip(f"{field}: {type(exc).__name__}: {exc}", 200))
    return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def task_from_proto(message: types_pb2.Task, arguments: dict[str, Any] | None = None) -> Task:
    """A ``praxis.v1.Task`` as a domain task (inverse of :func:`task_to_proto`).

    Unset optional timestamps (or the zero timestamp) become ``None``, an
    unset timeout ``0.0``, an unset result or error ``None``. The request
    fingerprint is not part of the message and comes back empty.

    ``arguments``, when given, is the task's arguments as the caller already
    holds them (the ones it sent with the task): the message's are not
    decoded, and not checked.

    Raises:
        InvalidArgument: the state is not a task state, or a Struct holds a
            number that is not finite.
    """
    if message.state not in _TASK_STATES:
        raise InvalidArgument("task.state", f"{message.state} is not a task state")
    return Task(
        task_id=message.task_id,
        tool=message.tool,
        arguments=struct_to_dict(message.arguments, "task.arguments")
        if arguments is None
        else arguments,
        state=_TASK_STATES[message.state],
        created_at=_datetime(message.created_at),
        updated_at=_datetime(message.updated_at),
        owner_agent_id=message.owner_agent_id,
        origin_agent_id=message.origin_agent_id,
        idempotency_key=message.idempotency_key,
        timeout=duration_seconds(message.timeout, "task.timeout")
        if message.HasField("timeout")
        else 0.0,
        tags=tuple(message.tags),
        preferred_agent=message.preferred_agent,
        result=struct_to_dict(message.result, "task.result")
        if message.HasField("result")
        else None,
        error=TaskError(message.error.reason, message.error.message)
        if message.HasField("error")
        else None,
        started_at=_moment(message.started_at),
        finished_at=_moment(message.finished_at),
        attempt=message.attempt,
        submitter=message.submitter,
        target_agent=message.target_agent,
    )


def _moment(value: timestamp_pb2.Timestamp) -> datetime | None:
    """An optional timestamp: unset (which reads as zero) or zero is None."""
    if value.seconds == 0 and value.nanos == 0:
        return None
    return _datetime(value)


def _datetime(value: timestamp_pb2.Timestamp) -> datetime:
    """``value.ToDatetime(tzinfo=UTC)``, without its pure-Python checks and
    time-zone conversion for a timestamp in the valid range (it raises
    ValueError as protobuf does for one outside)."""
    seconds, nanos = value.seconds, value.nanos
    if _MIN_TIMESTAMP_SECONDS <= seconds <= _MAX_TIMESTAMP_SECONDS and 0 <= nanos <= _MAX_NANOS:
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    return value.ToDatetime(tzinfo=UTC)


def load_to_proto(load: CardLoad) -> types_pb2.Load:
    """Load figures as ``praxis.v1.Load``."""
    return types_pb2.Load(
        in_flight=load.in_flight,
        queued=load.queued,
        capacity=load.capacity,
        queue_limit=load.queue_limit,
    )


def role_to_proto(role: str) -> types_pb2.AgentRole:
    """A role name ("peer", "coordinator", "standby") as the proto enum."""
    return _ROLES.get(role, types_pb2.AGENT_ROLE_UNSPECIFIED)


def endpoints_to_proto(card: AgentCard) -> list[types_pb2.Endpoint]:
    """A card's endpoints as proto messages."""
    return [
        types_pb2.Endpoint(
            transport=_TRANSPORTS.get(e.transport, types_pb2.TRANSPORT_UNSPECIFIED),
            address=e.address,
        )
        for e in card.endpoints
    ]


def card_from_proto(message: types_pb2.AgentCard) -> AgentCard:
    """A ``praxis.v1.AgentCard`` as a domain card (inverse of :func:`card_to_proto`)."""
    return AgentCard(
        agent_id=message.agent_id,
        name=message.name,
        praxis_version=message.praxis_version,
        role=_ROLE_NAMES.get(message.role, "peer"),
        endpoints=tuple(
            Endpoint(_TRANSPORT_NAMES.get(e.transport, "grpc"), e.address)
            for e in message.endpoints
        ),
        tools=tuple(
            ToolInfo(
                name=t.name,
                description=t.description,
                input_schema=struct_to_dict(
                    t.input_schema, f"tools.{clip(t.name, _MAX_KEY_SHOWN)}.input_schema"
                ),
                idempotent=t.idempotent,
                default_timeout=duration_seconds(
                    t.default_timeout, f"tools.{clip(t.name, _MAX_KEY_SHOWN)}.default_timeout"
                )
                if t.HasField("default_timeout")
                else None,
            )
            for t in message.tools
        ),
        tags=tuple(message.tags),
        load=CardLoad(
            in_flight=message.load.in_flight,
            queued=message.load.queued,
            capacity=message.load.capacity,
            queue_limit=message.load.queue_limit,
        ),
        draining=message.draining,
        incarnation=message.incarnation,
        version=message.version,
        updated_at=message.updated_at.ToDatetime(tzinfo=UTC),
        reachability=_REACHABILITY_NAMES.get(message.reachability, "unknown"),
        relay_service=message.relay_service,
    )


def reachability_to_proto(state: str) -> types_pb2.Reachability:
    """ "public"/"private"/"unknown" as ``praxis.v1.Reachability``."""
    return _REACHABILITY.get(state, types_pb2.REACHABILITY_UNSPECIFIED)


_REACHABILITY = {
    "public": types_pb2.REACHABILITY_PUBLIC,
    "private": types_pb2.REACHABILITY_PRIVATE,
}
_REACHABILITY_NAMES = {value: name for name, value in _REACHABILITY.items()}


def card_to_proto(card: AgentCard) -> types_pb2.AgentCard:
    """A domain card as ``praxis.v1.AgentCard``."""
    return types_pb2.AgentCard(
        agent_id=card.agent_id,
        name=card.name,
        praxis_version=card.praxis_version,
        role=role_to_proto(card.role),
        endpoints=endpoints_to_proto(card),
        tools=[
            types_pb2.Tool(
                name=t.name,
                description=t.description,
                input_schema=dict_to_struct(t.input_schema),
                idempotent=t.idempotent,
                default_timeout=duration(t.default_timeout),
            )
            for t in card.tools
        ],
        tags=card.tags,
        load=load_to_proto(card.load),
        draining=card.draining,
        incarnation=card.incarnation,
        version=card.version,
        updated_at=timestamp(card.updated_at),
        reachability=reachability_to_proto(card.reachability),
        relay_service=card.relay_service,
    )
