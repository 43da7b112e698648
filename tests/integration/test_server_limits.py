"""The gRPC server's connection limits (api.*) against hostile raw HTTP/2 clients (issue 9)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praxis_grpc._gen.praxis.v1 import agent_service_pb2, agent_service_pb2_grpc, types_pb2
from praxis_grpc.api.server_limits import server_options
from praxis_grpc.client import PraxisClient
from praxis_grpc.config import ApiConfig
from praxis_grpc.node import Node
from praxis_grpc.peers.liveness import wait_gone
from praxis_grpc.testing import make_config, running_node
from praxis_grpc.testing.slow_reader import SlowReader
from tests.integration.helpers import until

HEALTH_WATCH = "/grpc.health.v1.Health/Watch"


@contextlib.asynccontextmanager
async def node_with(tmp_path: Path, **api: Any) -> AsyncIterator[Node]:
    # A queue small enough for the fewest streams a test asks for.
    tasks = {"queue_limit": 1, "max_concurrency": 1}
    config = make_config(tmp_path, api=api, tasks=tasks, metrics={"enabled": False})
    async with running_node(config) as node:
        yield node


@contextlib.asynccontextmanager
async def slow_reader(node: Node, **options: Any) -> AsyncIterator[SlowReader]:
    host, _, port = node.endpoints.grpc.rpartition(":")
    reader = SlowReader(host, int(port), **options)
    await reader.connect(window=0)
    try:
        yield reader
    finally:
        await reader.close()


async def test_a_reader_that_answers_pings_is_closed_at_max_connection_age(
    tmp_path: Path,
) -> None:
    # A zero window holds the Health/Watch answer forever; only the age limit ends it.
    async with (
        node_with(tmp_path, max_connection_age="300ms", max_connection_age_grace="300ms") as node,
        slow_reader(node) as reader,
    ):
        await reader.call(HEALTH_WATCH, b"", end_stream=True)
        await until(lambda: reader.closed_by_server)
        assert reader.goaway


async def test_a_reader_that_ignores_pings_is_closed_after_the_keepalive_timeout(
    tmp_path: Path,
) -> None:
    async with (
        node_with(tmp_path, keepalive_time="200ms", keepalive_timeout="200ms") as node,
        slow_reader(node, answer_pings=False) as reader,
    ):
        await reader.call(HEALTH_WATCH, b"", end_stream=True)
        await until(lambda: reader.closed_by_server)


async def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    async with (
        node_with(tmp_path, max_connection_idle="200ms") as node,
        slow_reader(node) as reader,
    ):
        await until(lambda: reader.closed_by_server)
        assert reader.goaway


async def test_streams_beyond_max_concurrent_streams_are_refused(tmp_path: Path) -> None:
    async with node_with(tmp_path, max_concurrent_streams=2) as node, slow_reader(node) as reader:
        streams = [await reader.call(HEALTH_WATCH, b"") for _ in range(3)]
        await until(lambda: streams[2] in reader.reset_streams)
        assert not reader.reset_streams & set(streams[:2])


async def test_calls_beyond_max_concurrent_rpcs_get_resource_exhausted(tmp_path: Path) -> None:
    async with (
        node_with(tmp_path, max_concurrent_rpcs=2) as node,
        grpc.aio.insecure_channel(node.endpoints.grpc) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(2)]
        for watch in watches:
            await watch.read()  # both in progress
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.GetAgent(agent_service_pb2.GetAgentRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for watch in watches:
            watch.cancel()


async def test_a_call_over_max_concurrent_rpcs_is_refused_as_grpc_refused_it_and_frees_no_slot(
    tmp_path: Path,
) -> None:
    # The node counts calls itself (api/call_limit.py) instead of grpc.aio's
    # maximum_concurrent_rpcs: clients must see grpc's refusal unchanged, and a
    # slot comes back when its call ends (a refused call held none).
    async with (
        node_with(tmp_path, max_concurrent_rpcs=1) as node,
        grpc.aio.insecure_channel(node.endpoints.grpc) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest())
        await watch.read()
        for _ in range(2):
            refused = agent.GetAgent(agent_service_pb2.GetAgentRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await refused
            assert await refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await refused.details() == "Concurrent RPC limit exceeded!"
            assert not tuple(await refused.trailing_metadata() or ())
        watch.cancel()

        async def served() -> bool:
            try:
                await agent.GetAgent(agent_service_pb2.GetAgentRequest(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False
            return True

        async with asyncio.timeout(10):
            while not await served():
                await asyncio.sleep(0.01)
        # One unary call at a time keeps being served: each gave its slot back.
        for _ in range(3):
            assert await served()


def test_server_options_carry_every_limit() -> None:
    api = ApiConfig.model_validate(
        {
            "max_concurrent_streams": 7,
            "max_connection_idle": "2m",
            "max_connection_age": "1h",
            "max_connection_age_grace": 0,
            "keepalive_time": "30s",
            "keepalive_timeout": "500ms",
        }
    )
    options = dict(server_options(api))
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.max_connection_idle_ms"] == 120_000
    assert options["grpc.max_connection_age_ms"] == 3_600_000
    assert options["grpc.max_connection_age_grace_ms"] == 1  # 0 would mean "gRPC default"
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 500
    assert options["grpc.http2.ping_timeout_ms"] == 500
    # The node's own channels ping every 10 s; that must never count as abuse.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] < 10_000


async def test_connections_beyond_max_connections_are_closed(tmp_path: Path) -> None:
    async with (
        node_with(tmp_path, max_connections=2) as node,
        slow_reader(node) as first,
        slow_reader(node) as second,
    ):
        await first.call(HEALTH_WATCH, b"")
        await second.call(HEALTH_WATCH, b"")
        async with slow_reader(node) as third:
            await until(lambda: third.closed_by_server)
        assert not first.closed_by_server
        assert not second.closed_by_server


async def test_liveness_watch_outlives_connection_ages_and_sees_the_process_go(
    tmp_path: Path,
) -> None:
    # A standby's Health/Watch stream is ended by every max_connection_age: not evidence.
    async with node_with(
        tmp_path, max_connection_age="200ms", max_connection_age_grace="100ms"
    ) as node:
        watcher = asyncio.create_task(wait_gone(node.endpoints.grpc))

        def ended_watches() -> float:
            return sum(
                sample.value
                for metric in node.metrics.registry.collect()
                for sample in metric.samples
                if sample.name == "praxis_grpc_server_requests_total"
                and sample.labels["service"] == "grpc.health.v1.Health"
                and sample.labels["method"] == "Watch"
            )

        await until(lambda: ended_watches() >= 3)
        assert not watcher.done()
    assert "refuses connections" in await asyncio.wait_for(watcher, 10)


async def test_the_client_watches_a_task_across_connection_ages(tmp_path: Path) -> None:
    # The connection is asked to go away every 300 ms and closed 300 ms later:
    # the CLI's watch opens the stream again instead of failing UNAVAILABLE.
    async with node_with(
        tmp_path, max_connection_age="300ms", max_connection_age_grace="300ms"
    ) as node:
        with PraxisClient(node.endpoints.grpc) as client:
            submitted = await asyncio.to_thread(client.submit, "sleep", {"seconds": 2})
            task = submitted.task
            states = await asyncio.to_thread(lambda: list(client.watch_task(task.task_id)))
    assert states[-1].state == types_pb2.TASK_STATE_COMPLETED
    assert len(states) == len({(s.state, s.attempt) for s in states})
