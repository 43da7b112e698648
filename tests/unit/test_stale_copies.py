"""A deposed coordinator's local copies of the cluster's records end with the
outcome the next coordinator committed (ListTasks local_only agrees with the
coordinator), and a copy of a record the cluster no longer holds is dropped.
In-memory peers and consensus: no sockets."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from praxis_grpc.errors import NotFound
from praxis_grpc.ha.coordinator import CLUSTER_ORIGIN
from praxis_grpc.ha.copies import StaleCopies
from praxis_grpc.ha.records import TASK_PREFIX, encode_task
from praxis_grpc.tasks.model import Submission, Task, TaskState
from praxis_grpc.testing import ExecutionLog
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.peer_nodes import PeerCluster, PeerNode
from praxis_grpc.testing.tools import Execution
from praxis_grpc.tools.base import ToolSpec
from tests.integration.helpers import until


class Gate:
    """``gate``: runs until the shared gate opens."""

    def __init__(self, agent: str, log: ExecutionLog, gate: asyncio.Event) -> None:
        self.spec = ToolSpec(name="gate", description="test", idempotent=False)
        self._agent, self._log, self._gate = agent, log, gate

    async def run(self, arguments: Any) -> Any:
        self._log.runs.append(Execution(self._agent, dict(arguments)))
        await self._gate.wait()
        return {"agent": self._agent}


@pytest.fixture
async def nodes(
    tmp_path: Path,
) -> AsyncIterator[tuple[MemoryConsensusGroup, asyncio.Event, PeerCluster]]:
    group, gate, cluster = MemoryConsensusGroup(), asyncio.Event(), PeerCluster()
    log = ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        for name in ("a", "b", "c"):
            node = PeerNode(
                cluster.network,
                name,
                [Gate(name, log, gate)],
                consensus=group,
                data_dir=tmp_path / name,
            )
            await cluster.add(node)
        group.elect("a")
        a = cluster.nodes["a"]
        await until(lambda: a.ha is not None and a.ha.leading)
        cluster.share_cards()  # the coordinator does not execute
        yield group, gate, cluster


def unfinished_here(node: PeerNode) -> list[str]:
    tasks, _ = node.engine.list(tool="gate")
    return [t.task_id for t in tasks if not t.terminal and t.owner_agent_id != node.agent_id]


async def test_a_deposed_coordinators_copies_end_with_the_committed_outcome(
    nodes: tuple[MemoryConsensusGroup, asyncio.Event, PeerCluster],
) -> None:
    group, gate, cluster = nodes
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    accepted = [(await a.dispatcher.submit(Submission("gate", {"n": i})))[0] for i in range(4)]
    await until(lambda: all(a.engine.get(t.task_id).state is TaskState.WORKING for t in accepted))
    # a loses the leadership with the tasks running; b carries them on.
    group.elect("b")
    await until(lambda: b.ha is not None and b.ha.leading and a.ha is not None and not a.ha.leading)
    cluster.share_cards()
    gate.set()
    await until(lambda: all(b.engine.get(t.task_id).terminal for t in accepted))
    # a's own store (ListTasks local_only) agrees with what b committed.
    await until(lambda: not unfinished_here(a))
    for task in accepted:
        assert a.engine.get(task.task_id).state is TaskState.COMPLETED
        assert a.engine.get(task.task_id).result == b.engine.get(task.task_id).result


async def test_a_copy_the_cluster_dropped_is_deleted_and_one_sent_here_is_left(
    nodes: tuple[MemoryConsensusGroup, asyncio.Event, PeerCluster],
) -> None:
    _, gate, cluster = nodes
    a = cluster.nodes["a"]
    dropped, _ = await a.dispatcher.submit(Submission("gate", {"n": 0}))
    sent_here, _ = await a.dispatcher.submit(Submission("gate", {"n": 1}))
    await until(lambda: len(unfinished_here(a)) == 2)
    # The replicated state as a standby later reads it: the first record was
    # dropped (a failed placement, or retention after it finished); the
    # second was re-dispatched to a itself.
    later = MemoryConsensusGroup()
    member = later.member("x", "x")
    await member.start()
    later.elect("x")
    moved = a.engine.get(sent_here.task_id).reassign("a", sent_here.updated_at)
    await member.commit(TASK_PREFIX + moved.task_id, encode_task(moved), term=later.term)
    copies = StaleCopies(a.engine, member, CLUSTER_ORIGIN)
    assert await copies.refresh() == 0
    assert unfinished_here(a) == [sent_here.task_id]  # the dispatch brings it here
    with pytest.raises(NotFound):
        a.engine.get(dropped.task_id)
    await member.aclose()
    gate.set()


async def test_a_cut_off_coordinator_rejoining_reconciles_its_copies_at_once(
    nodes: tuple[MemoryConsensusGroup, asyncio.Event, PeerCluster],
) -> None:
    # The nemesis suite's finding (raft, 8 s partition of the coordinator):
    # after the heal the cut-off node still listed acknowledged tasks
    # unfinished that the next coordinator had finished.
    group, gate, cluster = nodes
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    accepted = [(await a.dispatcher.submit(Submission("gate", {"n": i})))[0] for i in range(4)]
    await until(lambda: all(a.engine.get(t.task_id).state is TaskState.WORKING for t in accepted))
    ha: Any = a.ha
    # A cut long enough for the refresh's backoff to reach its cap: each pass
    # during the cut reads the cut-off member's own (stale) records.
    ha._copies._first_pause = ha._copies._max_pause = 3600.0
    group.isolate("a", sees_leader=False)  # a steps down, as raft's leader does
    await until(lambda: not ha.leading and ha._refresher is not None)
    await until(lambda: len(unfinished_here(a)) == 4)
    group.elect("b")
    await until(lambda: b.ha is not None and b.ha.leading)
    cluster.share_cards()
    gate.set()
    await until(lambda: all(b.engine.get(t.task_id).terminal for t in accepted))
    assert len(unfinished_here(a)) == 4  # still cut off: nothing to read yet
    # The heal: a learns of b, and brings its copies up to what b committed.
    group.rejoin("a")
    await until(lambda: not unfinished_here(a))
    for task in accepted:
        assert a.engine.get(task.task_id).state is TaskState.COMPLETED


async def test_a_copy_stored_after_the_step_down_is_reconciled_too(
    nodes: tuple[MemoryConsensusGroup, asyncio.Event, PeerCluster],
) -> None:
    # The nemesis suite's finding (etcd, coordinator paused 3.5 s): a commit
    # landed while the coordinator was paused and returned when it woke, so
    # the call stored its local copy after the step-down, once the refresh
    # had found nothing to do.
    group, gate, cluster = nodes
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    ha: Any = a.ha
    passes: list[int] = []
    refresh = ha._copies.refresh

    async def counted() -> int:
        passes.append(await refresh())
        return passes[-1]

    ha._copies.refresh = counted
    group.elect("b")
    await until(lambda: b.ha is not None and b.ha.leading and not ha.leading)
    await until(lambda: passes == [0])  # nothing to refresh yet
    # What b committed: a task c ran to the end.
    now = datetime.now(UTC)
    done = Task(
        task_id=str(uuid.uuid4()),
        tool="gate",
        arguments={"n": 0},
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
        owner_agent_id="c",
        origin_agent_id=CLUSTER_ORIGIN,
    )
    late = done.start(now)  # a's copy, as its own late call stored it
    final = late.complete({"agent": "c"}, now)
    await group_member(b).commit(TASK_PREFIX + done.task_id, encode_task(final), term=group.term)
    await a.engine.record(late)
    assert unfinished_here(a) == [done.task_id]
    await until(lambda: not unfinished_here(a))
    assert a.engine.get(done.task_id).state is TaskState.COMPLETED
    gate.set()


def group_member(node: PeerNode) -> Any:
    return node._consensus
