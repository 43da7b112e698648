"""Hostile requests over a real loopback socket: every one is refused with the
documented code, a ``praxis-error`` trailer and a short message naming the field."""

from __future__ import annotations

import base64
import logging
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as peer_pb
from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as peer_grpc
from praxis_grpc._gen.praxis.v1 import card_service_pb2 as card_pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.node import Node
from praxis_grpc.testing import make_config, running_node
from praxis_grpc.testing.wire import length_delimited

from .conftest import Stubs, stubs_of
from .helpers import until

# The size of status message a default client still accepts is 8 KiB of
# metadata; a refusal must stay far below.
_SHORT = 1024

# Every method the node serves, with how it is called.
_METHODS = [
    ("/praxis.v1.TaskService/SubmitTask", "unary"),
    ("/praxis.v1.TaskService/GetTask", "unary"),
    ("/praxis.v1.TaskService/ListTasks", "unary"),
    ("/praxis.v1.TaskService/CancelTask", "unary"),
    ("/praxis.v1.TaskService/WatchTask", "server_stream"),
    ("/praxis.v1.CardService/GetCard", "unary"),
    ("/praxis.v1.CardService/ListCards", "unary"),
    ("/praxis.v1.CardService/WatchCards", "server_stream"),
    ("/praxis.v1.AgentService/GetAgent", "unary"),
    ("/praxis.v1.AgentService/ListPeers", "unary"),
    ("/praxis.v1.AgentService/Drain", "unary"),
    ("/praxis.peer.v1.PeerService/Dispatch", "unary"),
    ("/praxis.peer.v1.PeerService/Follow", "server_stream"),
    ("/praxis.peer.v1.PeerService/Cancel", "unary"),
    ("/praxis.peer.v1.PeerService/RelaySubmit", "unary"),
    ("/praxis.peer.v1.PeerService/RelayGet", "unary"),
    ("/praxis.peer.v1.PeerService/RelayList", "unary"),
    ("/praxis.peer.v1.PeerService/RelayCancel", "unary"),
    ("/praxis.peer.v1.PeerService/RelayWatch", "server_stream"),
    ("/grpc.health.v1.Health/Check", "unary"),
    ("/grpc.health.v1.Health/Watch", "server_stream"),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "bidi_stream"),
]
# Field 1 with wire type 7, which does not exist: no message can parse it.
_BAD_WIRE_TYPE = b"\x0f\x01"


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _deep_struct(depth: int) -> bytes:
    """A Struct nested ``depth`` objects deep (three messages per level),
    encoded by hand: protobuf refuses to build what it cannot parse."""
    struct = b""
    for _ in range(depth):
        value = length_delimited(5, struct)  # Value.struct_value
        struct = length_delimited(
            1, length_delimited(1, b"a") + length_delimited(2, value)
        )  # Struct.fields entry
    return struct


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {str(k): str(v) for k, v in cast(Any, error.trailing_metadata()) or ()}


async def _raw_call(channel: grpc.aio.Channel, method: str, kind: str, payload: bytes) -> None:
    """Send ``payload`` as the request bytes, unserialized, and read the answer."""
    if kind == "unary":
        await channel.unary_unary(method, None, None)(payload)
    elif kind == "server_stream":
        async for _ in channel.unary_stream(method, None, None)(payload):
            pass
    else:
        async for _ in channel.stream_stream(method, None, None)(iter([payload])):
            pass


async def _refused_raw(
    channel: grpc.aio.Channel, method: str, kind: str, payload: bytes
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _raw_call(channel, method, kind, payload)
    return info.value


def _check_refusal(error: grpc.aio.AioRpcError, code: grpc.StatusCode, field: str) -> None:
    details = error.details() or ""
    assert error.code() == code, details
    assert details.startswith(field) or f" {field}" in details, details
    assert len(details.encode()) <= _SHORT
    assert _trailers(error)["praxis-error"] == code.name.lower()


@pytest.mark.parametrize(("method", "kind"), _METHODS)
async def test_every_method_refuses_undecodable_requests(
    stubs: Stubs, method: str, kind: str
) -> None:
    error = await _refused_raw(stubs.channel, method, kind, _BAD_WIRE_TYPE)
    _check_refusal(error, grpc.StatusCode.INVALID_ARGUMENT, "request")
    assert "cannot be decoded" in (error.details() or "")


def _malformed_submissions() -> list[tuple[str, bytes]]:
    valid = pb.SubmitTaskRequest(tool="echo", arguments=_struct({"text": "hi"})).SerializeToString()
    tool = pb.SubmitTaskRequest(tool="echo").SerializeToString()
    deep = tool + length_delimited(2, _deep_struct(60))
    return [
        ("invalid UTF-8 in tool", b"\x0a\x02\xff\xfe"),
        ("truncated", valid[:-3]),
        ("length past the end", b"\x0a\x7f" + b"x" * 10),
        ("bad wire type", _BAD_WIRE_TYPE),
        ("Struct nested past protobuf's limit", deep),
    ]


@pytest.mark.parametrize(("case", "payload"), _malformed_submissions())
async def test_undecodable_submissions_are_invalid_argument(
    stubs: Stubs, case: str, payload: bytes
) -> None:
    error = await _refused_raw(stubs.channel, "/praxis.v1.TaskService/SubmitTask", "unary", payload)
    _check_refusal(error, grpc.StatusCode.INVALID_ARGUMENT, "request")
    assert error.details() == "request: cannot be decoded as praxis.v1.SubmitTaskRequest", case
    listed = await stubs.tasks.ListTasks(pb.ListTasksRequest())
    assert not listed.tasks


async def test_undecodable_requests_log_no_traceback_and_are_throttled(
    stubs: Stubs, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = 20
    for _ in range(sent):
        error = await _refused_raw(
            stubs.channel, "/praxis.v1.TaskService/GetTask", "unary", b"\xff"
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    undecodable = [r for r in caplog.records if "cannot be decoded" in r.getMessage()]
    # 20 requests in well under the time 20 one-second windows take.
    assert 1 <= len(undecodable) < sent
    labels = {"service": "praxis.v1.TaskService", "method": "GetTask", "code": "INVALID_ARGUMENT"}
    # The server counts a call once its handler returns, which may be just
    # after the client got the status.
    await until(
        lambda: (
            node.metrics.registry.get_sample_value("praxis_grpc_server_requests_total", labels)
            == sent
        )
    )


async def test_long_task_ids_get_a_short_answer(default_stubs: Stubs) -> None:
    stubs = default_stubs
    # The default client refuses status metadata over 8 KiB: an echoed 100 KB id
    # turned NOT_FOUND into RESOURCE_EXHAUSTED at the client.
    long_id = "x" * 100_000
    for call in (
        stubs.tasks.GetTask(pb.GetTaskRequest(task_id=long_id)),
        stubs.tasks.CancelTask(pb.CancelTaskRequest(task_id=long_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "task_id")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stubs.tasks.WatchTask(pb.WatchTaskRequest(task_id=long_id)):
            pass
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "task_id")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.SubmitTask(
            pb.SubmitTaskRequest(tool="echo", arguments=_struct({"text": "x"}), task_id=long_id)
        )
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "task_id")


async def test_unknown_task_id_quotes_it_briefly(stubs: Stubs) -> None:
    task_id = "y" * 60
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.GetTask(pb.GetTaskRequest(task_id=task_id))
    _check_refusal(info.value, grpc.StatusCode.NOT_FOUND, "task")
    assert task_id in (info.value.details() or "")


@pytest.mark.parametrize("dispatched", [False, True])
async def test_long_tool_names_get_a_short_answer(default_stubs: Stubs, dispatched: bool) -> None:
    stubs = default_stubs
    tool = "t" * 100_000
    peer = peer_grpc.PeerServiceStub(stubs.channel)
    call = (
        peer.Dispatch(_dispatch(tool))
        if dispatched
        else stubs.tasks.SubmitTask(pb.SubmitTaskRequest(tool=tool))
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    _check_refusal(info.value, grpc.StatusCode.FAILED_PRECONDITION, "tool")
    assert "'" + "t" * 99 + "…'" in (info.value.details() or "")


async def test_long_tags_and_keys_get_a_short_answer(stubs: Stubs) -> None:
    tags = [f"{'g' * 250}{index:03}" for index in range(64)]  # each within the limits
    request = pb.SubmitTaskRequest(tool="echo", arguments=_struct({"text": "x"}), tags=tags)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.SubmitTask(request)
    _check_refusal(info.value, grpc.StatusCode.FAILED_PRECONDITION, "tool")
    for field, request in (
        ("tags[1]", pb.SubmitTaskRequest(tool="echo", tags=["gpu", "g" * 50_000])),
        ("tags", pb.SubmitTaskRequest(tool="echo", tags=["gpu"] * 65)),
        ("preferred_agent", pb.SubmitTaskRequest(tool="echo", preferred_agent="p" * 50_000)),
        ("idempotency_key", pb.SubmitTaskRequest(tool="echo", idempotency_key="i" * 50_000)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.tasks.SubmitTask(request)
        _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, field)
    dispatch = _dispatch("echo", origin_agent_id="o" * 50_000)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await peer_grpc.PeerServiceStub(stubs.channel).Dispatch(dispatch)
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "origin_agent_id")
    submitted = await stubs.tasks.SubmitTask(
        pb.SubmitTaskRequest(tool="sleep", arguments=_struct({"seconds": 30}))
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.CancelTask(
            pb.CancelTaskRequest(task_id=submitted.task.task_id, reason="r" * 50_000)
        )
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "reason")
    # An unexpected property is named in the field path (within the 4096-byte
    # argument limit of the fixture).
    request = pb.SubmitTaskRequest(
        tool="calculator", arguments=_struct({"expression": "1", "k" * 4000: 1})
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.SubmitTask(request)
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "arguments.kkk")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.cards.GetCard(card_pb.GetCardRequest(agent_id="a" * 100_000))
    _check_refusal(info.value, grpc.StatusCode.NOT_FOUND, "card")


def _dispatch(tool: str, origin_agent_id: str = "entry") -> peer_pb.DispatchRequest:
    return peer_pb.DispatchRequest(
        task_id=str(uuid.uuid4()),
        spec=peer_pb.TaskSpec(tool=tool),
        origin_agent_id=origin_agent_id,
    )


async def test_a_dispatch_of_an_unknown_tool_is_failed_precondition(stubs: Stubs) -> None:
    # PeerService: FAILED_PRECONDITION when the tool is not offered here; a
    # node sent a dispatch runs the task itself or refuses it.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await peer_grpc.PeerServiceStub(stubs.channel).Dispatch(_dispatch("nope"))
    _check_refusal(info.value, grpc.StatusCode.FAILED_PRECONDITION, "tool")
    assert "'nope'" in (info.value.details() or "")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (1, -999_999_999),  # mixed signs: was read as 1 ns
        (-1, 5),
        (0, 1_000_000_000),
        (0, -1_000_000_000),
        (315_576_000_001, 0),
        (-315_576_000_001, 0),
    ],
)
async def test_invalid_durations_are_invalid_argument(
    stubs: Stubs, seconds: int, nanos: int
) -> None:
    request = pb.SubmitTaskRequest(
        tool="echo",
        arguments=_struct({"text": "x"}),
        timeout=duration_pb2.Duration(seconds=seconds, nanos=nanos),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.SubmitTask(request)
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "timeout")
    assert "not a valid Duration" in (info.value.details() or "")


async def test_deep_page_token_is_invalid_argument(stubs: Stubs) -> None:
    token = base64.urlsafe_b64encode(b"[" * 100_000).decode().rstrip("=")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.ListTasks(pb.ListTasksRequest(page_token=token))
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    deep = base64.urlsafe_b64encode(b"[" * 300).decode().rstrip("=")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.ListTasks(pb.ListTasksRequest(page_token=deep))
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "page_token")


@pytest.mark.parametrize("depth", [21, 32, 33])
async def test_arguments_nested_too_deep_are_refused(stubs: Stubs, depth: int) -> None:
    request = pb.SubmitTaskRequest(tool="echo", arguments=_struct(_nested(depth)), wait=True)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.SubmitTask(request)
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "arguments")
    assert "nested more than 20 levels" in (info.value.details() or "")
    listed = await stubs.tasks.ListTasks(pb.ListTasksRequest())
    assert not listed.tasks  # nothing stored that GetTask/ListTasks could not send back


async def test_arguments_at_the_depth_limit_round_trip(stubs: Stubs) -> None:
    arguments = _struct(_nested(20))
    response = await stubs.tasks.SubmitTask(
        pb.SubmitTaskRequest(tool="echo", arguments=arguments, wait=True)
    )
    # Accepted and stored; echo's result wraps them one level deeper than any
    # result may be, so the task fails cleanly (see test_stored_values).
    assert response.task.state == types_pb2.TASK_STATE_FAILED
    assert response.task.error.reason == "RESULT_INVALID"
    fetched = await stubs.tasks.GetTask(pb.GetTaskRequest(task_id=response.task.task_id))
    assert fetched.task.arguments == arguments
    listed = await stubs.tasks.ListTasks(pb.ListTasksRequest())
    assert [t.task_id for t in listed.tasks] == [response.task.task_id]


async def test_argument_size_is_measured_in_wire_bytes(stubs: Stubs) -> None:
    # The fixture's limit is 4096 bytes. 1500 CJK characters are 4500 bytes of
    # UTF-8 and ~9000 of ASCII-escaped JSON; 1300 are 3900 bytes and fit.
    fits = pb.SubmitTaskRequest(tool="echo", arguments=_struct({"text": "字" * 1300}), wait=True)
    response = await stubs.tasks.SubmitTask(fits)
    assert response.task.state == types_pb2.TASK_STATE_COMPLETED
    too_big = pb.SubmitTaskRequest(tool="echo", arguments=_struct({"text": "字" * 1500}))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.SubmitTask(too_big)
    _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "arguments")
    assert "exceeds the limit of 4096 bytes" in (info.value.details() or "")


@pytest.fixture
async def default_node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node with the default limits: 4 MiB messages, 1 MiB arguments."""
    async with running_node(make_config(tmp_path / "node")) as started:
        yield started


@pytest.fixture
async def default_stubs(default_node: Node) -> AsyncIterator[Stubs]:
    """Stubs of :func:`default_node`: requests up to the default size limits."""
    async with stubs_of(default_node) as made:
        yield made


async def test_huge_argument_lists_are_refused(default_node: Node) -> None:
    nulls = struct_pb2.Struct()
    nulls.fields["items"].list_value.values.extend(
        [struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)] * 950_000
    )
    # Refused by its size before it is even decoded: the NaN at the end (which
    # the conversion refuses) is never reached.
    nulls.fields["items"].list_value.values.add(number_value=math.nan)
    request = pb.SubmitTaskRequest(tool="echo", arguments=nulls)
    assert 3_700_000 < request.ByteSize() < 4 * 1024 * 1024
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(default_node.endpoints.grpc, options=options) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SubmitTask(request)
            _check_refusal(info.value, grpc.StatusCode.INVALID_ARGUMENT, "request")
            assert "exceeds the limit of 1114112 bytes" in (info.value.details() or "")
        listed = await stub.ListTasks(pb.ListTasksRequest())
        assert not listed.tasks
