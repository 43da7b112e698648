"""Nodes without sockets: the task components of a node (engine, router,
delegation, front door, optionally active-passive HA) wired by the
:mod:`~praxis_grpc.assembly` that :class:`~praxis_grpc.node.Node` uses,
talking to each other through a
:class:`~praxis_grpc.testing.memory_peers.MemoryPeerNetwork`, with cards
published by hand (hashicorp/raft's ``MakeCluster`` on ``InmemTransport``).

For tests of delegation, re-dispatch, relays and take-over that need no
gRPC server, no discovery and no disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.api.agent_service import RemoteAgents
from praxis_grpc.assembly import HaInputs, build_task_parts
from praxis_grpc.cards import AgentCard, CardLoad, Endpoint, ToolInfo
from praxis_grpc.config import RoutingConfig
from praxis_grpc.directory import CardDirectory
from praxis_grpc.ha.coordinator import CLUSTER_ORIGIN
from praxis_grpc.ha.fence import Fence
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine
from praxis_grpc.testing.memory_consensus import MemoryConsensus, MemoryConsensusGroup
from praxis_grpc.testing.memory_peers import MemoryPeerNetwork
from praxis_grpc.testing.memory_store import MemoryTaskStore
from praxis_grpc.testing.tools import ExecutionLog, RecordingTool
from praxis_grpc.tools.base import Tool
from praxis_grpc.tools.registry import ToolRegistry

__all__ = ["PeerCluster", "PeerNode"]


class PeerNode:
    """One node's task components, served on ``network`` at ``name``.

    With ``consensus`` the node is active-passive (its HA role follows the
    group; fencing token file in ``data_dir``).
    """

    def __init__(
        self,
        network: MemoryPeerNetwork,
        name: str,
        tools: list[Tool],
        *,
        routing: RoutingConfig | None = None,
        consensus: MemoryConsensusGroup | None = None,
        data_dir: Path | None = None,
        max_attempts: int = 3,
    ) -> None:
        self.name = self.agent_id = self.address = name
        self.metrics = Metrics()
        self.peers = network.client(name)
        self.tools = ToolRegistry(tools)
        limits = EngineLimits(max_attempts=max_attempts)
        self.engine = TaskEngine(
            store=MemoryTaskStore(),
            tools=self.tools,
            limits=limits,
            metrics=self.metrics,
            agent_id=name,
        )
        self.directory = CardDirectory(name, ttl=3600.0)
        self._consensus: MemoryConsensus | None = None
        ha: HaInputs | None = None
        if consensus is not None:
            assert data_dir is not None, "an active-passive node keeps its fence on disk"
            data_dir.mkdir(parents=True, exist_ok=True)
            self._consensus = consensus.member(name, name)
            ha = HaInputs(
                consensus=self._consensus,
                fence=Fence(data_dir / "fencing"),
                on_change=self.publish,
                hold_timeout=5.0,
            )
        parts = build_task_parts(
            engine=self.engine,
            directory=self.directory,
            peers=self.peers,
            metrics=self.metrics,
            routing=routing or RoutingConfig(),
            limits=limits,
            ha=ha,
        )
        self.remote = RemoteAgents(self.directory, self.peers, call_timeout=5.0)
        """Describes other nodes (``GetAgent`` with an ``agent_id``)."""
        self.router = parts.router
        self.delegations = parts.delegations
        self.ha = parts.ha
        self.dispatcher = parts.frontend
        self.requests = parts.requests
        self._network = network
        self._role: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Recover, serve on the network, follow delegated tasks (and the HA role)."""
        self.engine.start()
        self._network.serve(self.address, self.requests, describe=self.describe)
        self.publish()
        self.delegations.start(CLUSTER_ORIGIN if self.ha is not None else "")
        if self.ha is not None and self._consensus is not None:
            await self._consensus.start()
            self._role = asyncio.get_running_loop().create_task(self.ha.run())

    def card(self) -> AgentCard:
        """This node's card as it would publish it now."""
        load = self.engine.load()
        return AgentCard(
            agent_id=self.agent_id,
            name=self.name,
            praxis_version="test",
            role=self.ha.role if self.ha is not None else "peer",
            endpoints=(Endpoint("grpc", self.address),),
            tools=tuple(
                ToolInfo(
                    name=spec.name,
                    description=spec.description,
                    input_schema=dict(spec.input_schema),
                    idempotent=spec.idempotent,
                    default_timeout=spec.default_timeout,
                )
                for spec in self.tools.specs()
            ),
            tags=(),
            load=CardLoad(load.in_flight, load.queued, load.capacity, load.queue_limit),
            draining=not self.engine.accepting,
            incarnation=1,
            version=0,
            updated_at=datetime.now(UTC),
        )

    def describe(self) -> Agent:
        """This node as ``GetAgent`` describes it (the fields its card has)."""
        card = self.card()
        return Agent(agent_id=card.agent_id, name=card.name, praxis_version=card.praxis_version)

    def publish(self) -> None:
        """Publish this node's card in its own directory."""
        self.directory.publish_local(self.card())

    async def aclose(self) -> None:
        """Stop (tasks still running are failed or handed back, as on shutdown)."""
        await self.engine.aclose(0)
        await self.delegations.aclose()
        if self.ha is not None:
            await self.ha.aclose()
        if self._consensus is not None:
            await self._consensus.aclose()
        if self._role is not None:
            self._role.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._role
        await self.peers.aclose()


class PeerCluster:
    """Nodes on one memory network, every card known to every node."""

    def __init__(self, network: MemoryPeerNetwork | None = None) -> None:
        self.network = network or MemoryPeerNetwork()
        self.nodes: dict[str, PeerNode] = {}

    async def add(self, node: PeerNode) -> PeerNode:
        """Start ``node`` and exchange cards with every other node."""
        await node.start()
        self.nodes[node.name] = node
        self.share_cards()
        return node

    async def add_group(
        self, group: MemoryConsensusGroup, names: list[str], log: ExecutionLog, data_root: Path
    ) -> list[PeerNode]:
        """Start an active-passive node per name on ``group``, each offering a
        :class:`RecordingTool` named after it that records into ``log``, its
        data under ``data_root/<name>``; no leader is elected yet."""
        for name in names:
            tools: list[Tool] = [RecordingTool(name, log)]
            node = PeerNode(self.network, name, tools, consensus=group, data_dir=data_root / name)
            await self.add(node)
        return [self.nodes[name] for name in names]

    def share_cards(self) -> None:
        """Every node learns every (other) node's current card."""
        for node in self.nodes.values():
            node.publish()
            for other in self.nodes.values():
                if other is not node:
                    other.directory.merge(node.directory.local)

    def lose(self, name: str) -> None:
        """Every other node forgets ``name``'s card (its process is gone or
        cut off for longer than the disconnect grace), and closes its link."""
        for node in self.nodes.values():
            if node.name != name:
                node.directory.remove(name)
                node.peers.discard(name)

    async def aclose(self) -> None:
        """Stop every node."""
        for node in self.nodes.values():
            await node.aclose()
