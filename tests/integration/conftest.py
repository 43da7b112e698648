"""Fixtures: one in-process node on ephemeral ports, and aio stubs to call it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2_grpc,
    card_service_pb2_grpc,
    task_service_pb2_grpc,
)
from praxis_grpc.node import Node
from praxis_grpc.testing import make_config, running_node


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub
    cards: card_service_pb2_grpc.CardServiceAsyncStub
    agent: agent_service_pb2_grpc.AgentServiceAsyncStub
    health: Any


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = make_config(
        tmp_path / "node",
        tasks={"max_concurrency": 2, "queue_limit": 4, "max_argument_bytes": 4096},
    )
    async with running_node(config) as started:
        yield started


@contextlib.asynccontextmanager
async def stubs_of(node: Node) -> AsyncIterator[Stubs]:
    """Stubs of every service ``node`` serves, over one channel."""
    async with grpc.aio.insecure_channel(node.endpoints.grpc) as channel:
        yield Stubs(
            channel,
            task_service_pb2_grpc.TaskServiceStub(channel),
            card_service_pb2_grpc.CardServiceStub(channel),
            agent_service_pb2_grpc.AgentServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
        )


@pytest.fixture
async def stubs(node: Node) -> AsyncIterator[Stubs]:
    async with stubs_of(node) as made:
        yield made
