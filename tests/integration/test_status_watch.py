"""``praxis status`` and ``--watch`` against live in-process nodes: an
active-passive cluster (in-memory discovery and consensus) drawn on a
recording rich console."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from praxis_grpc.cli.status import MeshPoller, snapshot, watch
from praxis_grpc.cli.status_view import view_document
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.node import Node
from praxis_grpc.testing import ExecutionLog, RecordingTool, make_config
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.memory_mesh import MemoryMesh
from praxis_grpc.tools.registry import ToolRegistry
from tests.integration.helpers import NodeGroup, stub, until, work

HA = {
    "mode": "active-passive",
    "consensus": {"backend": "raft", "raft": {"address": "127.0.0.1:1", "secret": "test"}},
}


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    mesh, group, log = MemoryMesh(), MemoryConsensusGroup(), ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        started = NodeGroup(stack=stack)
        for name in ("alpha", "beta", "gamma"):
            config = make_config(
                tmp_path / name,
                name=name,
                metrics={"enabled": False},
                cards={"heartbeat": "200ms", "ttl": "3s"},
                agent={"name": name},
                ha=HA,
            )
            identity = load_or_create_identity(config.key_file)
            node = Node(
                config,
                identity=identity,
                tools=ToolRegistry([RecordingTool(name, log)]),
                discovery=mesh.member(identity.agent_id),
                consensus=group.member,
            )
            await started.started(name, node)
        await started.converged()
        alpha, beta, gamma = started.nodes.values()
        group.elect(alpha.agent_id)
        await until(lambda: alpha.role == "coordinator" and beta.role == gamma.role == "standby")
        yield [alpha, beta, gamma]


async def test_watch_shows_members_leader_and_a_task_that_ran(nodes: list[Node]) -> None:
    alpha, beta, _ = nodes
    async with stub(beta) as tasks:
        task = (await tasks.SubmitTask(work(0, "shown", wait=True))).task
    console = Console(record=True, width=200, force_terminal=True, color_system=None)
    targets = [beta.endpoints.grpc, alpha.endpoints.grpc]
    poller = MeshPoller(targets)
    stop = asyncio.Event()
    watching = asyncio.create_task(watch(targets, console, 0.2, stop, poller=poller))

    def seen() -> bool:
        view = poller.view
        return (
            len(view.cards) == 3
            and all(node.agent is not None for node in view.nodes)
            and any(t.task_id == task.task_id for t in view.tasks)
        )

    await until(seen)
    stop.set()
    await watching
    text = console.export_text()
    # The live view (a terminal console: rich Live) drew its last frame with
    # the members, the leader with its term and the task that ran.
    frame = text[text.rindex("praxis status") :]
    for name in ("alpha", "beta", "gamma"):
        assert name in frame
    term = alpha.metrics.consensus_term._value.get()
    assert f"leader alpha (term {int(term)})" in frame
    assert "members (3)" in frame
    row = next(line for line in frame.splitlines() if task.task_id in line)
    assert "COMPLETED" in row
    assert "work" in row
    assert "coordinator" in frame
    assert "standby" in frame


async def test_snapshot_document_names_the_leader_and_the_nodes(nodes: list[Node]) -> None:
    alpha, _, gamma = nodes
    async with stub(gamma) as tasks:
        task = (await tasks.SubmitTask(work(0, "listed", wait=True))).task
    view = await snapshot([gamma.endpoints.grpc, "127.0.0.1:1"])
    document = view_document(view)
    assert document["leader"].startswith("alpha (term ")
    assert {card["name"] for card in document["members"]} == {"alpha", "beta", "gamma"}
    first, unreachable = document["nodes"]
    assert first["health"] == "SERVING"
    assert first["agent"]["role"] == "AGENT_ROLE_STANDBY"
    assert first["agent"]["leader_agent_id"] == alpha.agent_id
    assert unreachable["error"].startswith("cannot reach a praxis node at 127.0.0.1:1")
    assert [t["task_id"] for t in document["tasks"]] == [task.task_id]
    assert document["tasks"][0]["state"] == "TASK_STATE_COMPLETED"
