"""A node's reachability (dial-back verdict) where the issue shows it: its
signed card, ``AgentService.GetAgent`` and ``praxis status``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from rich.console import Console

from praxis_grpc._gen.praxis.v1 import agent_service_pb2, types_pb2
from praxis_grpc.api.agent_service import AgentService, RemoteAgents
from praxis_grpc.card_codec import decode_signed_card, encode_signed_card
from praxis_grpc.cards import AgentCard, CardLoad, Endpoint
from praxis_grpc.cli.status_view import MeshView, NodeView, render, view_document
from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Leadership
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import PeerStatus
from praxis_grpc.discovery.members import MemberStatus
from praxis_grpc.identity import Identity, load_or_create_identity
from praxis_grpc.reach import relay_offers
from praxis_grpc.testing.memory_peers import MemoryPeerNetwork
from praxis_grpc.testing.nodes import make_config
from praxis_grpc.wire import card_to_proto


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return load_or_create_identity(tmp_path / "a.key")


def card_of(agent_id: str, **changes: Any) -> AgentCard:
    card = AgentCard(
        agent_id=agent_id,
        name="worker",
        praxis_version="0.1.0",
        role="peer",
        endpoints=(Endpoint("grpc", "10.0.0.2:1"),),
        tools=(),
        tags=(),
        load=CardLoad(0, 0, 2, 10),
        draining=False,
        incarnation=1,
        version=3,
        updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    return replace(card, **changes)


@pytest.mark.parametrize(
    ("state", "relay", "wire"),
    [
        ("unknown", False, types_pb2.REACHABILITY_UNSPECIFIED),
        ("private", False, types_pb2.REACHABILITY_PRIVATE),
        ("public", True, types_pb2.REACHABILITY_PUBLIC),
    ],
)
def test_card_carries_reachability_and_relay_service_signed(
    identity: Identity, state: str, relay: bool, wire: int
) -> None:
    card = card_of(identity.agent_id, reachability=state, relay_service=relay)
    assert card_to_proto(card).reachability == wire
    assert card_to_proto(card).relay_service == relay
    assert decode_signed_card(encode_signed_card(card, identity)) == card
    # A different verdict is a different card: it is re-signed and re-gossiped.
    other = "private" if state != "private" else "public"
    assert not card.same_identity(replace(card, reachability=other))


@dataclass
class _Node:
    card: AgentCard
    config: Config
    uptime: float = 1.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def agent_id(self) -> str:
        return self.card.agent_id

    def refresh_card(self) -> AgentCard:
        return self.card

    def leadership(self) -> Leadership:
        return Leadership()

    async def peers(self) -> list[PeerStatus]:
        return []

    async def members(self) -> list[MemberStatus]:
        return []

    def set_draining(self, draining: bool) -> None:
        raise AssertionError("not called")


async def test_get_agent_reports_reachability(tmp_path: Path) -> None:
    node = _Node(card_of("A" * 52, reachability="private"), make_config(tmp_path))
    remote = RemoteAgents(
        CardDirectory(node.agent_id, ttl=60.0), MemoryPeerNetwork().client("a"), call_timeout=1.0
    )
    service = AgentService(node, remote)
    response = await service.GetAgent(agent_service_pb2.GetAgentRequest(), cast(Any, None))
    assert response.agent.reachability == types_pb2.REACHABILITY_PRIVATE
    node.card = replace(node.card, reachability="public")
    response = await service.GetAgent(agent_service_pb2.GetAgentRequest(), cast(Any, None))
    assert response.agent.reachability == types_pb2.REACHABILITY_PUBLIC


def test_status_shows_each_node_and_members_reachability() -> None:
    agent = agent_service_pb2.Agent(
        agent_id="A" * 52, name="natted", reachability=types_pb2.REACHABILITY_PRIVATE
    )
    unchecked = agent_service_pb2.Agent(agent_id="C" * 52, name="plain")
    relay = types_pb2.AgentCard(
        agent_id="B" * 52,
        name="relay",
        reachability=types_pb2.REACHABILITY_PUBLIC,
        relay_service=True,
    )
    view = MeshView(
        [NodeView("h:1", agent, "SERVING"), NodeView("h:3", unchecked, "SERVING")],
        cards={relay.agent_id: relay},
    )
    console = Console(record=True, width=200, color_system=None)
    console.print(render(view))
    lines = console.export_text().splitlines()
    assert "REACH" in next(line for line in lines if "NODE" in line)
    assert "private" in next(line for line in lines if "natted" in line)
    assert "unknown" in next(line for line in lines if "plain" in line)
    assert "public relay" in next(line for line in lines if line.strip().startswith("relay"))
    document = view_document(view)
    assert document["nodes"][0]["agent"]["reachability"] == "REACHABILITY_PRIVATE"
    assert document["members"][0]["relay_service"] is True


def test_relays_offered_are_other_non_private_members_with_the_service() -> None:
    relay_addr = "/ip4/10.0.0.1/tcp/4001/p2p/" + "B" * 52
    circuit = relay_addr + "/p2p-circuit/p2p/" + "C" * 52
    cards = [
        card_of(
            "B" * 52,
            relay_service=True,
            reachability="public",
            endpoints=(Endpoint("grpc", "10.0.0.1:1"), Endpoint("libp2p", relay_addr)),
        ),
        card_of(  # unknown reachability: still offered
            "A" * 52,
            relay_service=True,
            endpoints=(Endpoint("libp2p", "/ip4/10.0.0.2/tcp/1/p2p/" + "A" * 52),),
        ),
        card_of(  # behind NAT itself: nobody could reach it to reserve
            "C" * 52,
            relay_service=True,
            reachability="private",
            endpoints=(Endpoint("libp2p", circuit),),
        ),
        card_of("D" * 52, endpoints=(Endpoint("libp2p", "/ip4/10.0.0.4/tcp/1/p2p/" + "D" * 52),)),
        card_of(  # this node
            "E" * 52,
            relay_service=True,
            endpoints=(Endpoint("libp2p", "/ip4/10.0.0.5/tcp/1/p2p/" + "E" * 52),),
        ),
    ]
    assert relay_offers(cards, own_id="E" * 52) == [
        "/ip4/10.0.0.2/tcp/1/p2p/" + "A" * 52,
        relay_addr,
    ]
