"""TaskService over a real loopback socket: happy paths and every kind of bad input."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.node import Node

from .conftest import Stubs


def args(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def expect_error(call: object, code: grpc.StatusCode, message: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    assert message in (info.value.details() or "")
    return info.value


async def test_submit_and_wait_for_calculator(stubs: Stubs) -> None:
    response = await stubs.tasks.SubmitTask(
        pb.SubmitTaskRequest(tool="calculator", arguments=args(expression="2 + 3 * 4"), wait=True)
    )
    task = response.task
    assert task.state == types_pb2.TASK_STATE_COMPLETED
    assert task.result["result"] == 14
    assert task.HasField("finished_at")
    fetched = await stubs.tasks.GetTask(pb.GetTaskRequest(task_id=task.task_id))
    assert fetched.task == task


async def test_submit_without_wait_then_watch(stubs: Stubs) -> None:
    response = await stubs.tasks.SubmitTask(
        pb.SubmitTaskRequest(tool="sleep", arguments=args(seconds=0.2))
    )
    assert response.task.state in (types_pb2.TASK_STATE_SUBMITTED, types_pb2.TASK_STATE_WORKING)
    states = [
        event.task.state
        async for event in stubs.tasks.WatchTask(pb.WatchTaskRequest(task_id=response.task.task_id))
    ]
    assert states[-1] == types_pb2.TASK_STATE_COMPLETED
    assert types_pb2.TASK_STATE_WORKING in states


async def test_idempotent_submission(stubs: Stubs) -> None:
    request = pb.SubmitTaskRequest(
        tool="calculator", arguments=args(expression="1+1"), idempotency_key="order-42", wait=True
    )
    first = await stubs.tasks.SubmitTask(request)
    second = await stubs.tasks.SubmitTask(request)
    assert second.deduplicated
    assert second.task.task_id == first.task.task_id
    request.arguments.CopyFrom(args(expression="2+2"))
    await expect_error(
        stubs.tasks.SubmitTask(request), grpc.StatusCode.ALREADY_EXISTS, "idempotency_key"
    )


async def test_cancel_running_task(stubs: Stubs) -> None:
    submitted = await stubs.tasks.SubmitTask(
        pb.SubmitTaskRequest(tool="sleep", arguments=args(seconds=30))
    )
    task_id = submitted.task.task_id
    async for event in stubs.tasks.WatchTask(pb.WatchTaskRequest(task_id=task_id)):
        if event.task.state == types_pb2.TASK_STATE_WORKING:
            break
    canceled = await stubs.tasks.CancelTask(pb.CancelTaskRequest(task_id=task_id, reason="test"))
    assert canceled.task.state == types_pb2.TASK_STATE_CANCELED
    assert canceled.task.error.message == "test"


async def test_timeout_fails_task(stubs: Stubs) -> None:
    timeout = duration_pb2.Duration(nanos=100_000_000)
    response = await stubs.tasks.SubmitTask(
        pb.SubmitTaskRequest(tool="sleep", arguments=args(seconds=5), timeout=timeout, wait=True)
    )
    assert response.task.state == types_pb2.TASK_STATE_FAILED
    assert response.task.error.reason == "DEADLINE_EXCEEDED"


async def test_queue_full_has_retry_hint(stubs: Stubs, node: Node) -> None:
    # max_concurrency 2 + queue_limit 4: the seventh submission is refused.
    for _ in range(6):
        await stubs.tasks.SubmitTask(pb.SubmitTaskRequest(tool="sleep", arguments=args(seconds=30)))
    error = await expect_error(
        stubs.tasks.SubmitTask(pb.SubmitTaskRequest(tool="sleep", arguments=args(seconds=1))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "saturated",
    )
    trailers = dict(cast(Any, error.trailing_metadata()) or ())
    assert int(trailers["retry-after-ms"]) > 0
    assert trailers["praxis-error"] == "resource_exhausted"  # the node chose this status


async def test_list_tasks_pages_and_filters(stubs: Stubs) -> None:
    ids = []
    for n in range(5):
        response = await stubs.tasks.SubmitTask(
            pb.SubmitTaskRequest(tool="calculator", arguments=args(expression=f"{n}+1"), wait=True)
        )
        ids.append(response.task.task_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await stubs.tasks.ListTasks(pb.ListTasksRequest(page_size=2, page_token=token))
        assert len(page.tasks) <= 2
        seen += [t.task_id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    completed = await stubs.tasks.ListTasks(
        pb.ListTasksRequest(states=[types_pb2.TASK_STATE_COMPLETED], tool="calculator")
    )
    assert len(completed.tasks) == 5
    failed = await stubs.tasks.ListTasks(pb.ListTasksRequest(states=[types_pb2.TASK_STATE_FAILED]))
    assert not failed.tasks


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.SubmitTaskRequest(tool=""), grpc.StatusCode.INVALID_ARGUMENT, "tool: is required"),
        (
            pb.SubmitTaskRequest(tool="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no agent offers tool 'nope'; tools on offer: calculator",
        ),
        (
            pb.SubmitTaskRequest(tool="calculator", arguments=args(expression=5)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "arguments.expression",
        ),
        (
            pb.SubmitTaskRequest(tool="calculator"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "arguments.expression",
        ),
        (
            pb.SubmitTaskRequest(tool="echo", arguments=args(blob="x" * 5000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "arguments: ",
        ),
        (
            pb.SubmitTaskRequest(
                tool="calculator",
                arguments=args(expression="1"),
                timeout=duration_pb2.Duration(seconds=-1),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "timeout: must be positive",
        ),
        (
            pb.SubmitTaskRequest(
                tool="calculator",
                arguments=args(expression="1"),
                timeout=duration_pb2.Duration(seconds=10**6),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "timeout: ",
        ),
        (
            pb.SubmitTaskRequest(tool="calculator", arguments=args(expression="1"), tags=[""]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tags[0]",
        ),
    ],
)
async def test_submit_rejects_bad_input(
    stubs: Stubs, request_: pb.SubmitTaskRequest, code: grpc.StatusCode, message: str
) -> None:
    await expect_error(stubs.tasks.SubmitTask(request_), code, message)
    listed = await stubs.tasks.ListTasks(pb.ListTasksRequest())
    assert not listed.tasks  # nothing half-accepted


async def test_unknown_and_empty_task_ids(stubs: Stubs) -> None:
    for call in (
        stubs.tasks.GetTask(pb.GetTaskRequest(task_id="nope")),
        stubs.tasks.CancelTask(pb.CancelTaskRequest(task_id="nope")),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND, "task 'nope' not found")
    await expect_error(
        stubs.tasks.GetTask(pb.GetTaskRequest()), grpc.StatusCode.INVALID_ARGUMENT, "task_id"
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stubs.tasks.WatchTask(pb.WatchTaskRequest(task_id="nope")):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_tasks_rejects_bad_paging(stubs: Stubs) -> None:
    await expect_error(
        stubs.tasks.ListTasks(pb.ListTasksRequest(page_size=5000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )
    await expect_error(
        stubs.tasks.ListTasks(pb.ListTasksRequest(page_token="garbage!")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
    await expect_error(
        stubs.tasks.ListTasks(pb.ListTasksRequest(states=[types_pb2.TASK_STATE_UNSPECIFIED])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "states[0]",
    )


async def test_client_deadline_does_not_cancel_the_task(stubs: Stubs) -> None:
    request = pb.SubmitTaskRequest(
        tool="sleep", arguments=args(seconds=0.5), idempotency_key="slow", wait=True
    )
    await expect_error(
        stubs.tasks.SubmitTask(request, timeout=0.1), grpc.StatusCode.DEADLINE_EXCEEDED, ""
    )
    retried = await asyncio.wait_for(stubs.tasks.SubmitTask(request), 10)
    assert retried.deduplicated
    assert retried.task.state == types_pb2.TASK_STATE_COMPLETED
