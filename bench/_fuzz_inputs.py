"""Generated and mutated requests for every public gRPC method of a node.

Every input is the raw bytes of one request message (sent with an identity
serializer), so it can be anything: a valid-shaped request with hostile field
values, or a malformed serialization. Generation is deterministic for a given
:class:`random.Random` state.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2, struct_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2,
    card_service_pb2,
    task_service_pb2,
)
from praxis_grpc.testing.wire import length_delimited, varint, varint_field

__all__ = ["METHODS", "FuzzInput", "Method", "generate"]

Code = grpc.StatusCode
_TOOLS = ("echo", "calculator", "text_analyzer", "json_formatter", "file_merger", "system_info")
# Expressions that cost the calculator a lot (issue 9, first reproduction among them).
_EXPRESSIONS = (
    "1+1",
    "2**1100",
    "9**9**9",
    "10**10**10",
    "1" * 1000,
    "round(1, -10**9)",
    "round(1, -10**7)",
    "1 << 10**9",
    "(" * 500 + "1" + ")" * 500,
    "__import__('os')",
    "().__class__",
    "1/0",
    "-" * 10_000 + "1",
)


@dataclass(frozen=True)
class Method:
    """One RPC and the statuses it may answer besides OK.

    Attributes:
        path: ``/package.Service/Method``.
        kind: ``unary``, ``stream`` (server stream) or ``bidi``.
        documented: Status codes the method documents.
        praxis: Whether a status the node chooses carries the ``praxis-error`` trailer.
        build: Makes a valid-shaped request with hostile field values.
    """

    path: str
    kind: str
    documented: frozenset[grpc.StatusCode]
    praxis: bool
    build: Callable[[random.Random], bytes]

    @property
    def name(self) -> str:
        """``Service/Method`` without the package."""
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class FuzzInput:
    """One request to send."""

    method: Method
    payload: bytes
    how: str

    def describe(self, limit: int = 60) -> str:
        """How the input was made and its first bytes."""
        head = self.payload[:limit].hex()
        more = "…" if len(self.payload) > limit else ""
        return f"{self.method.name} [{self.how}] {len(self.payload)} B: {head}{more}"


def _size(r: random.Random) -> int:
    roll = r.random()
    if roll < 0.01:
        return r.randint(100_000, 3_000_000)
    if roll < 0.1:
        return r.randint(257, 100_000)
    return r.randint(0, 256)


def hostile_text(r: random.Random) -> str:
    """A string field value a careless server could trip on."""
    makers: list[Callable[[], str]] = [
        lambda: "",
        lambda: "x" * _size(r),
        lambda: str(uuid.UUID(int=r.getrandbits(128))),
        lambda: "\x00" * r.randint(1, 64),
        lambda: "../" * r.randint(1, 50) + "etc/passwd",
        lambda: "é中😀\u202e" * r.randint(1, 2000),
        lambda: "%s%n{0}${x}" * r.randint(1, 20),
        lambda: r.choice(_TOOLS),
        lambda: "12D3KooW" + "A" * r.randint(0, 60),
        lambda: "-1",
    ]
    return r.choice(makers)()


def _number(r: random.Random) -> float:
    specials = [float("nan"), float("inf"), -float("inf"), 1e308, -0.0, float(2**53 + 1), 5e-324]
    return r.choice([*specials, float(r.randint(-(2**63), 2**63)), r.random()])


def hostile_value(r: random.Random, depth: int = 0) -> struct_pb2.Value:
    """A protobuf Value: NaN/Inf, huge strings, nulls, nested lists and structs."""
    kind = r.randrange(7 if depth < 6 else 4)
    if kind == 0:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if kind == 1:
        return struct_pb2.Value(number_value=_number(r))
    if kind == 2:
        return struct_pb2.Value(string_value=hostile_text(r))
    if kind == 3:
        return struct_pb2.Value(bool_value=r.random() < 0.5)
    if kind == 4:
        items = [hostile_value(r, depth + 1) for _ in range(r.randint(0, 5))]
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=items))
    if kind == 5:
        nulls = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
        return struct_pb2.Value(
            list_value=struct_pb2.ListValue(values=[nulls] * r.choice([10, 1000, 100_000]))
        )
    return struct_pb2.Value(struct_value=hostile_struct(r, depth + 1))


def hostile_struct(r: random.Random, depth: int = 0) -> struct_pb2.Struct:
    """A Struct with hostile keys and values."""
    out = struct_pb2.Struct()
    for _ in range(r.randint(0, 4)):
        key = hostile_text(r)[:1000] if r.random() < 0.3 else r.choice(["expression", "text", "a"])
        out.fields[key].CopyFrom(hostile_value(r, depth))
    if r.random() < 0.3:
        out.fields["expression"].string_value = r.choice(_EXPRESSIONS)
    return out


def _deep_struct_bytes(depth: int, via_list: bool) -> bytes:
    """A serialized Struct nested ``depth`` levels (protobuf's own limit is 100)."""
    value = b"\x08\x00"  # Value{null_value: NULL_VALUE}
    for _ in range(depth):
        if via_list:
            value = length_delimited(
                6, length_delimited(1, value)
            )  # Value{list_value{values: [value]}}
        else:
            entry = length_delimited(1, b"a") + length_delimited(2, value)
            value = length_delimited(
                5, length_delimited(1, entry)
            )  # Value{struct_value{fields{a: value}}}
    return length_delimited(1, length_delimited(1, b"a") + length_delimited(2, value))


def _duration(r: random.Random) -> duration_pb2.Duration:
    seconds, nanos = r.choice(
        [
            (1, -999_999_999),
            (-1, 0),
            (0, 0),
            (0, 1),
            (1, 2_000_000_000),
            (10**12, 0),
            (-(2**63), 0),
            (315_576_000_001, 0),
            (r.randint(0, 7200), r.randint(-(10**9), 10**9)),
        ]
    )
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def _submit(r: random.Random) -> bytes:
    request = task_service_pb2.SubmitTaskRequest(
        tool=r.choice(_TOOLS) if r.random() < 0.7 else hostile_text(r),
        arguments=hostile_struct(r),
        idempotency_key=hostile_text(r) if r.random() < 0.2 else "",
        tags=[hostile_text(r) for _ in range(r.randint(0, 2))],
        preferred_agent=hostile_text(r) if r.random() < 0.1 else "",
        wait=r.random() < 0.3,
        task_id=hostile_text(r) if r.random() < 0.2 else "",
    )
    if r.random() < 0.4:
        request.timeout.CopyFrom(_duration(r))
    data = request.SerializeToString()
    if r.random() < 0.2:
        # The node-to-node fields SubmitTaskRequest had before issue 11
        # (local_only, origin_agent_id, fencing_token): reserved, ignored.
        data += varint_field(9, 1) + length_delimited(10, hostile_text(r).encode())
        data += varint_field(11, r.choice([0, 1, 2**64 - 1]))
    if r.random() < 0.05:
        data += length_delimited(
            2, _deep_struct_bytes(r.choice([31, 32, 33, 60, 99, 101, 300]), False)
        )
    return data


def _task_id(r: random.Random) -> str:
    return hostile_text(r) if r.random() < 0.6 else str(uuid.UUID(int=r.getrandbits(128)))


def _page_token(r: random.Random) -> str:
    makers: list[Callable[[], str]] = [
        lambda: "",
        lambda: base64.urlsafe_b64encode(b"[" * r.choice([10, 100_000])).decode(),
        lambda: base64.urlsafe_b64encode(r.randbytes(r.randint(1, 64))).decode(),
        lambda: base64.urlsafe_b64encode(b'{"t": 1e999, "id": null}').decode(),
        lambda: hostile_text(r),
    ]
    return r.choice(makers)()


def _list_tasks(r: random.Random) -> bytes:
    request = task_service_pb2.ListTasksRequest(
        tool=hostile_text(r) if r.random() < 0.3 else "",
        page_size=r.choice([0, 1, 1000, 1001, -1, 2**31 - 1]),
        page_token=_page_token(r),
        local_only=r.random() < 0.5,
    )
    for _ in range(r.randint(0, 3)):
        request.states.append(r.choice([0, 1, 3, 6, 7, 99, -1, 2**31 - 1]))  # type: ignore[arg-type]
    return request.SerializeToString()


def _reflection(r: random.Random) -> bytes:
    request = reflection_pb2.ServerReflectionRequest(host=hostile_text(r))
    choice = r.randrange(4)
    if choice == 0:
        request.list_services = hostile_text(r)
    elif choice == 1:
        request.file_containing_symbol = r.choice(["praxis.v1.TaskService", hostile_text(r)])
    elif choice == 2:
        request.file_by_filename = r.choice(["praxis/v1/types.proto", hostile_text(r)])
    else:
        request.file_containing_extension.containing_type = hostile_text(r)
        request.file_containing_extension.extension_number = r.randint(-(2**31), 2**31 - 1)
    data: bytes = request.SerializeToString()
    return data


_TASK = "/praxis.v1.TaskService/"
_CARD = "/praxis.v1.CardService/"
_AGENT = "/praxis.v1.AgentService/"
_INVALID = frozenset({Code.INVALID_ARGUMENT})
_SUBMIT_CODES = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.FAILED_PRECONDITION,
        Code.ALREADY_EXISTS,
        Code.RESOURCE_EXHAUSTED,
        Code.UNAVAILABLE,
        Code.DEADLINE_EXCEEDED,
    }
)
_BY_ID = frozenset({Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.UNAVAILABLE})

METHODS: tuple[Method, ...] = (
    Method(_TASK + "SubmitTask", "unary", _SUBMIT_CODES, True, _submit),
    Method(
        _TASK + "GetTask",
        "unary",
        _BY_ID,
        True,
        lambda r: task_service_pb2.GetTaskRequest(task_id=_task_id(r)).SerializeToString(),
    ),
    Method(_TASK + "ListTasks", "unary", _INVALID | {Code.UNAVAILABLE}, True, _list_tasks),
    Method(
        _TASK + "CancelTask",
        "unary",
        _BY_ID,
        True,
        lambda r: task_service_pb2.CancelTaskRequest(
            task_id=_task_id(r), reason=hostile_text(r)
        ).SerializeToString(),
    ),
    Method(
        _TASK + "WatchTask",
        "stream",
        _BY_ID,
        True,
        lambda r: task_service_pb2.WatchTaskRequest(task_id=_task_id(r)).SerializeToString(),
    ),
    Method(
        _CARD + "GetCard",
        "unary",
        _INVALID | {Code.NOT_FOUND},
        True,
        lambda r: card_service_pb2.GetCardRequest(agent_id=hostile_text(r)).SerializeToString(),
    ),
    Method(
        _CARD + "ListCards",
        "unary",
        _INVALID,
        True,
        lambda r: card_service_pb2.ListCardsRequest(
            tool=hostile_text(r), tags=[hostile_text(r) for _ in range(r.randint(0, 3))]
        ).SerializeToString(),
    ),
    Method(
        _CARD + "WatchCards",
        "stream",
        _INVALID | {Code.UNAVAILABLE},
        True,
        lambda r: card_service_pb2.WatchCardsRequest(tool=hostile_text(r)).SerializeToString(),
    ),
    Method(
        _AGENT + "GetAgent",
        "unary",
        _INVALID,
        True,
        lambda r: agent_service_pb2.GetAgentRequest().SerializeToString(),
    ),
    Method(
        _AGENT + "ListPeers",
        "unary",
        _INVALID,
        True,
        lambda r: agent_service_pb2.ListPeersRequest().SerializeToString(),
    ),
    Method(
        _AGENT + "Drain",
        "unary",
        _INVALID,
        True,
        lambda r: agent_service_pb2.DrainRequest(resume=r.random() < 0.5).SerializeToString(),
    ),
    Method(
        "/grpc.health.v1.Health/Check",
        "unary",
        _INVALID | {Code.NOT_FOUND},
        False,
        lambda r: health_pb2.HealthCheckRequest(
            service=r.choice(["", "praxis.v1.TaskService", hostile_text(r)])
        ).SerializeToString(),
    ),
    Method(
        "/grpc.health.v1.Health/Watch",
        "stream",
        _INVALID,
        False,
        lambda r: health_pb2.HealthCheckRequest(
            service=r.choice(["", "praxis.v1.CardService", hostile_text(r)])
        ).SerializeToString(),
    ),
    Method(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "bidi",
        _INVALID,
        False,
        _reflection,
    ),
)


def _mutate(r: random.Random, data: bytes) -> tuple[bytes, str]:
    choice = r.randrange(7)
    if choice == 0 and data:
        return data[: r.randrange(len(data))], "truncated"
    if choice == 1 and data:
        flipped = bytearray(data)
        for _ in range(r.randint(1, 8)):
            flipped[r.randrange(len(flipped))] ^= 1 << r.randrange(8)
        return bytes(flipped), "bit-flipped"
    if choice == 2:
        wire = r.choice([3, 4, 6, 7])
        return data + varint(r.randint(1, 20) << 3 | wire) + r.randbytes(4), "bad wire type"
    if choice == 3:
        # A string field (1 in every request but GetAgent/ListPeers) holding invalid UTF-8.
        return data + length_delimited(
            r.choice([1, 2, 4]), b"\xff\xfe\xc3(" * r.randint(1, 8)
        ), "bad utf-8"
    if choice == 4:
        return data + varint(r.randint(1, 12) << 3 | 2) + varint(2**31), "huge length"
    if choice == 5:
        return data + b"\x00", "zero tag"
    return r.randbytes(r.choice([0, 1, 5, 64, 1000])), "random bytes"


def generate(r: random.Random, method: Method) -> FuzzInput:
    """One input for ``method``: valid-shaped (60%) or mutated/malformed (40%)."""
    data = method.build(r)
    if r.random() < 0.6:
        return FuzzInput(method, data, "valid-shaped")
    mutated, how = _mutate(r, data)
    return FuzzInput(method, mutated, how)
