"""Fencing between in-process active-passive nodes over real gRPC, on the
in-memory consensus fake and on the embedded raft backend (pysyncobj).

A dispatch (``PeerService.Dispatch``, never the public API) carries the
coordinator's term as its fencing token; a dispatch without one, with one
older than the newest a node has seen, or with one newer than any term the
node has seen the group reach, is refused, and the coordinator itself
refuses an older term than its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from praxis_grpc._gen.praxis.v1 import task_service_pb2, types_pb2
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.node import Node
from praxis_grpc.testing import ExecutionLog, RecordingTool, make_config
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.memory_mesh import MemoryMesh
from praxis_grpc.testing.wire import varint_field
from praxis_grpc.tools.registry import ToolRegistry
from tests.integration.helpers import (
    NodeGroup,
    free_addresses,
    peer_stub,
    stub,
    until,
    work,
    work_dispatch,
)

MAX_TOKEN = 2**64 - 1


class Cluster(NodeGroup):
    """Three active-passive nodes on one backend; ``coordinator`` once elected."""

    def __init__(self, stack: contextlib.AsyncExitStack, root: Path, backend: str) -> None:
        super().__init__(stack=stack)
        self.root = root
        self.backend = backend
        self.mesh = MemoryMesh()
        self.group = MemoryConsensusGroup()
        self.log = ExecutionLog()
        self._raft = free_addresses(3) if backend == "raft" else []

    async def start_all(self) -> None:
        for index, name in enumerate(("a", "b", "c")):
            await self._start(index, name)
        await self.converged()
        if self.backend == "memory":
            self.group.elect(self.nodes["a"].agent_id)
        await until(lambda: self.settled() is not None, timeout=20)

    def settled(self) -> Node | None:
        """The coordinator, once exactly one node coordinates and every node
        agrees on it and on its term."""
        coordinators = [n for n in self.nodes.values() if n.role == "coordinator"]
        views = {(n.leadership().leader_id, n.leadership().term) for n in self.nodes.values()}
        if len(coordinators) != 1 or len(views) != 1:
            return None
        return coordinators[0] if coordinators[0].agent_id == next(iter(views))[0] else None

    async def _start(self, index: int, name: str) -> Node:
        consensus: dict[str, Any] = {
            "backend": "raft",
            "raft": {"address": "127.0.0.1:1", "secret": "test"},
        }
        if self.backend == "raft":
            consensus["raft"] = {
                "address": self._raft[index],
                "peers": [a for a in self._raft if a != self._raft[index]],
                "secret": "fencing-test-secret",
                "election_timeout": "300ms",
                "heartbeat": "50ms",
            }
        config = make_config(
            self.root / name,
            name=name,
            metrics={"enabled": False},
            p2p={"disconnect_grace": "200ms"},
            cards={"heartbeat": "200ms", "ttl": "3s"},
            agent={"name": name},
            routing={"reattach_wait": "60s"},
            ha={"mode": "active-passive", "consensus": consensus},
        )
        identity = load_or_create_identity(config.key_file)
        plug: dict[str, Any] = {}
        if self.backend == "memory":
            plug["consensus"] = self.group.member
        node = Node(
            config,
            identity=identity,
            tools=ToolRegistry([RecordingTool(name, self.log)]),
            discovery=self.mesh.member(identity.agent_id),
            **plug,
        )
        return await self.started(name, node)


@pytest.fixture(params=["memory", "raft"])
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        cluster = Cluster(stack, tmp_path, request.param)
        await cluster.start_all()
        yield cluster


async def dispatch(node: Node, task_id: str, key: str, **fields: Any) -> grpc.aio.AioRpcError:
    """Send ``node`` a dispatch of task ``task_id``; return how it was refused."""
    request = work_dispatch(30, key, task_id=task_id, **fields)
    async with peer_stub(node) as peer:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await peer.Dispatch(request)
    return info.value


def assert_fenced(error: grpc.aio.AioRpcError) -> None:
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error
    trailers = dict(cast(Any, error.trailing_metadata()) or ())
    assert trailers["praxis-error"] == "failed_precondition"
    assert "fencing_token" in (error.details() or "")


async def test_an_old_or_missing_token_is_refused_by_the_coordinator_and_every_worker(
    cluster: Cluster,
) -> None:
    coordinator = cluster.settled()
    assert coordinator is not None
    term = coordinator.leadership().term
    async with stub(coordinator) as tasks:
        task = (await tasks.SubmitTask(work(30, "long"))).task
    await until(lambda: cluster.log.count("long") == 1)
    runner = next(n for n in cluster.nodes.values() if n.agent_id == task.owner_agent_id)
    other = next(n for n in cluster.nodes.values() if n not in (coordinator, runner))

    # The deposed coordinator's dispatch to the node that coordinates now (it
    # holds the record of the task and would adopt it) ...
    assert_fenced(
        await dispatch(
            coordinator,
            task.task_id,
            "long",
            origin_agent_id=coordinator.agent_id,
            fencing_token=term - 1,
        )
    )
    # ... and a dispatch without a token to a worker that never had the task.
    assert_fenced(
        await dispatch(
            other, task.task_id, "long", origin_agent_id=coordinator.agent_id, fencing_token=0
        )
    )
    # Both were refused before anything was stored: the task runs once, on
    # the worker the coordinator chose.
    assert cluster.log.agents("long") == [runner.config.agent.name]
    assert coordinator.engine.get(task.task_id).owner_agent_id == runner.agent_id
    with pytest.raises(Exception, match="not found"):
        other.engine.get(task.task_id)


async def test_a_token_beyond_any_term_the_group_reached_does_not_poison_the_fence(
    cluster: Cluster,
) -> None:
    coordinator = cluster.settled()
    assert coordinator is not None
    standbys = [n for n in cluster.nodes.values() if n is not coordinator]
    # Each waits a moment for its view of the group to reach the token, then
    # refuses it.
    refusals = await asyncio.gather(
        *(
            dispatch(
                standby,
                "0f6a3c1e-8d2b-4e7a-9b1c-5d4e3f2a1b0c",
                "bogus",
                origin_agent_id=coordinator.agent_id,
                fencing_token=MAX_TOKEN,
            )
            for standby in standbys
        )
    )
    for refusal in refusals:
        assert_fenced(refusal)
    assert cluster.log.count("bogus") == 0
    # Nothing was persisted: the real coordinator's dispatches still go through.
    assert all(
        int((s.config.resolved_data_dir / "fencing").read_text() or 0) < MAX_TOKEN
        for s in standbys
        if (s.config.resolved_data_dir / "fencing").exists()
    )
    async with stub(coordinator) as tasks:
        done = [(await tasks.SubmitTask(work(0, f"after{i}", wait=True))).task for i in range(4)]
    assert all(t.state == types_pb2.TASK_STATE_COMPLETED for t in done)
    assert {t.owner_agent_id for t in done} <= {s.agent_id for s in standbys}


async def test_the_public_api_carries_no_fencing_token(cluster: Cluster) -> None:
    # Issue 11's reproduction: SubmitTask(local_only=true,
    # fencing_token=2**64-1) sent to each standby made every later dispatch
    # of the real coordinator fail, persistently. The fields are gone from
    # praxis.v1 (reserved); a client that still sends their bytes gets an
    # ordinary submission, routed by the coordinator, and no fence moves.
    coordinator = cluster.settled()
    assert coordinator is not None
    term = coordinator.leadership().term
    standbys = [n for n in cluster.nodes.values() if n is not coordinator]
    legacy = varint_field(9, 1) + varint_field(11, MAX_TOKEN)  # local_only, fencing_token
    for index, standby in enumerate(standbys):
        request = work(0, f"legacy{index}", wait=True).SerializeToString() + legacy
        async with grpc.aio.insecure_channel(standby.endpoints.grpc) as channel:
            submit = channel.unary_unary(
                "/praxis.v1.TaskService/SubmitTask",
                request_serializer=None,
                response_deserializer=task_service_pb2.SubmitTaskResponse.FromString,
            )
            answer = await submit(request)
        assert answer.task.state == types_pb2.TASK_STATE_COMPLETED
        assert answer.task.origin_agent_id == "coordinator"  # the coordinator routed it
    for standby in standbys:
        fencing = standby.config.resolved_data_dir / "fencing"
        assert not fencing.exists() or int(fencing.read_text() or 0) <= term
    async with stub(coordinator) as tasks:
        done = [(await tasks.SubmitTask(work(0, f"after{i}", wait=True))).task for i in range(4)]
    assert all(t.state == types_pb2.TASK_STATE_COMPLETED for t in done)
    assert cluster.log.count("legacy0") == cluster.log.count("legacy1") == 1
