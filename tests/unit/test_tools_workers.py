"""The worker pool: results and errors cross the pipe; a cancelled call kills its worker."""

from __future__ import annotations

import asyncio

import pytest

from praxis_grpc.errors import ToolError
from praxis_grpc.testing import worker_pool
from praxis_grpc.testing.wire import alive
from praxis_grpc.tools.workers import (
    WORKER_CRASHED,
    WORKER_OUT_OF_MEMORY,
    WorkerError,
    WorkerPool,
)
from tests.integration.helpers import until

# Blocks its worker for an hour: a computation that never ends.
HANG = "time:sleep"


async def test_returns_the_result_and_reuses_the_worker(workers: WorkerPool) -> None:
    assert await workers.call("praxis_grpc.tools.calculator:evaluate", "6 * 7") == 42
    first = workers.pids()

    assert await workers.call("praxis_grpc.tools.text:analyze", "你好 world") == {
        "characters": 8,
        "characters_no_spaces": 7,
        "words": 2,
        "lines": 1,
        "sentences": 1,
        "paragraphs": 1,
        "average_word_length": 3.5,
        "top_words": [{"word": "world", "count": 1}, {"word": "你好", "count": 1}],
    }
    assert workers.pids() == first


async def test_a_tool_error_keeps_its_message_and_reason(workers: WorkerPool) -> None:
    with pytest.raises(ToolError, match="division by zero") as caught:
        await workers.call("praxis_grpc.tools.calculator:evaluate", "1 / 0")

    assert caught.value.reason == "TOOL_ERROR"


async def test_another_exception_is_a_worker_error(workers: WorkerPool) -> None:
    with pytest.raises(WorkerError, match="ZeroDivisionError: division by zero"):
        await workers.call("operator:truediv", 1, 0)
    assert await workers.call("operator:add", 1, 2) == 3


async def test_a_timeout_kills_the_worker_and_the_next_call_works(workers: WorkerPool) -> None:
    assert await workers.call("operator:add", 1, 2) == 3
    (hung,) = workers.pids()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await workers.call(HANG, 3600)

    assert not alive(hung)
    assert workers.pids() == []
    assert await workers.call("operator:add", 2, 2) == 4
    assert workers.pids() != [hung]


async def test_cancelling_one_call_kills_only_its_worker() -> None:
    async with worker_pool(2) as pool:
        hanging = asyncio.create_task(pool.call(HANG, 3600))
        quick = asyncio.create_task(pool.call("operator:add", 1, 1))
        assert await quick == 2
        await until(lambda: len(pool.pids()) == 2)
        before = set(pool.pids())

        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging

        survivors = set(pool.pids())
        assert len(survivors) == 1
        assert survivors < before
        assert all(alive(pid) == (pid in survivors) for pid in before)
        assert await pool.call("operator:add", 2, 3) == 5


async def test_calls_beyond_the_pool_size_wait_for_a_worker() -> None:
    async with worker_pool(1) as pool:
        results = await asyncio.gather(*(pool.call("operator:mul", i, i) for i in range(5)))

        assert results == [0, 1, 4, 9, 16]
        assert len(pool.pids()) == 1


async def test_a_crashed_worker_fails_the_call_and_is_replaced(workers: WorkerPool) -> None:
    # 255: asyncio reports that code when another waiter reaped the child first.
    with pytest.raises(ToolError, match=r"exited with code (3|255)") as caught:
        await workers.call("os:_exit", 3)

    assert caught.value.reason == WORKER_CRASHED
    assert workers.pids() == []
    assert await workers.call("operator:add", 1, 2) == 3


async def test_a_memory_bomb_fails_the_call_not_the_host() -> None:
    limit = 256 * 1024 * 1024
    async with worker_pool(1, memory_limit=limit) as pool:
        with pytest.raises(ToolError, match=r"out of memory.*256 MiB") as caught:
            await pool.call("builtins:bytearray", 2 * limit)

        assert caught.value.reason == WORKER_OUT_OF_MEMORY
        assert pool.pids() == []
        assert await pool.call("operator:add", 1, 2) == 3


async def test_aclose_kills_every_worker() -> None:
    pool = WorkerPool(2)
    hanging = asyncio.create_task(pool.call(HANG, 3600))
    assert await pool.call("operator:add", 1, 1) == 2
    await until(lambda: len(pool.pids()) == 2)
    pids = pool.pids()

    await pool.aclose()
    hanging.cancel()
    with pytest.raises((asyncio.CancelledError, ToolError)):
        await hanging

    assert not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        await pool.call("operator:add", 1, 1)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerPool(0)
