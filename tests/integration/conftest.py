"""Fixtures: one in-process node on ephemeral ports, and aio stubs to call it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
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
from praxis_grpc.testing.etcd_cluster import EtcdCluster, find_etcd


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


@dataclass(frozen=True)
class EtcdNamespace:
    """A test's own corner of the session's etcd cluster: its members use
    ``prefix``, so no key, election or state of another test is seen."""

    cluster: EtcdCluster
    prefix: str

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints


def require_etcd() -> None:
    """Skip without the etcd binary, except under CI=true, where it fails."""
    if find_etcd() is None:
        message = "etcd is not installed (apt-get install etcd-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI scripts/test must install it")
        pytest.skip(message)


@pytest.fixture(scope="session")
def etcd_session() -> Iterator[EtcdCluster]:
    """One 3-member etcd cluster for the whole run (starting one costs about a
    second); tests that kill or pause its members start their own."""
    require_etcd()
    with EtcdCluster(3, heartbeat=0.05, election_timeout=0.25) as cluster:
        yield cluster


@pytest.fixture
def etcd(etcd_session: EtcdCluster) -> EtcdNamespace:
    """The session's etcd cluster under a key prefix of this test's own."""
    etcd_session.wait_healthy(10)
    return EtcdNamespace(etcd_session, f"/test-{uuid.uuid4().hex}/")
