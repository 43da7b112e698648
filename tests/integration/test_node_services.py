"""AgentService, CardService, health, reflection-free introspection and /metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from praxis_grpc._gen.praxis.v1 import agent_service_pb2 as agent_pb
from praxis_grpc._gen.praxis.v1 import card_service_pb2 as card_pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2 as task_pb
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.node import SERVICE_NAMES, Node, StartupError
from praxis_grpc.testing import make_config, running_node

from .conftest import Stubs, stubs_of
from .helpers import until


async def health_of(stubs: Stubs, service: str) -> int:
    response = await stubs.health.Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


async def test_every_service_reports_serving(stubs: Stubs) -> None:
    for service in ("", *SERVICE_NAMES):
        assert await health_of(stubs, service) == health_pb2.HealthCheckResponse.SERVING


async def test_get_agent_identity_is_the_libp2p_peer_id(stubs: Stubs, node: Node) -> None:
    agent = (await stubs.agent.GetAgent(agent_pb.GetAgentRequest())).agent
    identity = load_or_create_identity(node.config.key_file)
    assert agent.agent_id == identity.agent_id
    assert agent.agent_id.startswith("12D3KooW")
    assert agent.role == types_pb2.AGENT_ROLE_PEER
    assert agent.ha_mode == types_pb2.HA_MODE_ACTIVE_ACTIVE
    assert agent.consensus_backend == types_pb2.CONSENSUS_BACKEND_NONE
    assert agent.load.capacity == 2
    assert agent.endpoints[0].address == node.endpoints.grpc
    assert agent.incarnation == 1
    assert (node.config.key_file.stat().st_mode & 0o777) == 0o600


async def test_identity_survives_restart_and_incarnation_grows(tmp_path: Path) -> None:
    config = make_config(tmp_path / "n", metrics={"enabled": False})
    async with running_node(config) as first:
        first_id, first_incarnation = first.agent_id, first.incarnation
    async with running_node(config) as second:
        assert second.agent_id == first_id
        assert second.incarnation == first_incarnation + 1
        assert second.directory.local.incarnation == second.incarnation


async def test_own_card_lists_tools_with_schemas(stubs: Stubs, node: Node) -> None:
    card = (await stubs.cards.GetCard(card_pb.GetCardRequest())).card
    assert card.agent_id == node.agent_id
    tools = {t.name: t for t in card.tools}
    assert {"calculator", "echo", "sleep"} <= set(tools)
    assert "expression" in tools["calculator"].input_schema.fields["properties"].struct_value
    assert card.endpoints[0].transport == types_pb2.TRANSPORT_GRPC
    listed = await stubs.cards.ListCards(card_pb.ListCardsRequest(tool="calculator"))
    assert [c.agent_id for c in listed.cards] == [node.agent_id]
    assert not (await stubs.cards.ListCards(card_pb.ListCardsRequest(tool="nope"))).cards
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.cards.GetCard(card_pb.GetCardRequest(agent_id="12D3KooWunknown"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_card_load_is_live(stubs: Stubs) -> None:
    await stubs.tasks.SubmitTask(task_pb.SubmitTaskRequest(tool="sleep", arguments={"seconds": 30}))
    card = (await stubs.cards.GetCard(card_pb.GetCardRequest())).card
    assert card.load.in_flight + card.load.queued == 1


async def test_drain_refuses_tasks_and_reports_not_serving(stubs: Stubs) -> None:
    health_watch = stubs.health.Watch(
        health_pb2.HealthCheckRequest(service="praxis.v1.TaskService")
    )
    health_events = aiter(health_watch)
    assert (await anext(health_events)).status == health_pb2.HealthCheckResponse.SERVING
    watch = stubs.cards.WatchCards(card_pb.WatchCardsRequest())
    events = aiter(watch)
    first = await anext(events)
    assert first.type == card_pb.CARD_EVENT_TYPE_ADDED
    assert (await anext(events)).type == card_pb.CARD_EVENT_TYPE_SYNCED

    drained = await stubs.agent.Drain(agent_pb.DrainRequest())
    assert drained.agent.draining
    update = await asyncio.wait_for(anext(events), 5)
    assert update.type == card_pb.CARD_EVENT_TYPE_UPDATED
    assert update.card.draining
    assert update.card.version > first.card.version
    for service in ("", *SERVICE_NAMES):
        assert await health_of(stubs, service) == health_pb2.HealthCheckResponse.NOT_SERVING
    not_serving = await asyncio.wait_for(anext(health_events), 5)  # Health/Watch streams it
    assert not_serving.status == health_pb2.HealthCheckResponse.NOT_SERVING
    health_watch.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.tasks.SubmitTask(
            task_pb.SubmitTaskRequest(tool="calculator", arguments={"expression": "1"})
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "draining" in (info.value.details() or "")

    resumed = await stubs.agent.Drain(agent_pb.DrainRequest(resume=True))
    assert not resumed.agent.draining
    assert await health_of(stubs, "") == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def test_health_changes_leave_no_background_tasks_behind(node: Node) -> None:
    # Each drain toggle sets the health in a background task; the node's
    # supervisor drops each one when it ends (a list kept them all).
    running = len(node._background)
    for _ in range(50):
        node.set_draining(True)
        node.set_draining(False)
    await until(lambda: len(node._background) == running)
    assert await health_of_node(node) == health_pb2.HealthCheckResponse.SERVING


async def health_of_node(node: Node) -> int:
    async with stubs_of(node) as stubs:
        return await health_of(stubs, "")


async def test_list_peers_is_empty_without_p2p(stubs: Stubs) -> None:
    assert not (await stubs.agent.ListPeers(agent_pb.ListPeersRequest())).peers


async def test_metrics_endpoint_exposes_every_family(stubs: Stubs, node: Node) -> None:
    await stubs.tasks.SubmitTask(
        task_pb.SubmitTaskRequest(tool="calculator", arguments={"expression": "6*7"}, wait=True)
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.tasks.GetTask(task_pb.GetTaskRequest(task_id="missing"))
    url = f"http://{node.endpoints.metrics}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    for line in (
        'praxis_tasks_total{state="COMPLETED",tool="calculator"} 1.0',
        'praxis_tasks_finished_total{outcome="completed",tool="calculator"} 1.0',
        'praxis_build_info{version="',
        'praxis_task_duration_seconds_count{tool="calculator"} 1.0',
        "praxis_task_queue_depth 0.0",
        "praxis_task_queue_limit 4.0",
        "praxis_tasks_in_flight 0.0",
        'praxis_grpc_server_requests_total{code="OK",method="SubmitTask",'
        'service="praxis.v1.TaskService"} 1.0',
        'praxis_grpc_server_requests_total{code="NOT_FOUND",method="GetTask",'
        'service="praxis.v1.TaskService"} 1.0',
        "praxis_grpc_server_request_duration_seconds_bucket",
        'praxis_node_info{agent="node1",backend="none",ha_mode="active-active",version=',
        'praxis_route_decisions_total{target="node1",tool="calculator"} 1.0',
        "praxis_delegation_duration_seconds_bucket",
        "praxis_redispatches_total 0.0",
        "praxis_delegated_tasks_following 0.0",
        "praxis_consensus_is_leader 0.0",
        "praxis_consensus_term 0.0",
        "praxis_consensus_leader_changes_total 0.0",
        "praxis_consensus_commit_duration_seconds_bucket",
    ):
        assert line in body, line


async def test_port_in_use_is_a_clear_startup_error(tmp_path: Path, node: Node) -> None:
    port = int(node.endpoints.grpc.rsplit(":", 1)[1])
    config = make_config(tmp_path / "second", api={"port": port}, metrics={"enabled": False})
    with pytest.raises(StartupError, match=r"api\.port: cannot listen"):
        async with running_node(config):
            pass
