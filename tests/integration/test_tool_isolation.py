"""No tool input stalls a node: tools compute in worker processes that a task's
timeout or cancellation kills, and results that cannot be stored are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc, types_pb2
from praxis_grpc.node import Node
from praxis_grpc.tasks.model import TaskState
from praxis_grpc.testing import make_config, running_node, worker_pool
from praxis_grpc.testing.wire import alive
from praxis_grpc.tools.base import JSON, ToolSpec
from praxis_grpc.tools.registry import ToolRegistry, build_registry
from praxis_grpc.tools.workers import WorkerPool
from tests.integration.conftest import Stubs
from tests.integration.helpers import until

FAILED = types_pb2.TASK_STATE_FAILED
COMPLETED = types_pb2.TASK_STATE_COMPLETED
CANCELED = types_pb2.TASK_STATE_CANCELED
# A liveness bound on calls that must be answered while a tool computes.
ANSWER_WITHIN = 10.0


class Spin:
    """``spin``: a computation that never ends, run in the worker pool (test tool)."""

    def __init__(self, workers: WorkerPool) -> None:
        self._workers = workers
        self._spec = ToolSpec(name="spin", description="Never finishes.", idempotent=True)

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def run(self, arguments: JSON) -> JSON:
        await self._workers.call("time:sleep", 3600)
        return {}


def calculation(expression: str) -> pb.SubmitTaskRequest:
    arguments = struct_pb2.Struct()
    arguments.update({"expression": expression})
    return pb.SubmitTaskRequest(tool="calculator", arguments=arguments)


async def responsive(channel: grpc.aio.Channel) -> None:
    """The node answers a health check and runs an echo task, in bounded time."""
    health = health_pb2_grpc.HealthStub(channel)
    status = await health.Check(health_pb2.HealthCheckRequest(), timeout=ANSWER_WITHIN)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    tasks = task_service_pb2_grpc.TaskServiceStub(channel)
    echo = await tasks.SubmitTask(
        pb.SubmitTaskRequest(tool="echo", wait=True), timeout=ANSWER_WITHIN
    )
    assert echo.task.state == COMPLETED


async def final_state(channel: grpc.aio.Channel, task_id: str) -> types_pb2.Task:
    tasks = task_service_pb2_grpc.TaskServiceStub(channel)
    watch = tasks.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=ANSWER_WITHIN)
    states = [message.task async for message in watch]
    return states[-1]


async def test_a_huge_round_leaves_the_node_responsive_and_fails(stubs: Stubs) -> None:
    accepted = await stubs.tasks.SubmitTask(calculation("round(1, -10**9)"))

    await responsive(stubs.channel)
    done = await final_state(stubs.channel, accepted.task.task_id)

    assert done.state == FAILED
    assert done.error.reason == "TOOL_ERROR"
    assert "round(): the number of digits must be between" in done.error.message


@pytest.mark.parametrize("expression", ["2**1100", "9" * 1000])
async def test_a_result_beyond_a_double_fails_and_stays_readable(
    stubs: Stubs, expression: str
) -> None:
    request = calculation(expression)
    request.wait = True

    done = (await stubs.tasks.SubmitTask(request)).task

    assert done.state == FAILED
    assert done.error.reason == "TOOL_ERROR"
    assert "too large for a JSON number" in done.error.message
    read = await stubs.tasks.GetTask(pb.GetTaskRequest(task_id=done.task_id))
    assert read.task.error.message == done.error.message
    listed = await stubs.tasks.ListTasks(pb.ListTasksRequest())
    assert [task.task_id for task in listed.tasks] == [done.task_id]


@pytest.fixture
async def spinning(tmp_path: Path) -> AsyncIterator[tuple[Node, WorkerPool]]:
    async with worker_pool(1) as workers:
        builtins = build_registry(["calculator", "echo"], None, tmp_path / "sandbox", workers)
        tools: list[Any] = [builtins.get(name) for name in builtins.names()]
        config = make_config(tmp_path / "node", metrics={"enabled": False})
        async with running_node(config, tools=ToolRegistry([*tools, Spin(workers)])) as node:
            assert await workers.call("operator:add", 1, 1) == 2  # its one worker is up
            yield node, workers


async def test_a_task_timeout_kills_the_worker_and_the_next_task_runs(
    spinning: tuple[Node, WorkerPool],
) -> None:
    node, workers = spinning
    async with grpc.aio.insecure_channel(node.endpoints.grpc) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        request = pb.SubmitTaskRequest(tool="spin")
        request.timeout.FromMilliseconds(500)
        (spinner,) = workers.pids()
        accepted = await tasks.SubmitTask(request)

        await responsive(channel)
        done = await final_state(channel, accepted.task.task_id)

        assert done.state == FAILED
        assert done.error.reason == "DEADLINE_EXCEEDED"
        assert not alive(spinner)
        sum_request = calculation("6 * 7")
        sum_request.wait = True
        after = (await tasks.SubmitTask(sum_request, timeout=ANSWER_WITHIN)).task
        assert after.state == COMPLETED
        assert after.result["result"] == 42


async def test_cancel_task_kills_the_worker(spinning: tuple[Node, WorkerPool]) -> None:
    node, workers = spinning
    async with grpc.aio.insecure_channel(node.endpoints.grpc) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        (spinner,) = workers.pids()
        accepted = await tasks.SubmitTask(pb.SubmitTaskRequest(tool="spin"))
        task_id = accepted.task.task_id
        # WORKING is published in the step that hands the call to the worker.
        await until(lambda: node.engine.get(task_id).state is TaskState.WORKING)

        canceled = await tasks.CancelTask(
            pb.CancelTaskRequest(task_id=task_id), timeout=ANSWER_WITHIN
        )

        assert canceled.task.state == CANCELED
        assert not alive(spinner)
        assert workers.pids() == []
