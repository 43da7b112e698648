"""The active-passive role switch under failures: it survives a step-down that
fails, a node whose switch ends anyway stops serving, stepping down ends what
the term started, and a standby abandons relays to a deposed coordinator.

In-process nodes over real gRPC with the in-memory consensus fake (the
``cluster`` fixture of test_active_passive)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2, peer_service_pb2_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.api.errors import abort
from praxis_grpc.cli import serve_node
from praxis_grpc.consensus.base import ConsensusError, Leadership
from praxis_grpc.errors import Unavailable
from praxis_grpc.node import Node
from praxis_grpc.routing.router import Candidate
from praxis_grpc.tasks.model import Submission, Task, TaskState
from tests.integration.helpers import stub, until, work
from tests.integration.test_active_passive import Cluster, cluster, three

__all__ = ["cluster"]  # the fixture, shared with test_active_passive

COMPLETED = types_pb2.TASK_STATE_COMPLETED


def step_down_errors(node: Node) -> float:
    return float(node.metrics.role_switch_errors_total.labels("step_down")._value.get())


async def test_a_follower_that_failed_does_not_end_the_role_switch(cluster: Cluster) -> None:
    a, b, _ = await three(cluster)
    # The woken coordinator's case: a follower's last commit was refused
    # ("this node is no longer the coordinator") and it ended with that
    # error just as the step-down stops every follower (its done-callback,
    # which would drop it, has not run yet).
    delegations: Any = a.parts.delegations

    async def refused() -> None:
        raise Unavailable("this node is no longer the coordinator")

    follower = asyncio.get_running_loop().create_task(refused())
    await asyncio.wait([follower])
    delegations._followers[str(uuid.uuid4())] = follower
    cluster.group.elect(b.agent_id)
    await until(lambda: a.role == "standby" and b.role == "coordinator")
    # a still follows the leadership: it takes over when it wins again.
    cluster.group.elect(a.agent_id)
    await until(lambda: a.role == "coordinator" and b.role == "standby")
    assert a.failure == ""
    async with stub(b) as tasks:
        done = (await tasks.SubmitTask(work(0, "after", wait=True))).task
    assert done.state == COMPLETED
    assert cluster.log.count("after") == 1


async def test_any_failure_while_stepping_down_is_counted_and_survived(
    cluster: Cluster,
) -> None:
    a, b, _ = await three(cluster)
    delegations: Any = a.parts.delegations

    async def broken() -> None:
        raise RuntimeError("stop_following broke")

    delegations.stop_following = broken
    cluster.group.elect(b.agent_id)
    await until(lambda: a.role == "standby")
    assert step_down_errors(a) == 1
    del delegations.stop_following  # mended
    cluster.group.elect(a.agent_id)
    await until(lambda: a.role == "coordinator")
    assert a.failure == ""


async def task_service_status(node: Node) -> Any:
    async with grpc.aio.insecure_channel(node.endpoints.grpc) as channel:
        request = health_pb2.HealthCheckRequest(service="praxis.v1.TaskService")
        return (await health_pb2_grpc.HealthStub(channel).Check(request)).status


async def test_a_node_whose_role_switch_ends_stops_serving(cluster: Cluster) -> None:
    a, _, _ = await three(cluster)
    consensus: Any = a._consensus
    assert await task_service_status(a) == health_pb2.HealthCheckResponse.SERVING
    # The backend's feed ends under the node (its member was closed): the
    # node can no longer follow the leadership.
    await consensus.aclose()
    reason = await asyncio.wait_for(a.wait_failed(), 10)
    assert "leadership" in reason
    assert await task_service_status(a) == health_pb2.HealthCheckResponse.NOT_SERVING
    async with stub(a) as tasks:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tasks.SubmitTask(work(0, "zombie"))
    assert info.value.code() in (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAVAILABLE,
    )
    assert cluster.log.count("zombie") == 0


async def test_praxis_node_exits_1_when_the_role_switch_ends(cluster: Cluster) -> None:
    a, _, _ = await three(cluster)
    consensus: Any = a._consensus
    serving = asyncio.ensure_future(serve_node(a, asyncio.Event()))
    await consensus.aclose()
    assert await asyncio.wait_for(serving, 30) == 1


async def test_a_node_that_stepped_down_starts_no_follower_and_sends_no_cancel(
    cluster: Cluster,
) -> None:
    a, b, c = await three(cluster)
    delegations: Any = a.parts.delegations
    now = datetime.now(UTC)
    record = Task(
        task_id=str(uuid.uuid4()),
        tool="work",
        arguments={"seconds": 0, "key": "late"},
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
        owner_agent_id=c.agent_id,
        origin_agent_id="coordinator",
    )
    # As coordinator, a re-dispatched a task away from a lost agent and keeps
    # trying to cancel the abandoned copy there.
    delegations._tell_when_back(record, "lost-agent", c.agent_id)
    assert delegations._background
    cluster.group.elect(b.agent_id)
    await until(lambda: a.role == "standby")
    assert not delegations._background  # cancelled with the term
    # A dispatch a made as coordinator ends after it stepped down (say, a
    # call to a worker that timed out): it must not start following (and so
    # re-dispatching) the task; the coordinator does that.
    delegations.follow(record)
    assert a.metrics.delegated_tasks_following._value.get() == 0
    assert not delegations._followers


class SilentPeer(peer_service_pb2_grpc.PeerServiceServicer):
    """A node cut off by a partition: it takes calls and never answers."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.ended = 0

    async def _silent(self) -> Any:
        self.received.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ended += 1

    async def RelaySubmit(self, request: Any, context: Any) -> Any:
        return await self._silent()

    async def Dispatch(self, request: Any, context: Any) -> Any:
        return await self._silent()


async def test_a_relay_to_a_deposed_coordinator_is_sent_to_the_next_one(
    cluster: Cluster,
) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    await cluster.converged()
    silent = SilentPeer()  # type: ignore[abstract]  # only RelaySubmit, Dispatch are called
    async with contextlib.AsyncExitStack() as stack:
        address = await stack.enter_async_context(peer_server(silent))
        ghost = cluster.group.member("ghost", address)
        await ghost.start()
        stack.push_async_callback(ghost.aclose)
        cluster.group.elect("ghost")
        await until(lambda: a.leadership().leader_id == b.leadership().leader_id == "ghost")
        async with stub(b) as tasks:
            # No client deadline: only leaving the silent coordinator ends the relay.
            call = asyncio.ensure_future(tasks.SubmitTask(work(0, "relayed", wait=True)))
            await asyncio.wait_for(silent.received.wait(), 10)
            assert not call.done()
            cluster.group.elect(a.agent_id)  # the partition's majority side moves on
            response = await asyncio.wait_for(call, 10)
        assert response.task.state == COMPLETED
        assert not response.deduplicated
        assert response.task.owner_agent_id == b.agent_id  # a coordinates, b works
        assert cluster.log.count("relayed") == 1
        assert b.metrics.relays_abandoned_total._value.get() == 1
        # The silent coordinator never answered; the relay was given up, not answered.
        await until(lambda: silent.ended == 1)


class JustElected(peer_service_pb2_grpc.PeerServiceServicer):
    """A coordinator elected a moment ago that does not know it yet: it first
    answers, as a standby would, that the coordinator is elsewhere."""

    def __init__(self, previous: str) -> None:
        self.previous = previous
        self.calls = 0

    async def RelaySubmit(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            await abort(
                context,
                Unavailable(
                    "this node is a standby and does not relay relayed calls",
                    coordinator=self.previous,
                    coordinator_id="previous",
                ),
            )
        now = datetime.now(UTC)
        task = types_pb2.Task(
            task_id=request.task_id, tool=request.spec.tool, state=COMPLETED, attempt=1
        )
        task.created_at.FromDatetime(now)
        task.updated_at.FromDatetime(now)
        return peer_service_pb2.RelaySubmitResponse(task=task)


async def test_a_relay_to_a_coordinator_that_does_not_know_it_won_is_sent_again(
    cluster: Cluster,
) -> None:
    # Seen after kill -9 of an etcd coordinator: the relaying standby saw the
    # new leader before the new leader did, and was told "coordinator is at
    # <the dead one>"; it waited for a third leader until its hold ran out.
    a = await cluster.start("a")
    await cluster.converged()
    fresh = JustElected(previous="127.0.0.1:1")  # type: ignore[abstract]  # RelaySubmit only
    async with contextlib.AsyncExitStack() as stack:
        address = await stack.enter_async_context(peer_server(fresh))
        leader = cluster.group.member("leader", address)
        await leader.start()
        stack.push_async_callback(leader.aclose)
        cluster.group.elect("leader")
        await until(lambda: a.leadership().leader_id == "leader")
        async with stub(a) as tasks:
            response = await asyncio.wait_for(tasks.SubmitTask(work(0, "relayed", wait=True)), 10)
        assert response.task.state == COMPLETED
        assert fresh.calls == 2


async def test_a_dispatch_that_ends_after_its_coordinator_stepped_down_is_left_to_the_next(
    cluster: Cluster,
) -> None:
    a, b, _ = await three(cluster)
    delegations: Any = a.parts.delegations
    silent = SilentPeer()  # type: ignore[abstract]  # only RelaySubmit, Dispatch are called
    async with peer_server(silent) as address:
        card = a.directory.get(b.agent_id)
        assert card is not None
        worker = Candidate("silent", "silent", False, address, 0, 1, 1, card.tools[0])
        now = datetime.now(UTC)
        record = await delegations.records.record(
            Task(
                task_id=str(uuid.uuid4()),
                tool="work",
                arguments={"seconds": 0, "key": "in-flight"},
                state=TaskState.SUBMITTED,
                created_at=now,
                updated_at=now,
                owner_agent_id="silent",
                origin_agent_id="coordinator",
            )
        )
        ha = a._ha
        assert ha is not None
        dispatch = asyncio.ensure_future(
            delegations.dispatch(record, worker, wait=True, call_timeout=None, term=ha.term)
        )
        await asyncio.wait_for(silent.received.wait(), 10)
        cluster.group.elect(b.agent_id)
        await until(lambda: a.role == "standby")
    # The server stopped with the block: the call to the worker broke.
    with pytest.raises(Unavailable, match="no longer the coordinator"):
        await asyncio.wait_for(dispatch, 10)
    assert not delegations._followers


@contextlib.asynccontextmanager
async def peer_server(servicer: Any) -> AsyncIterator[str]:
    """A loopback gRPC server of a fake PeerService; stopped on exit."""
    server = grpc.aio.server()
    peer_service_pb2_grpc.add_PeerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {str(k): str(v) for k, v in cast(Any, error.trailing_metadata()) or ()}


async def test_a_commit_consensus_does_not_confirm_is_unavailable_naming_the_coordinator(
    cluster: Cluster,
) -> None:
    a, _, _ = await three(cluster)
    consensus: Any = a._consensus

    async def unconfirmed(key: str, value: bytes | None, *, term: int) -> None:
        raise ConsensusError(f"commit of {key!r} not acknowledged within 2s; it may be applied")

    consensus.commit = unconfirmed
    async with stub(a) as tasks:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tasks.SubmitTask(work(0, "unconfirmed"))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "could not commit" in (info.value.details() or "")
    assert trailers(info.value)["praxis-coordinator"] == a.endpoints.grpc
    assert cluster.log.count("unconfirmed") == 0


async def test_a_task_sent_here_while_this_coordinator_placed_it_is_unavailable(
    cluster: Cluster,
) -> None:
    a, _, _ = await three(cluster)
    consensus: Any = a._consensus
    commit = consensus.commit
    task_id = str(uuid.uuid4())

    async def racing(key: str, value: bytes | None, *, term: int) -> None:
        # While the record commits, an earlier coordinator's dispatch of the
        # same task reaches this node, which runs it.
        await a.engine.submit(
            Submission("work", {"seconds": 0, "key": "raced"}),
            task_id=task_id,
            origin_agent_id="coordinator",
        )
        await commit(key, value, term=term)

    consensus.commit = racing
    async with stub(a) as tasks:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tasks.SubmitTask(work(0, "raced", task_id=task_id))
        consensus.commit = commit
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "runs on this node" in (info.value.details() or "")
        # The retry the code asks for finds the task.
        again = await tasks.SubmitTask(work(0, "raced", task_id=task_id, wait=True))
    assert again.deduplicated
    assert again.task.task_id == task_id
    assert again.task.state == COMPLETED
    assert cluster.log.count("raced") == 1


async def test_a_coordinator_whose_term_is_briefly_reported_lost_still_records_the_outcome(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in the nemesis long form (etcd, a 1 s pause of the coordinator):
    # after the pause the backend reported the term lost for a moment and then
    # held it; the coordinator's followers had given up meanwhile, so the
    # cluster's records of 8 finished tasks stayed WORKING for good.
    caplog.set_level(logging.INFO)
    a, _, _ = await three(cluster)
    consensus: Any = a._consensus
    engine: Any = a._engine
    async with stub(a) as tasks:
        submitted = (await tasks.SubmitTask(work(0.5, "blip"))).task
    await until(lambda: engine.get(submitted.task_id).state is TaskState.WORKING)
    held = consensus.leadership()
    monkeypatch.setattr(consensus, "leadership", Leadership)  # the blip
    # The owner finishes during the blip; committing its report is refused.
    await until(
        lambda: any(
            "was not committed" in r.getMessage() or "following task" in r.getMessage()
            for r in caplog.records
        )
    )
    monkeypatch.setattr(consensus, "leadership", lambda: held)  # the term held
    await until(lambda: engine.get(submitted.task_id).state is TaskState.COMPLETED)
    assert cluster.log.count("blip") == 1
