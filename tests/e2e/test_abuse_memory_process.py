"""Issue 9: memory taken by slow readers goes back once their sockets close (a real process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import psutil
import pytest

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc
from praxis_grpc.testing import node_process
from praxis_grpc.testing.slow_reader import SlowReader
from tests.integration.helpers import until

pytestmark = pytest.mark.e2e

_MB = 1024 * 1024
READERS = 200


async def test_rss_returns_after_zero_window_readers_of_a_large_task_leave(
    tmp_path: Path,
) -> None:
    overrides = {
        "tools": {"builtins": ["echo"]},
        "tasks": {"max_argument_bytes": 3 * _MB, "max_result_bytes": _MB // 2},
        "metrics": {"enabled": False},
    }
    with node_process(tmp_path, "node1", overrides) as node:
        process = psutil.Process(node.pid)
        async with grpc.aio.insecure_channel(node.grpc) as channel:
            request = pb.SubmitTaskRequest(tool="echo", wait=True)
            # A 2 MB task (its echo result is over max_result_bytes: the task
            # fails, and GetTask answers with its 2 MB of arguments).
            request.arguments.update({"data": "x" * 2_000_000})
            submitted = await task_service_pb2_grpc.TaskServiceStub(channel).SubmitTask(
                request, timeout=60
            )
        idle = process.memory_info().rss
        get = pb.GetTaskRequest(task_id=submitted.task.task_id).SerializeToString()
        host, _, port = node.grpc.rpartition(":")
        readers = [SlowReader(host, int(port)) for _ in range(READERS)]
        try:
            for reader in readers:
                await reader.connect(window=0)
                await reader.call("/praxis.v1.TaskService/GetTask", get)
            # Every answer (about 2 MB, several times that while built) is queued
            # behind the zero window.
            grown = idle + READERS * 5 * _MB
            await until(lambda: process.memory_info().rss > grown, timeout=60)
        finally:
            await asyncio.gather(*(reader.close() for reader in readers))
        await until(lambda: process.memory_info().rss < idle + 50 * _MB, timeout=30)
