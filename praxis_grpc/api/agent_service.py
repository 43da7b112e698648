"""``praxis.v1.AgentService``: the node describes and drains itself, and
describes any other member by asking it over the peer protocol (so a client
reaches an agent behind NAT through any member)."""

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
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import PeerStatus
from praxis_grpc.discovery.members import MemberStatus
from praxis_grpc.errors import DeadlineExceeded, NotFound, Unavailable, quote
from praxis_grpc.peers.base import PeerClient, PeerLost
from praxis_grpc.wire import (
    duration,
    endpoints_to_proto,
    load_to_proto,
    reachability_to_proto,
    role_to_proto,
    timestamp,
)
from praxis_grpc.wire_input import MAX_NAME_LENGTH, check_length

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
    def agent_id(self) -> str:
        """The node's agent id."""
        ...

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


class RemoteAgents:
    """Describes other members through the peer seam.

    Args:
        directory: The known cards (an agent's address is on its card).
        peers: Reaches the agent, over gRPC or libp2p as its card says.
        call_timeout: Most seconds one description may take
            (``routing.call_timeout``); the client's deadline, if sooner, wins.
    """

    def __init__(self, directory: CardDirectory, peers: PeerClient, *, call_timeout: float) -> None:
        self._directory = directory
        self._peers = peers
        self._call_timeout = call_timeout

    async def describe(self, agent_id: str, time_remaining: float | None) -> pb.Agent:
        """The agent ``agent_id`` as it describes itself.

        Raises:
            NotFound: no card of that agent is known here.
            Unavailable: the agent has no address, or did not answer in time.
        """
        card = self._directory.get(agent_id)
        if card is None:
            raise NotFound(f"agent_id: no agent {quote(agent_id)} is known to this node")
        address = card.peer_address
        if not address:
            raise Unavailable(f"agent_id: agent {card.name} publishes no address to reach it at")
        timeout = self._call_timeout
        if time_remaining is not None:
            timeout = min(timeout, time_remaining)
        try:
            return await self._peers.describe(address, call_timeout=timeout)
        except PeerLost as exc:
            why = exc.message
            raise Unavailable(f"agent_id: agent {card.name} did not answer: {why}") from None
        except DeadlineExceeded:
            raise Unavailable(
                f"agent_id: agent {card.name} did not answer within {timeout:g}s"
            ) from None


class AgentService(pb_grpc.AgentServiceServicer):
    """Serves the node's own state, and other members' through ``remote``."""

    def __init__(self, node: DescribedNode, remote: RemoteAgents) -> None:
        self._node = node
        self._remote = remote

    @translate_errors
    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        check_length("agent_id", request.agent_id, MAX_NAME_LENGTH)
        if request.agent_id and request.agent_id != self._node.agent_id:
            agent = await self._remote.describe(request.agent_id, context.time_remaining())
            return pb.GetAgentResponse(agent=agent)
        return pb.GetAgentResponse(agent=describe_node(self._node))

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
        return pb.DrainResponse(agent=describe_node(self._node))


def describe_node(node: DescribedNode) -> pb.Agent:
    """``node`` as ``GetAgent`` returns it (its card refreshed first)."""
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
