"""``target_agent`` and ``GetAgent`` of another agent across nodes, on the
in-memory peers: any member places a targeted task on its target alone,
dedups it with the target as part of the request, never moves it, and an
active-passive coordinator honours it; any member describes any other."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from praxis_grpc.config import RoutingConfig
from praxis_grpc.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from praxis_grpc.peers.base import Dispatch
from praxis_grpc.routing.delegation import OWNER_LOST
from praxis_grpc.tasks.model import Submission, TaskState
from praxis_grpc.testing import ExecutionLog, RecordingTool
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.peer_nodes import PeerCluster, PeerNode
from tests.integration.helpers import until
from tests.unit.test_memory_peers import Gate

TASK_ID = "0f6a3c1e-8d2b-4e7a-9b1c-5d4e3f2a1b0c"


def work(key: str, target: str = "") -> Submission:
    return Submission("work", {"seconds": 0, "key": key}, target_agent=target)


async def three(cluster: PeerCluster, log: ExecutionLog) -> PeerNode:
    """An entry node and two workers, all offering ``work``; the entry node."""
    for name in ("entry", "w1", "w2"):
        await cluster.add(PeerNode(cluster.network, name, [RecordingTool(name, log)]))
    return cluster.nodes["entry"]


async def test_any_member_places_a_targeted_task_on_its_target_only(
    cluster: PeerCluster,
) -> None:
    log = ExecutionLog()
    entry = await three(cluster, log)
    for index in range(6):
        done, _ = await entry.dispatcher.submit(work(f"k{index}", "w2"), wait=True)
        assert done.state is TaskState.COMPLETED
        assert done.owner_agent_id == "w2"
        assert done.target_agent == "w2"
    assert {run.agent for run in log.runs} == {"w2"}
    # Through another member, and onto the entry node itself.
    via_w1, _ = await cluster.nodes["w1"].dispatcher.submit(work("w1", "entry"), wait=True)
    assert via_w1.owner_agent_id == "entry"


async def test_the_target_is_part_of_the_request_for_dedup(cluster: PeerCluster) -> None:
    entry = await three(cluster, ExecutionLog())
    first, _ = await entry.dispatcher.submit(work("same", "w1"), task_id=TASK_ID, wait=True)
    again, deduplicated = await entry.dispatcher.submit(work("same", "w1"), task_id=TASK_ID)
    assert deduplicated
    assert again.task_id == first.task_id
    with pytest.raises(AlreadyExists):
        await entry.dispatcher.submit(work("same", "w2"), task_id=TASK_ID)
    with pytest.raises(AlreadyExists):
        await entry.dispatcher.submit(work("same"), task_id=TASK_ID)
    keyed = Submission("work", {"seconds": 0, "key": "k"}, idempotency_key="k", target_agent="w1")
    await entry.dispatcher.submit(keyed, wait=True)
    with pytest.raises(AlreadyExists):
        await entry.dispatcher.submit(
            Submission("work", {"seconds": 0, "key": "k"}, idempotency_key="k", target_agent="w2")
        )


async def test_errors_name_the_field(cluster: PeerCluster) -> None:
    entry = await three(cluster, ExecutionLog())
    with pytest.raises(NotFound, match=r"^target_agent: no agent 'ghost'"):
        await entry.dispatcher.submit(work("x", "ghost"))
    cluster.nodes["w1"].engine.set_accepting(False)
    cluster.share_cards()
    with pytest.raises(FailedPrecondition, match=r"^target_agent: agent w1 \(w1\) is draining"):
        await entry.dispatcher.submit(work("x", "w1"))


async def test_an_owner_refuses_a_dispatch_meant_for_another_agent(
    cluster: PeerCluster,
) -> None:
    log = ExecutionLog()
    entry = await three(cluster, log)
    meant_for_w2 = Dispatch(TASK_ID, work("stray", "w2"), origin_agent_id="entry")
    with pytest.raises(FailedPrecondition, match=r"^target_agent: the task targets agent w2"):
        await entry.peers.dispatch("w1", meant_for_w2, call_timeout=5)
    assert log.count("stray") == 0


async def test_a_targeted_task_of_a_lost_agent_is_not_moved_even_if_idempotent(
    cluster: PeerCluster,
) -> None:
    log = ExecutionLog()
    routing = RoutingConfig(owner_lost_timeout=0.2)
    entry = await cluster.add(PeerNode(cluster.network, "entry", [], routing=routing))
    await cluster.add(PeerNode(cluster.network, "first", [Gate("first", log, False)]))
    await cluster.add(PeerNode(cluster.network, "second", [Gate("second", log, True)]))
    task, _ = await entry.dispatcher.submit(Submission("gate", target_agent="first"))
    await until(lambda: entry.engine.get(task.task_id).state is TaskState.WORKING)
    cluster.network.kill("first")
    cluster.lose("first")
    final = await asyncio.wait_for(entry.engine.wait(task.task_id), 10)
    assert final.state is TaskState.FAILED
    assert final.error is not None
    assert final.error.reason == OWNER_LOST
    assert "the task targets that agent" in final.error.message
    assert [run.agent for run in log.runs] == ["first"]  # never run on "second"


async def test_an_active_passive_coordinator_honours_the_target(tmp_path: Path) -> None:
    group, cluster, log = MemoryConsensusGroup(), PeerCluster(), ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        await cluster.add_group(group, ["a", "b", "c"], log, tmp_path)
        a, c = cluster.nodes["a"], cluster.nodes["c"]
        group.elect("a")
        await until(lambda: bool(a.ha and a.ha.leading))
        await until(lambda: c.ha is not None and c.ha.leadership().leader_id == "a")
        cluster.share_cards()
        for index in range(4):  # a standby's client, relayed to the coordinator
            done, _ = await c.dispatcher.submit(work(f"t{index}", "b"), wait=True)
            assert done.state is TaskState.COMPLETED
            assert done.owner_agent_id == "b"
            assert done.origin_agent_id == "coordinator"
        assert {run.agent for run in log.runs} == {"b"}
        with pytest.raises(FailedPrecondition, match="coordinates and runs no tasks"):
            await a.dispatcher.submit(work("on-a", "a"))


async def test_any_member_describes_any_other(cluster: PeerCluster) -> None:
    entry = await three(cluster, ExecutionLog())
    described = await entry.remote.describe("w2", None)
    assert (described.agent_id, described.name) == ("w2", "w2")
    with pytest.raises(NotFound, match=r"^agent_id: no agent 'ghost'"):
        await entry.remote.describe("ghost", None)
    cluster.network.cut("entry", "w2")
    with pytest.raises(Unavailable, match=r"^agent_id: agent w2 did not answer"):
        await entry.remote.describe("w2", 5.0)
