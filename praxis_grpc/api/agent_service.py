"""``praxis.v1.AgentService``: the node describes and drains itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import grpc

from praxis_grpc._gen.praxis.v1 import agent_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import agent_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.api.errors import translate_errors
from praxis_grpc.cards import AgentCard
from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Leadership
from praxis_grpc.discovery.base import PeerStatus
from praxis_grpc.discovery.members import MemberStatus
from praxis_grpc.wire import (
    duration,
    endpoints_to_proto,
    load_to_proto,
    reachability_to_proto,
    role_to_proto,
    timestamp,
)

Context = grpc.aio.ServicerContext[Any, Any]

_DIRECTIONS = {
    "inbound": pb.CONNECTION_DIRECTION_INBOUND,
    "outbound": pb.CONNECTION_DIRECTION_OUTBOUND,
}
_MEMBER_STATES = {
    "ALIVE": pb.MEMBER_STATE_ALIVE,
    "SUSPECT": pb.MEMBER_STATE_SUSPECT,
    "DEAD": pb.MEMBER_STATE_DEAD,
    "LEFT": pb.MEMBER_STATE_LEFT,
}
_HA_MODES = {
    "active-active": types_pb2.HA_MODE_ACTIVE_ACTIVE,
    "active-passive": types_pb2.HA_MODE_ACTIVE_PASSIVE,
}
_BACKENDS = {
    "none": types_pb2.CONSENSUS_BACKEND_NONE,
    "raft": types_pb2.CONSENSUS_BACKEND_RAFT,
    "etcd": types_pb2.CONSENSUS_BACKEND_ETCD,
}


class DescribedNode(Protocol):
    """What AgentService needs of the node it describes (``praxis_grpc.node.Node``)."""

    @property
    def config(self) -> Config:
        """The node's validated configuration."""
        ...

    @property
    def uptime(self) -> float:
        """Seconds since the node started."""
        ...

    @property
    def started_at(self) -> datetime:
        """When the node started."""
        ...

    def refresh_card(self) -> AgentCard:
        """Publish the local card with current load and state; return it."""
        ...

    def leadership(self) -> Leadership:
        """The coordinator as the node sees it."""
        ...

    async def peers(self) -> list[PeerStatus]:
        """Connected mesh peers."""
        ...

    async def members(self) -> list[MemberStatus]:
        """Mesh members and their SWIM states (empty without a failure detector)."""
        ...

    def set_draining(self, draining: bool) -> None:
        """Enter or leave drain mode."""
        ...


class AgentService(pb_grpc.AgentServiceServicer):
    """Serves the node's own state."""

    def __init__(self, node: DescribedNode) -> None:
        self._node = node

    @translate_errors
    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        return pb.GetAgentResponse(agent=self._agent())

    @translate_errors
    async def ListPeers(
        self, request: pb.ListPeersRequest, context: Context
    ) -> pb.ListPeersResponse:
        peers = sorted(await self._node.peers(), key=lambda p: p.peer_id)
        return pb.ListPeersResponse(
            peers=[
                pb.Peer(
                    agent_id=peer.peer_id,
                    addresses=peer.addresses,
                    direction=_DIRECTIONS.get(peer.direction, pb.CONNECTION_DIRECTION_UNSPECIFIED),
                    ping_rtt=duration(peer.ping_rtt),
                    connected_at=timestamp(datetime.fromtimestamp(peer.connected_at, UTC)),
                )
                for peer in peers
            ],
            members=[
                pb.Member(
                    agent_id=m.member,
                    state=_MEMBER_STATES.get(m.state.name, pb.MEMBER_STATE_UNSPECIFIED),
                    incarnation=m.incarnation,
                    address=m.address,
                    state_age=duration(m.age),
                    learnt=m.learnt,
                )
                for m in sorted(await self._node.members(), key=lambda m: m.member)
            ],
        )

    @translate_errors
    async def Drain(self, request: pb.DrainRequest, context: Context) -> pb.DrainResponse:
        self._node.set_draining(not request.resume)
        return pb.DrainResponse(agent=self._agent())

    def _agent(self) -> pb.Agent:
        node = self._node
        card = node.refresh_card()
        config = node.config
        leadership = node.leadership()
        return pb.Agent(
            agent_id=card.agent_id,
            name=card.name,
            praxis_version=card.praxis_version,
            role=role_to_proto(card.role),
            ha_mode=_HA_MODES.get(config.ha.mode, types_pb2.HA_MODE_UNSPECIFIED),
            consensus_backend=_BACKENDS.get(
                config.ha.consensus.backend, types_pb2.CONSENSUS_BACKEND_UNSPECIFIED
            ),
            leader_agent_id=leadership.leader_id,
            leader_address=leadership.leader_address,
            term=leadership.term,
            load=load_to_proto(card.load),
            uptime=duration(node.uptime),
            started_at=timestamp(node.started_at),
            draining=card.draining,
            endpoints=endpoints_to_proto(card),
            incarnation=card.incarnation,
            tags=card.tags,
            reachability=reachability_to_proto(card.reachability),
        )
