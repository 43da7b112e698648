"""system_info reports the host; echo and sleep behave as the engine's tests expect."""

from __future__ import annotations

import asyncio

import pytest

import praxis_grpc
from praxis_grpc.errors import ToolError
from praxis_grpc.tools.system import Echo, Sleep, SystemInfo


async def test_system_info_reports_host_and_process() -> None:
    info = await SystemInfo().run({})

    assert set(info) == {
        "hostname",
        "platform",
        "python_version",
        "cpu_count",
        "load_average",
        "memory",
        "process_rss",
        "praxis_version",
    }
    assert info["praxis_version"] == praxis_grpc.__version__
    assert info["python_version"].startswith("3.11")
    assert info["memory"]["total"] >= info["memory"]["available"] > 0
    assert info["process_rss"] > 0
    assert len(info["load_average"]) == 3


async def test_echo_returns_its_arguments() -> None:
    arguments = {"anything": [1, {"nested": True}]}

    assert await Echo().run(arguments) == {"echo": arguments}


async def test_sleep_returns_seconds_slept() -> None:
    assert await Sleep().run({"seconds": 0}) == {"slept": 0}


async def test_sleep_fails_on_request() -> None:
    with pytest.raises(ToolError, match="as requested"):
        await Sleep().run({"seconds": 0.01, "fail": True})


async def test_sleep_is_cancellable() -> None:
    task = asyncio.create_task(Sleep().run({"seconds": 3600}))
    await asyncio.sleep(0)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


def test_specs_describe_arguments() -> None:
    assert SystemInfo().spec.input_schema["additionalProperties"] is False
    assert Echo().spec.input_schema == {"type": "object"}
    assert Sleep().spec.input_schema["required"] == ["seconds"]
