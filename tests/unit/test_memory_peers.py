"""Delegation, re-dispatch after owner loss, link cuts, standby relays and
take-over on the in-memory peers: no sockets, no discovery, no disk but the
fence file."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from praxis_grpc.config import RoutingConfig
from praxis_grpc.consensus.base import ConsensusError
from praxis_grpc.errors import FailedPrecondition, NotFound
from praxis_grpc.peers.base import Dispatch, PeerLost
from praxis_grpc.routing.delegation import OWNER_LOST
from praxis_grpc.tasks.model import Submission, TaskState
from praxis_grpc.testing import ExecutionLog, RecordingTool
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.peer_nodes import PeerCluster, PeerNode
from praxis_grpc.testing.tools import Execution
from praxis_grpc.tools.base import ToolSpec
from tests.integration.helpers import until

MAX_TOKEN = 2**64 - 1


class Gate:
    """``gate``: runs until its agent's gate opens (open ones return at once)."""

    def __init__(
        self, agent: str, log: ExecutionLog, opened: bool, *, idempotent: bool = True
    ) -> None:
        self.spec = ToolSpec(name="gate", description="test", idempotent=idempotent)
        self._agent, self._log = agent, log
        self.open = asyncio.Event()
        if opened:
            self.open.set()

    async def run(self, arguments: Any) -> Any:
        self._log.runs.append(Execution(self._agent, dict(arguments)))
        await self.open.wait()
        return {"agent": self._agent}


def work(seconds: float, key: str) -> Submission:
    return Submission("work", {"seconds": seconds, "key": key})


async def test_a_task_is_delegated_and_followed_to_its_end(cluster: PeerCluster) -> None:
    log = ExecutionLog()
    entry = await cluster.add(PeerNode(cluster.network, "entry", []))
    await cluster.add(PeerNode(cluster.network, "worker", [RecordingTool("worker", log)]))
    done, deduplicated = await entry.dispatcher.submit(work(0, "k"), wait=True)
    assert not deduplicated
    assert done.state is TaskState.COMPLETED
    assert done.owner_agent_id == "worker"
    assert done.timeout == 60.0  # the owner's default, shown at the entry node too
    assert entry.engine.get(done.task_id).result == {"agent": "worker", "key": "k"}
    queued, _ = await entry.dispatcher.submit(work(0.05, "later"))
    assert queued.owner_agent_id == "worker"
    finished = await entry.engine.wait(queued.task_id)  # followed, not waited on
    assert finished.state is TaskState.COMPLETED
    assert log.count("k") == log.count("later") == 1


async def test_a_cut_link_breaks_the_follow_stream_and_healing_resumes_it(
    cluster: PeerCluster,
) -> None:
    log = ExecutionLog()
    entry = await cluster.add(PeerNode(cluster.network, "entry", []))
    worker = await cluster.add(PeerNode(cluster.network, "worker", [Gate("worker", log, False)]))
    gate = worker.tools.get("gate")
    assert isinstance(gate, Gate)
    task, _ = await entry.dispatcher.submit(Submission("gate"))
    await until(lambda: entry.engine.get(task.task_id).state is TaskState.WORKING)
    cluster.network.cut("entry", "worker")
    with pytest.raises(PeerLost) as lost:
        await entry.peers.cancel("worker", task.task_id, "", call_timeout=1)
    assert not lost.value.sent  # a cut link: the request never left
    gate.open.set()
    await until(lambda: worker.engine.get(task.task_id).terminal)
    assert not entry.engine.get(task.task_id).terminal  # the report cannot cross
    cluster.network.heal("entry", "worker")
    final = await asyncio.wait_for(entry.engine.wait(task.task_id), 10)
    assert final.state is TaskState.COMPLETED
    assert [run.agent for run in log.runs] == ["worker"]


async def test_a_task_of_a_lost_owner_is_dispatched_again_elsewhere(cluster: PeerCluster) -> None:
    log = ExecutionLog()
    entry = await cluster.add(PeerNode(cluster.network, "entry", []))
    first = await cluster.add(PeerNode(cluster.network, "first", [Gate("first", log, False)]))
    await cluster.add(PeerNode(cluster.network, "second", [Gate("second", log, True)]))
    task, _ = await entry.dispatcher.submit(Submission("gate", preferred_agent="first"))
    assert task.owner_agent_id == "first"
    await until(lambda: entry.engine.get(task.task_id).state is TaskState.WORKING)
    cluster.network.kill("first")
    await first.engine.aclose(0)
    cluster.lose("first")
    final = await asyncio.wait_for(entry.engine.wait(task.task_id), 10)
    assert final.state is TaskState.COMPLETED
    assert final.owner_agent_id == "second"
    assert final.attempt == 2  # the lost owner's start counts
    assert [run.agent for run in log.runs] == ["first", "second"]
    assert entry.metrics.redispatches_total._value.get() == 1


async def test_a_non_idempotent_task_of_a_lost_owner_ends_owner_lost_and_is_not_run_again(
    cluster: PeerCluster,
) -> None:
    log = ExecutionLog()
    routing = RoutingConfig(owner_lost_timeout=0.2)
    entry = await cluster.add(PeerNode(cluster.network, "entry", [], routing=routing))
    await cluster.add(
        PeerNode(cluster.network, "first", [Gate("first", log, False, idempotent=False)])
    )
    await cluster.add(
        PeerNode(cluster.network, "second", [Gate("second", log, True, idempotent=False)])
    )
    task, _ = await entry.dispatcher.submit(Submission("gate", preferred_agent="first"))
    assert task.owner_agent_id == "first"
    await until(lambda: entry.engine.get(task.task_id).state is TaskState.WORKING)
    # The owner's process dies (says nothing more) with the task started
    # there: it may have run, so it is not sent anywhere else.
    cluster.network.kill("first")
    cluster.lose("first")
    final = await asyncio.wait_for(entry.engine.wait(task.task_id), 10)
    assert final.state is TaskState.FAILED
    assert final.error is not None
    assert final.error.reason == OWNER_LOST
    assert final.owner_agent_id == "first"
    assert [run.agent for run in log.runs] == ["first"]  # never run again elsewhere
    assert entry.metrics.redispatches_total._value.get() == 0


async def test_a_dispatch_is_fenced_and_a_bogus_token_is_not_remembered(
    tmp_path: Path,
) -> None:
    group = MemoryConsensusGroup()
    cluster = PeerCluster()
    log = ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        await cluster.add_group(group, ["a", "b"], log, tmp_path)
        group.elect("a")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        await until(lambda: a.ha is not None and a.ha.leading and b.ha is not None)
        await until(lambda: b.ha is not None and b.ha.leadership().leader_id == "a")
        bogus = Dispatch(
            task_id="0f6a3c1e-8d2b-4e7a-9b1c-5d4e3f2a1b0c",
            submission=work(0, "bogus"),
            origin_agent_id="coordinator",
            fencing_token=MAX_TOKEN,
        )
        with pytest.raises(FailedPrecondition, match="fencing_token"):
            await a.peers.dispatch("b", bogus, call_timeout=5)
        assert (
            not (tmp_path / "b" / "fencing").exists()
            or int((tmp_path / "b" / "fencing").read_text()) < MAX_TOKEN
        )
        cluster.share_cards()
        done, _ = await a.dispatcher.submit(work(0, "real"), wait=True)
        assert done.state is TaskState.COMPLETED
        assert done.owner_agent_id == "b"
        assert log.count("bogus") == 0


async def test_a_standby_relays_to_the_coordinator_and_the_next_one_takes_over(
    tmp_path: Path,
) -> None:
    group = MemoryConsensusGroup()
    cluster = PeerCluster()
    log = ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        await cluster.add_group(group, ["a", "b", "c"], log, tmp_path)
        a, b, c = (cluster.nodes[n] for n in ("a", "b", "c"))
        group.elect("a")
        await until(lambda: all(n.ha is not None for n in (a, b, c)))
        await until(lambda: bool(a.ha and a.ha.leading))
        cluster.share_cards()  # roles changed: the coordinator does not execute
        # A client of standby c: relayed to a, which places it on a worker.
        relayed, _ = await c.dispatcher.submit(work(0, "relayed"), wait=True)
        assert relayed.state is TaskState.COMPLETED
        assert relayed.origin_agent_id == "coordinator"
        assert relayed.owner_agent_id in ("b", "c")
        assert c.metrics.forwarded_submissions_total.labels("ok")._value.get() == 1
        with pytest.raises(NotFound):
            await a.requests.follow(relayed.task_id).__anext__()  # a runs nothing
        # Tasks acknowledged by a, then a is lost: b takes over from the records.
        accepted = [(await a.dispatcher.submit(work(0.2, f"t{i}")))[0] for i in range(4)]
        group.isolate("a")
        group.elect("b")
        await until(lambda: b.ha is not None and b.ha.leading)
        cluster.share_cards()
        await until(lambda: all(b.engine.get(t.task_id).terminal for t in accepted))
        for task in accepted:
            assert b.engine.get(task.task_id).state is TaskState.COMPLETED
            assert log.count(f"t{accepted.index(task)}") == 1


async def test_a_follower_retries_after_a_commit_failure_instead_of_stopping(
    tmp_path: Path,
) -> None:
    """A consensus failure while the coordinator re-dispatches the task of a
    lost owner used to end that task's follower for good (the record stayed
    WORKING until the next take-over); the follower now backs off and retries."""
    group = MemoryConsensusGroup()
    cluster = PeerCluster()
    log = ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        for name, opened in (("a", True), ("b", False), ("c", True)):
            node = PeerNode(
                cluster.network,
                name,
                [Gate(name, log, opened)],
                consensus=group,
                data_dir=tmp_path / name,
            )
            await cluster.add(node)
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        group.elect("a")
        await until(lambda: bool(a.ha and a.ha.leading))
        cluster.share_cards()
        task, _ = await a.dispatcher.submit(Submission("gate", preferred_agent="b"))
        assert task.owner_agent_id == "b"
        await until(lambda: a.engine.get(task.task_id).state is TaskState.WORKING)
        group.fail(ConsensusError("commit timed out"))
        cluster.network.kill("b")
        await b.engine.aclose(0)
        cluster.lose("b")
        # The follower tries to move the task to c, cannot commit that, and
        # tries again.
        await until(lambda: group.refused >= 2)
        group.fail(None)
        final = await asyncio.wait_for(a.engine.wait(task.task_id), 10)
        assert final.state is TaskState.COMPLETED
        assert final.owner_agent_id == "c"
        assert [run.agent for run in log.runs] == ["b", "c"]


async def test_a_standby_abandons_a_relay_to_a_deposed_coordinator_and_sends_it_to_the_next(
    tmp_path: Path,
) -> None:
    group = MemoryConsensusGroup()
    cluster = PeerCluster()
    log = ExecutionLog()
    gates: dict[str, Gate] = {}
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        for name in ("a", "b", "c"):
            gates[name] = Gate(name, log, False)
            node = PeerNode(
                cluster.network, name, [gates[name]], consensus=group, data_dir=tmp_path / name
            )
            await cluster.add(node)
        a, b, c = (cluster.nodes[n] for n in ("a", "b", "c"))
        group.elect("a")
        await until(lambda: bool(a.ha and a.ha.leading))
        await until(lambda: all(n.ha and n.ha.leadership().leader_id == "a" for n in (b, c)))
        cluster.share_cards()
        # A client of standby c waits for a task: relayed to a, which runs it on b.
        submitted = asyncio.ensure_future(
            c.dispatcher.submit(Submission("gate", preferred_agent="b"), wait=True)
        )
        stack.callback(submitted.cancel)
        await until(lambda: [run.agent for run in log.runs] == ["b"])
        # a is cut off from the group and the other nodes; the group elects b.
        # c's relay to a is still unanswered: it is abandoned, not left to hang.
        group.isolate("a")
        cluster.network.cut("a", "b")
        group.elect("b")
        await until(lambda: c.metrics.relays_abandoned_total._value.get() == 1)
        cluster.network.cut("a", "c")
        await until(lambda: bool(b.ha and b.ha.leading))
        gates["b"].open.set()
        task, deduplicated = await asyncio.wait_for(submitted, 10)
        # Sent again to b with the same task id: the task a accepted, run once.
        assert task.state is TaskState.COMPLETED
        assert task.result == {"agent": "b"}
        assert not deduplicated
        assert [run.agent for run in log.runs] == ["b"]
        assert c.metrics.forwarded_submissions_total.labels("ok")._value.get() == 1
