"""Active-passive HA between in-process nodes: real gRPC, in-memory discovery
and the in-memory consensus fake (the real backends have their own tests)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from praxis_grpc._gen.praxis.v1 import agent_service_pb2 as apb
from praxis_grpc._gen.praxis.v1 import agent_service_pb2_grpc, task_service_pb2_grpc, types_pb2
from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc.api.tokens import Role, add_token
from praxis_grpc.consensus.base import Consensus, Leadership
from praxis_grpc.credentials import ClientCredentials
from praxis_grpc.ha.records import TASK_PREFIX, decode_task, encode_task
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.node import Node
from praxis_grpc.tasks.model import Task, TaskState
from praxis_grpc.testing import ExecutionLog, RecordingTool, make_config
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.memory_mesh import MemoryMesh
from praxis_grpc.tools.registry import ToolRegistry
from tests.integration.helpers import NodeGroup, peer_stub, stub, until, work, work_dispatch

COMPLETED = types_pb2.TASK_STATE_COMPLETED
HA = {
    "mode": "active-passive",
    # The consensus member is the in-memory fake; the raft settings only
    # satisfy the config schema.
    "consensus": {"backend": "raft", "raft": {"address": "127.0.0.1:1", "secret": "test"}},
}


@dataclass(kw_only=True)
class Cluster(NodeGroup):
    root: Path
    mesh: MemoryMesh
    group: MemoryConsensusGroup
    log: ExecutionLog

    async def start(
        self,
        name: str,
        consensus: Callable[[str, str], Consensus] | None = None,
        api: dict[str, Any] | None = None,
        **ha: Any,
    ) -> Node:
        config = make_config(
            self.root / name,
            name=name,
            metrics={"enabled": False},
            p2p={"disconnect_grace": "200ms"},
            cards={"heartbeat": "200ms", "ttl": "3s"},
            agent={"name": name},
            routing={"reattach_wait": "60s"},
            ha={**HA, **ha},
            api=api or {},
        )
        identity = load_or_create_identity(config.key_file)
        node = Node(
            config,
            identity=identity,
            tools=ToolRegistry([RecordingTool(name, self.log)]),
            discovery=self.mesh.member(identity.agent_id),
            consensus=consensus or self.group.member,
        )
        return await self.started(name, node)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        yield Cluster(
            stack=stack,
            root=tmp_path,
            mesh=MemoryMesh(),
            group=MemoryConsensusGroup(),
            log=ExecutionLog(),
        )


async def three(cluster: Cluster, **ha: Any) -> tuple[Node, Node, Node]:
    a = await cluster.start("a", **ha)
    b = await cluster.start("b", **ha)
    c = await cluster.start("c", **ha)
    await cluster.converged()
    cluster.group.elect(a.agent_id)
    await until(lambda: a.role == "coordinator" and b.role == c.role == "standby")
    return a, b, c


async def test_standby_forwards_to_the_coordinator_which_does_not_execute(
    cluster: Cluster,
) -> None:
    a, b, c = await three(cluster)
    async with stub(b) as tasks:
        results = [(await tasks.SubmitTask(work(0, f"f{i}", wait=True))).task for i in range(6)]
    assert all(task.state == COMPLETED for task in results)
    assert {task.owner_agent_id for task in results} <= {b.agent_id, c.agent_id}
    assert all(task.origin_agent_id == "coordinator" for task in results)
    assert b.metrics.forwarded_submissions_total.labels("ok")._value.get() == 6
    # The coordinator holds the records; GetTask at a standby is relayed.
    async with stub(c) as tasks:
        got = await tasks.GetTask(pb.GetTaskRequest(task_id=results[0].task_id))
        assert got.task.state == COMPLETED
        # So is ListTasks: a standby lists the cluster's queue, not its own copies.
        listed = await tasks.ListTasks(pb.ListTasksRequest(page_size=4))
        rest = await tasks.ListTasks(
            pb.ListTasksRequest(page_size=4, page_token=listed.next_page_token)
        )
        own = await tasks.ListTasks(pb.ListTasksRequest(local_only=True))
    ran_on_c = sorted(t.task_id for t in results if t.owner_agent_id == c.agent_id)
    assert sorted(t.task_id for t in own.tasks) == ran_on_c
    every = [*listed.tasks, *rest.tasks]
    assert sorted(t.task_id for t in every) == sorted(t.task_id for t in results)
    assert all(t.state == COMPLETED for t in every)
    assert not rest.next_page_token
    async with grpc.aio.insecure_channel(b.endpoints.grpc) as channel:
        agent = await agent_service_pb2_grpc.AgentServiceStub(channel).GetAgent(
            apb.GetAgentRequest()
        )
    assert agent.agent.role == types_pb2.AGENT_ROLE_STANDBY
    assert agent.agent.leader_agent_id == a.agent_id
    assert agent.agent.leader_address == a.endpoints.grpc
    assert agent.agent.term == cluster.group.term
    assert agent.agent.ha_mode == types_pb2.HA_MODE_ACTIVE_PASSIVE
    card = b.directory.get(a.agent_id)
    assert card is not None
    assert card.role == "coordinator"
    assert a.metrics.consensus_is_leader._value.get() == 1


async def test_without_forwarding_a_standby_names_the_coordinator(cluster: Cluster) -> None:
    a, b, _ = await three(cluster, forward_submissions=False)
    async with stub(b) as tasks:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tasks.SubmitTask(work(0, "x"))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    trailers = dict(cast(Any, info.value.trailing_metadata()) or ())
    assert trailers["praxis-coordinator"] == a.endpoints.grpc
    assert trailers["praxis-coordinator-id"] == a.agent_id


async def test_no_coordinator_task_service_not_serving(cluster: Cluster) -> None:
    a = await cluster.start("a", hold_timeout="200ms")
    async with grpc.aio.insecure_channel(a.endpoints.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="praxis.v1.TaskService")
        assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        async with stub(a) as tasks:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await tasks.SubmitTask(work(0, "x"))
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        cluster.group.elect(a.agent_id)
        await until(lambda: a.role == "coordinator")

        async def serving() -> bool:
            response = await health.Check(request)
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

        async with asyncio.timeout(5):
            while not await serving():
                await asyncio.sleep(0.02)


def held(node: Node) -> float:
    return float(node.metrics.task_calls_held._value.get())


@pytest.mark.parametrize("elected", ["other", "self"])
async def test_a_submission_during_an_election_is_held_until_a_coordinator_takes_over(
    cluster: Cluster, elected: str
) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    await cluster.converged()
    coordinator, worker = (a, b) if elected == "other" else (b, a)
    async with stub(b) as tasks:
        call = asyncio.ensure_future(tasks.SubmitTask(work(0, "held", wait=True)))
        await until(lambda: held(b) == 1)
        # b relays the held call, or (elected itself) places it.
        cluster.group.elect(coordinator.agent_id)
        response = await asyncio.wait_for(call, 10)
    assert response.task.state == COMPLETED
    assert not response.deduplicated
    assert response.task.owner_agent_id == worker.agent_id  # the coordinator does not execute
    assert held(b) == 0
    assert cluster.log.count("held") == 1


async def test_a_relay_the_old_coordinator_never_answered_goes_to_the_new_one(
    cluster: Cluster,
) -> None:
    a, b, c = await three(cluster)
    cluster.group.isolate(b.agent_id)  # b keeps believing a coordinates
    await a.aclose()  # a is gone: its port refuses connections
    cluster.group.elect(c.agent_id)
    await until(lambda: c.role == "coordinator")
    async with stub(b) as tasks:
        call = asyncio.ensure_future(tasks.SubmitTask(work(0, "resent", wait=True)))
        # The relay to a was refused; b waits for a coordinator other than a.
        await until(lambda: held(b) == 1)
        assert b.metrics.forwarded_submissions_total.labels("error")._value.get() == 1
        cluster.group.rejoin(b.agent_id)
        response = await asyncio.wait_for(call, 10)
    assert response.task.state == COMPLETED
    assert not response.deduplicated
    assert cluster.log.count("resent") == 1
    assert b.metrics.forwarded_submissions_total.labels("ok")._value.get() == 1


async def test_a_watch_at_a_standby_carries_on_at_the_next_coordinator(
    cluster: Cluster,
) -> None:
    a, b, c = await three(cluster)
    states: list[int] = []
    async with stub(b) as tasks:
        task = (await tasks.SubmitTask(work(1.0, "watched"))).task
        stream = tasks.WatchTask(pb.WatchTaskRequest(task_id=task.task_id))

        async def watch() -> None:
            async for message in stream:
                states.append(message.task.state)

        watching = asyncio.ensure_future(watch())
        await until(lambda: bool(states))
        await a.aclose()  # the relayed stream breaks
        cluster.group.elect(c.agent_id)
        await asyncio.wait_for(watching, 10)
    assert states[-1] == COMPLETED
    assert len(states) == len(set(states))  # nothing repeated across the switch
    assert cluster.log.count("watched") == 1


class WatchedHealth(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """A health service that counts the Health/Watch streams opened on it."""

    watches = 0

    async def Watch(self, request: Any, context: Any) -> None:
        self.watches += 1
        await super().Watch(request, context)


async def test_standbys_end_the_term_of_a_coordinator_whose_process_is_gone(
    cluster: Cluster,
) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    await cluster.converged()
    # The coordinator is a bare gRPC server (health only) standing in for a
    # node process that is about to die.
    server = grpc.aio.server()
    ghost_health = WatchedHealth()
    health_pb2_grpc.add_HealthServicer_to_server(ghost_health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ghost = cluster.group.member("ghost", f"127.0.0.1:{port}")
    await ghost.start()
    try:
        term = cluster.group.elect("ghost").term
        await until(lambda: a.leadership().leader_id == b.leadership().leader_id == "ghost")
        # Both standbys' probes watch it; alive, it is left alone.
        await until(lambda: ghost_health.watches == 2)
        assert cluster.group.suspicions == []
        await server.stop(None)  # the port now refuses connections
        await until(lambda: bool(cluster.group.suspicions))
        suspecting, leadership, evidence = cluster.group.suspicions[0]
        assert suspecting in {a.agent_id, b.agent_id}
        assert (leadership.leader_id, leadership.term) == ("ghost", term)
        assert "refuses connections" in evidence
        assert cluster.group.term > term  # the term ended without waiting for anything
        # A standby that is now the coordinator takes over at once.
        cluster.group.elect(a.agent_id)
        await until(lambda: a.role == "coordinator")
        suspicions = sum(n.metrics.consensus_suspicions_total._value.get() for n in (a, b))
        assert suspicions == 1  # the second standby found the term already ended
    finally:
        await ghost.aclose()


def committed_record(cluster: Cluster, key: str, *, owner: Node) -> Task:
    """A coordinator's committed record of a ``work`` task dispatched to ``owner``
    (written into the fake group's state, as if its coordinator died right after)."""
    now = datetime.now(UTC)
    record = Task(
        task_id=str(uuid.uuid4()),
        tool="work",
        arguments={"seconds": 0, "key": key},
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
        owner_agent_id=owner.agent_id,
        origin_agent_id="coordinator",
    )
    cluster.group._data[TASK_PREFIX + record.task_id] = encode_task(record)
    return record


async def test_a_task_dispatched_to_the_next_coordinator_itself_is_placed_at_once(
    cluster: Cluster,
) -> None:
    a, b, c = await three(cluster)
    # The committed record names b as the owner, but b never received the
    # task (the coordinator died sending it). When b takes over it holds no
    # copy, and being the coordinator it does not execute: the task must be
    # placed on a worker now, not after routing.reattach_wait (60 s here).
    task_id = committed_record(cluster, "unplaced", owner=b).task_id
    cluster.group.isolate(a.agent_id)
    cluster.group.elect(b.agent_id)
    await until(lambda: b.role == "coordinator")
    await until(lambda: b.engine.get(task_id).state == TaskState.COMPLETED)
    assert b.engine.get(task_id).owner_agent_id in {a.agent_id, c.agent_id}
    assert cluster.log.count("unplaced") == 1


async def test_a_worker_holding_a_stale_record_of_a_task_dispatched_to_it_runs_it(
    cluster: Cluster,
) -> None:
    a, b, c = await three(cluster)
    # b keeps an unfinished record of the task from an earlier term in which it
    # coordinated; the committed record says it was dispatched to b, which
    # never got it. The next coordinator's follower must not take b's record
    # for b's execution: b answers NOT_FOUND, the task is sent again, b runs it.
    record = committed_record(cluster, "stale-copy", owner=b)
    task_id = record.task_id
    await b.engine.record(record.reassign("", record.created_at))
    cluster.group.isolate(a.agent_id)
    cluster.group.elect(c.agent_id)
    await until(lambda: c.role == "coordinator")
    await until(lambda: c.engine.get(task_id).state == TaskState.COMPLETED)
    assert b.engine.get(task_id).owner_agent_id == b.agent_id
    assert cluster.log.count("stale-copy") == 1


async def test_failover_resumes_every_accepted_task_once(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    async with stub(a) as tasks:
        accepted = [
            (await tasks.SubmitTask(work(0.5, f"t{i}", idempotency_key=f"k{i}"))).task
            for i in range(10)
        ]
    # The coordinator is lost; b takes over from the committed records.
    cluster.group.isolate(a.agent_id)
    cluster.group.elect(b.agent_id)
    await until(lambda: b.role == "coordinator")
    await until(lambda: all(b.engine.get(t.task_id).terminal for t in accepted))
    for task in accepted:
        assert b.engine.get(task.task_id).state.name == "COMPLETED"
        assert cluster.log.count(str(task.arguments["key"])) == 1
    # A retry of an acknowledged submission is answered from the records.
    async with stub(c) as tasks:
        again = await tasks.SubmitTask(work(0.5, "t3", idempotency_key="k3"))
    assert again.deduplicated
    assert again.task.task_id == accepted[3].task_id


async def test_a_deposed_coordinator_cannot_dispatch(cluster: Cluster) -> None:
    a, b, _ = await three(cluster)
    cluster.group.isolate(a.agent_id)  # a still believes it leads
    cluster.group.elect(b.agent_id)
    assert a.role == "coordinator"
    async with stub(a) as tasks:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tasks.SubmitTask(work(0, "stale"))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert cluster.log.count("stale") == 0
    # Workers refuse dispatches fenced with an older term than they have seen.
    async with stub(b) as tasks:
        fresh = (await tasks.SubmitTask(work(0, "fresh", wait=True))).task
    worker = next(n for n in cluster.nodes.values() if n.agent_id == fresh.owner_agent_id)
    async with peer_stub(worker) as peer:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await peer.Dispatch(
                work_dispatch(
                    0,
                    "fenced",
                    origin_agent_id="coordinator",
                    fencing_token=cluster.group.term - 1,
                    task_id="6f1d8f0c-1b9e-4a57-9c43-0d8f1e2a3b4c",
                )
            )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "fencing_token" in (info.value.details() or "")
    assert cluster.log.count("fenced") == 0


async def test_finished_records_leave_the_consensus_state_after_the_retention(
    cluster: Cluster,
) -> None:
    a, b, _ = await three(cluster, record_retention="300ms")
    async with stub(b) as tasks:
        done = (await tasks.SubmitTask(work(0, "kept", wait=True))).task
        running = (await tasks.SubmitTask(work(5, "running"))).task
    state = cluster.group._data  # the fake's replicated state
    assert f"task/{done.task_id}" in state
    await until(lambda: f"task/{done.task_id}" not in state, timeout=5)
    assert f"task/{running.task_id}" in state  # unfinished: kept
    async with stub(a) as tasks:  # the coordinator's store still answers
        got = await tasks.GetTask(pb.GetTaskRequest(task_id=done.task_id))
    assert got.task.state == COMPLETED


class LosingAfterCommit:
    """A member of the fake group whose next commit of a task record, once
    applied, hands the leadership to the agent the record names as the owner
    (the worker it was about to be dispatched to) before the commit returns:
    a coordinator paused with a commit in flight wakes deposed."""

    def __init__(self, group: MemoryConsensusGroup, agent_id: str, grpc_address: str) -> None:
        self._group = group
        self._member = group.member(agent_id, grpc_address)
        self.armed = False
        self.handed_to = ""

    @property
    def backend(self) -> str:
        return self._member.backend

    async def start(self) -> None:
        await self._member.start()

    async def aclose(self) -> None:
        await self._member.aclose()

    def leadership(self) -> Leadership:
        return self._member.leadership()

    def watch(self) -> AsyncIterator[Leadership]:
        return self._member.watch()

    async def commit(self, key: str, value: bytes | None, *, term: int) -> None:
        await self._member.commit(key, value, term=term)
        if self.armed and key.startswith(TASK_PREFIX) and value is not None:
            self.armed = False
            self.handed_to = decode_task(value).owner_agent_id
            self._group.elect(self.handed_to)

    async def snapshot(self) -> Mapping[str, bytes]:
        return await self._member.snapshot()

    async def suspect(self, leadership: Leadership, evidence: str) -> bool:
        return await self._member.suspect(leadership, evidence)


async def test_a_coordinator_that_lost_does_not_dispatch_a_record_committed_before(
    cluster: Cluster,
) -> None:
    members: list[LosingAfterCommit] = []

    def losing(agent_id: str, grpc_address: str) -> Consensus:
        members.append(LosingAfterCommit(cluster.group, agent_id, grpc_address))
        return members[-1]

    a = await cluster.start("a", consensus=losing)
    await cluster.start("b")
    await cluster.start("c")
    await cluster.converged()
    cluster.group.elect(a.agent_id)
    await until(lambda: a.role == "coordinator")
    members[0].armed = True
    async with stub(a) as tasks:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tasks.SubmitTask(work(0, "late", idempotency_key="late"))
    # The record was committed in a's term, which ended before the commit
    # returned: a sent it nowhere and says so; the client's retry finds it at
    # the node that took over, which places it (once).
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "no longer coordinates" in (info.value.details() or "")
    dispatched = a.metrics.registry.get_sample_value("praxis_delegation_duration_seconds_count")
    assert dispatched == 0
    successor = next(n for n in cluster.nodes.values() if n.agent_id == members[0].handed_to)
    await until(lambda: successor.role == "coordinator")
    async with stub(successor) as tasks:
        again = await tasks.SubmitTask(work(0, "late", idempotency_key="late", wait=True))
    assert again.deduplicated
    assert again.task.state == COMPLETED
    assert cluster.log.count("late") == 1
    assert a.role == "standby"


async def test_a_dispatch_that_returns_after_its_coordinator_stepped_down_is_not_followed(
    cluster: Cluster,
) -> None:
    a, b, c = await three(cluster)
    async with stub(a) as tasks:
        # The client's deadline ends the dispatch (a waits for the result)
        # after a stepped down; a dispatch that ends unanswered is followed,
        # but only by a node that still coordinates.
        call = tasks.SubmitTask(work(10, "late-return", wait=True), timeout=2)
        await until(lambda: cluster.log.count("late-return") == 1)
        runner = b if cluster.log.agents("late-return") == ["b"] else c
        cluster.group.elect((c if runner is b else b).agent_id)
        await until(lambda: a.role == "standby")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    sample = a.metrics.registry.get_sample_value
    await until(lambda: sample("praxis_delegation_duration_seconds_count") == 1)
    # Following it would mean re-dispatching it (to a itself, now a worker)
    # if its owner went away: the next coordinator follows it instead.
    assert sample("praxis_delegated_tasks_following") == 0
    assert cluster.log.count("late-return") == 1


async def test_a_forwarded_submission_keeps_its_submitter(cluster: Cluster) -> None:
    tokens = cluster.root / "tokens.yaml"
    alice = add_token(tokens, "alice", Role.CLIENT)
    auth = {"auth": {"tokens_file": tokens}}
    a, b, c = [await cluster.start(name, api=auth) for name in "abc"]
    await cluster.converged()
    cluster.group.elect(a.agent_id)
    await until(lambda: a.role == "coordinator" and b.role == c.role == "standby")
    async with ClientCredentials(token=alice).aio_channel(b.endpoints.grpc) as channel:
        task = (
            await task_service_pb2_grpc.TaskServiceStub(channel).SubmitTask(work(0, "s", wait=True))
        ).task
    assert (task.state, task.submitter) == (COMPLETED, "alice")
    assert b.metrics.forwarded_submissions_total.labels("ok")._value.get() == 1
    record = decode_task(cluster.group._data[TASK_PREFIX + task.task_id])
    assert record.submitter == "alice"
    owner = next(node for node in (a, b, c) if node.agent_id == task.owner_agent_id)
    assert owner.engine.get(task.task_id).submitter == "alice"
