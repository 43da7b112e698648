"""A node's serving side, assembled in dependency order: the servers bound
first (their address names the node to consensus), the client for calls to
other nodes (dialing each agent's peer listener), the task components built
on both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from praxis_grpc.a2a import a2a_agent_card
from praxis_grpc.assembly import TaskParts, build_task_parts
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Consensus
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery
from praxis_grpc.metrics import Metrics
from praxis_grpc.node_parts import Servers, ha_inputs
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.peers.grpc import GrpcPeerClient, PeerTarget
from praxis_grpc.reach import peer_client
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine

__all__ = ["Endpoints", "Serving", "build_serving", "peer_listener"]


@dataclass(frozen=True)
class Endpoints:
    """Where a started node can be reached."""

    grpc: str
    metrics: str | None
    peer: str | None = None
    """The members-only peer service (mutual TLS); None in an open mesh."""


@dataclass(frozen=True)
class Serving:
    """What :func:`build_serving` built, for the node to start, use and close."""

    servers: Servers
    endpoints: Endpoints
    peers: PeerClient
    consensus: Consensus | None
    """The consensus member (not started); None in active-active mode."""
    parts: TaskParts


async def build_serving(
    cfg: Config,
    metrics: Metrics,
    *,
    agent_id: str,
    engine: TaskEngine,
    directory: CardDirectory,
    limits: EngineLimits,
    credentials: ClusterCredentials | None,
    discovery: Discovery | None,
    consensus: Callable[[str, str], Consensus] | None,
    on_role_change: Callable[[], None],
) -> Serving:
    """Bind the servers (not started: :meth:`Servers.start` serves the task
    components) and build the task components on them. On failure, closes
    what it built before raising.

    Raises:
        StartupError: an address cannot be listened on, a file of ``api.*``
            cannot be used, or the consensus member cannot be built.
    """

    def agent_card() -> dict[str, Any] | None:
        # Called on the HTTP thread: reads the current (immutable) card only.
        try:
            return a2a_agent_card(directory.local)
        except RuntimeError:
            return None

    servers = Servers(cfg, metrics, agent_card, credentials)
    metrics.task_queue_limit.set(limits.queue_limit)
    host = cfg.api.advertise_host or cfg.api.host
    peer = f"{host}:{servers.peer_port}" if servers.peer_port is not None else None
    endpoints = Endpoints(grpc=f"{host}:{servers.port}", metrics=None, peer=peer)
    grpc_peers = GrpcPeerClient(
        agent_id,
        cfg.api.max_message_bytes,
        credentials=credentials.channel_credentials() if credentials else None,
        resolve=lambda address: peer_listener(directory, address),
        metrics=metrics,
    )
    peers = peer_client(grpc_peers, discovery)
    member: Consensus | None = None
    try:
        ha = ha_inputs(
            cfg, consensus, agent_id=agent_id, grpc_address=endpoints.grpc, on_change=on_role_change
        )
        member = ha.consensus if ha is not None else None
        parts = build_task_parts(
            engine=engine,
            directory=directory,
            peers=peers,
            metrics=metrics,
            routing=cfg.routing,
            limits=limits,
            strategy=cfg.routing.strategy,
            ha=ha,
        )
    except BaseException:
        if member is not None:
            await member.aclose()
        await servers.stop()
        await peers.aclose()
        raise
    return Serving(servers, endpoints, peers, member, parts)


def peer_listener(directory: CardDirectory, grpc_address: str) -> PeerTarget:
    """The peer listener of the agent at ``grpc_address`` (unique among cards, see
    :mod:`~praxis_grpc.card_checks`) and that agent's id, which its certificate
    must name; the address itself (and no id) if no card names it."""
    for card in directory.cards():
        if card.grpc_address == grpc_address and card.peer_tls_address:
            return PeerTarget(card.peer_tls_address, card.agent_id)
    return PeerTarget(grpc_address)
