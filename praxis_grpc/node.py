"""A node: wires the plug points from a validated config and runs their lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from praxis_grpc import __version__
from praxis_grpc.api.agent_service import AgentService, RemoteAgents, describe_node
from praxis_grpc.api.card_service import CardService
from praxis_grpc.assembly import TaskParts
from praxis_grpc.card_publisher import CardPublisher
from praxis_grpc.cards import AgentCard
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Consensus, Leadership
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery, PeerStatus
from praxis_grpc.discovery.members import MemberSource, MemberStatus
from praxis_grpc.gossip import CardGossip
from praxis_grpc.ha.coordinator import CLUSTER_ORIGIN, HaController
from praxis_grpc.identity import Identity
from praxis_grpc.metrics import Metrics
from praxis_grpc.node_parts import SERVICE_NAMES, Servers, StartupError, engine_limits, load_state
from praxis_grpc.p2p_setup import cluster_credentials, libp2p_discovery, start_gossip
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.reach import serve_peer_calls
from praxis_grpc.routing.frontend import TaskFrontend
from praxis_grpc.serving import Endpoints, build_serving
from praxis_grpc.supervise import Supervisor
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine
from praxis_grpc.tasks.store import TaskStore
from praxis_grpc.tools.registry import ToolRegistry
from praxis_grpc.tools.workers import WorkerPool
from praxis_grpc.upkeep import follow_leadership, start_upkeep

log = logging.getLogger(__name__)

__all__ = ["SERVICE_NAMES", "ConsensusFactory", "Endpoints", "Node", "StartupError"]

# (agent_id, grpc_address) -> an unstarted consensus member; a test plug point.
ConsensusFactory = Callable[[str, str], Consensus]


class Node:
    """One praxis node.

    Everything the node uses is built from ``config`` unless passed in; pass
    fakes (``praxis_grpc.testing``) to test without disk. Use
    ``await node.start()`` and ``await node.aclose()``, or ``async with node``.
    """

    def __init__(
        self,
        config: Config,
        *,
        identity: Identity | None = None,
        tools: ToolRegistry | None = None,
        store: TaskStore | None = None,
        metrics: Metrics | None = None,
        discovery: Discovery | None = None,
        consensus: ConsensusFactory | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._identity = identity
        self._tools = tools
        self._store = store
        # Where the built-in tools compute; workers start on demand, so the
        # pool costs nothing when the tools are passed in. Closed after the engine.
        self._workers = WorkerPool(
            config.tools.workers, memory_limit=config.tools.worker_memory_bytes
        )
        self._servers: Servers | None = None
        self._background = Supervisor(self.metrics, self._fail)
        self._engine: TaskEngine | None = None
        self._directory: CardDirectory | None = None
        self._parts: TaskParts | None = None
        self._peers: PeerClient | None = None
        self._consensus_factory = consensus
        self._consensus: Consensus | None = None
        self._draining = False
        self._serving = False
        self._closed = asyncio.Event()
        self._closing = False
        self._failed = asyncio.Event()
        self.failure = ""
        """Why the node failed and stopped serving ("" while it has not)."""
        self._endpoints: Endpoints | None = None
        self._discovery = discovery
        self._gossip: CardGossip | None = None
        self._credentials: ClusterCredentials | None = None
        self._card = CardPublisher(config, self.metrics, on_change=self._card_changed)
        self.incarnation = 0
        self.started_at = datetime.now(UTC)
        self._started_monotonic = time.monotonic()

    @property
    def agent_id(self) -> str:
        """The libp2p peer id of this node."""
        if self._identity is None:
            raise RuntimeError("node not started")
        return self._identity.agent_id

    @property
    def engine(self) -> TaskEngine:
        """The local task engine (after start)."""
        if self._engine is None:
            raise RuntimeError("node not started")
        return self._engine

    @property
    def parts(self) -> TaskParts:
        """The task components (after start)."""
        if self._parts is None:
            raise RuntimeError("node not started")
        return self._parts

    @property
    def dispatcher(self) -> TaskFrontend:
        """Routes submissions and serves tasks wherever they run (after start)."""
        return self.parts.frontend

    @property
    def peer_client(self) -> PeerClient:
        """Calls to other nodes (after start)."""
        if self._peers is None:
            raise RuntimeError("node not started")
        return self._peers

    @property
    def directory(self) -> CardDirectory:
        """The card directory (after start)."""
        if self._directory is None:
            raise RuntimeError("node not started")
        return self._directory

    @property
    def endpoints(self) -> Endpoints:
        """Bound addresses (after start)."""
        if self._endpoints is None:
            raise RuntimeError("node not started")
        return self._endpoints

    @property
    def p2p_addrs(self) -> list[str]:
        """The libp2p addresses this node advertises (in its card too)."""
        return self._card.p2p_addrs

    @property
    def reachability(self) -> str:
        """Whether peers can dial this node (dial-back, or ``p2p.reachability``):
        "unknown", "public" or "private"; in its card too."""
        return self._card.reachability

    @property
    def uptime(self) -> float:
        """Seconds since the node object was created."""
        return time.monotonic() - self._started_monotonic

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Load state, bind the servers, recover tasks and begin serving.

        Raises:
            StartupError: with a message naming the config key at fault.
        """
        cfg = self.config
        state = load_state(
            cfg, self._workers, identity=self._identity, store=self._store, tools=self._tools
        )
        self._identity, self._store, self._tools = state.identity, state.store, state.tools
        self.incarnation = state.incarnation
        self.metrics.node_info.labels(
            __version__, cfg.agent.name, cfg.ha.mode, cfg.ha.consensus.backend
        ).set(1)
        self.metrics.build.info({"version": __version__})
        limits = engine_limits(cfg)
        self._engine = TaskEngine(
            store=self._store,
            tools=self._tools,
            limits=limits,
            metrics=self.metrics,
            agent_id=self.agent_id,
            agent_tags=frozenset(cfg.agent.tags),
        )
        self._directory = CardDirectory(self.agent_id, ttl=cfg.cards.ttl)
        self.metrics.cards_known.set_function(lambda: len(self.directory))
        try:
            self._credentials = cluster_credentials(cfg, self.agent_id)
            if self._discovery is None and cfg.p2p.enabled:
                self._discovery = libp2p_discovery(
                    cfg,
                    state.identity,
                    self._directory,
                    self.metrics,
                    self.incarnation,
                    credentials=self._credentials,
                    on_addrs=self._card.p2p_addrs_changed,
                    on_reachability=self._card.reachability_changed,
                )
            await self._start_servers(limits)
            assert self._servers is not None
            assert self._servers.peer_service is not None
            serve_peer_calls(self._discovery, self._servers.peer_service)
            self._discovery, self._gossip, self._card.p2p_addrs = await start_gossip(
                cfg,
                directory=self._directory,
                identity=state.identity,
                discovery=self._discovery,
                metrics=self.metrics,
                incarnation=self.incarnation,
                credentials=self._credentials,
            )
        except BaseException:
            await self.aclose(grace=0)
            raise
        parts = self._parts
        assert parts is not None
        report = self._engine.start()
        self._serving = True
        self.refresh_card()
        following = parts.delegations.start(CLUSTER_ORIGIN if parts.ha is not None else "")
        start_upkeep(
            self._background,
            cfg,
            agent_id=self.agent_id,
            directory=self._directory,
            card=self._card,
            refresh_card=self.refresh_card,
            gossip=self._gossip,
            discovery=self._discovery,
            peers=self.peer_client,
        )
        try:
            await self._start_consensus()
        except BaseException:
            await self.aclose(grace=0)
            raise
        await self._set_health(serving=True)
        await self._sync_task_health()
        log.info(
            "node %s (%s) serving gRPC on %s, metrics on %s; incarnation %d; "
            "recovered %d queued, %d failed; following %d delegated",
            cfg.agent.name,
            self.agent_id,
            self.endpoints.grpc,
            self.endpoints.metrics,
            self.incarnation,
            len(report.requeued),
            len(report.failed),
            following,
        )

    async def _start_servers(self, limits: EngineLimits) -> None:
        """Bind the servers, build the task components on them (see
        :func:`~praxis_grpc.serving.build_serving`), then serve them."""
        serving = await build_serving(
            self.config,
            self.metrics,
            agent_id=self.agent_id,
            engine=self.engine,
            directory=self.directory,
            limits=limits,
            credentials=self._credentials,
            discovery=self._discovery,
            consensus=self._consensus_factory,
            on_role_change=self._role_changed,
        )
        self._servers, self._endpoints, self._peers = (
            serving.servers,
            serving.endpoints,
            serving.peers,
        )
        self._consensus, self._parts = serving.consensus, serving.parts
        await serving.servers.start(
            agent_service=AgentService(
                self,
                RemoteAgents(
                    self.directory, serving.peers, call_timeout=self.config.routing.call_timeout
                ),
            ),
            cards=CardService(self.directory, self.refresh_card),
            tasks=serving.parts.frontend,
            requests=serving.parts.requests,
            describe=lambda: describe_node(self),
        )
        self._endpoints = replace(serving.endpoints, metrics=serving.servers.metrics_address)

    async def _start_consensus(self) -> None:
        """Start the consensus member and follow the leadership. The role
        switch survives every failure of a role change, so if it ends while
        the node serves, the node can no longer follow the leadership (it
        would serve as a zombie, never coordinating again): the supervisor
        fails the node instead (see :meth:`wait_failed`)."""
        if self._ha is not None and self._consensus is not None:
            await follow_leadership(
                self._background,
                self._consensus,
                self._ha,
                backend=self.config.ha.consensus.backend,
            )

    async def _fail(self, reason: str) -> None:
        """Stop serving for good: refuse tasks, report NOT_SERVING and wake
        :meth:`wait_failed` (whose caller stops the node). Called by the
        supervisor when a critical task ended; nothing while closing."""
        if self._closing:
            return
        log.critical("%s; this node stops serving and must be restarted", reason)
        self.failure = reason
        self._draining = True
        self.engine.set_accepting(False)
        self.refresh_card()
        await self._set_health(serving=False)
        self._failed.set()

    async def wait_failed(self) -> str:
        """Return, with the reason, once the node has failed in a way only a
        restart mends (it then answers health checks NOT_SERVING and refuses
        tasks); ``praxis node`` then stops and exits 1. Never returns for a
        node that keeps working."""
        await self._failed.wait()
        return self.failure

    @property
    def _ha(self) -> HaController | None:
        return self._parts.ha if self._parts is not None else None

    def leadership(self) -> Leadership:
        """The coordinator as this node sees it (empty in active-active mode)."""
        return self._ha.leadership() if self._ha is not None else Leadership()

    @property
    def role(self) -> str:
        """``peer`` (active-active), ``coordinator`` or ``standby``."""
        return self._ha.role if self._ha is not None else "peer"

    def _role_changed(self) -> None:
        self.refresh_card()
        self._background.start("task-health", self._sync_task_health())

    async def _sync_task_health(self) -> None:
        """TaskService is NOT_SERVING while draining, and in active-passive mode
        while there is no coordinator to route or forward to."""
        if self._ha is None or not self._serving:
            return
        ready = self.leadership().known and not self._draining
        if self._servers is not None:
            await self._servers.set_task_health(serving=ready)

    async def peers(self) -> list[PeerStatus]:
        """Connected mesh peers (empty without discovery)."""
        return await self._discovery.peers() if self._discovery is not None else []

    async def members(self) -> list[MemberStatus]:
        """Mesh members and their SWIM states (empty without a failure detector)."""
        source = self._discovery
        return await source.members() if isinstance(source, MemberSource) else []

    def refresh_card(self) -> AgentCard:
        """Publish the local card with current load and state; returns it."""
        assert self._tools is not None
        return self._card.publish(
            self.directory,
            self._gossip,
            agent_id=self.agent_id,
            role=self.role,
            grpc_address=self.endpoints.grpc,
            peer_address=self.endpoints.peer,
            tools=self._tools,
            load=self.engine.load(),
            draining=self._draining,
            incarnation=self.incarnation,
        )

    def _card_changed(self) -> None:
        if self._serving:
            self.refresh_card()

    def set_draining(self, draining: bool) -> None:
        """Enter or leave drain mode: refuse new tasks and report NOT_SERVING."""
        self._draining = draining
        self.engine.set_accepting(not draining)
        self.refresh_card()
        self._background.start("health", self._set_health(serving=not draining))

    async def _set_health(self, *, serving: bool) -> None:
        if self._servers is not None:
            await self._servers.set_health(serving=serving)

    async def wait_closed(self) -> None:
        """Return once :meth:`aclose` has finished."""
        await self._closed.wait()

    async def aclose(self, grace: float | None = None) -> None:
        """Drain and stop.

        Refuses new tasks, reports NOT_SERVING, lets running tasks finish for
        ``grace`` seconds (default ``tasks.drain_timeout``), hands back or fails
        the rest (see :meth:`TaskEngine.aclose`), then stops the servers.
        """
        if self._closed.is_set():
            return
        self._closing = True
        grace = self.config.tasks.drain_timeout if grace is None else grace
        if self._serving:
            self._draining = True
            self.engine.set_accepting(False)
            await self._set_health(serving=False)
            self.refresh_card()
        if self._engine is not None:
            await self._engine.aclose(grace)
        await self._workers.aclose()
        if self._parts is not None:
            await self._parts.delegations.aclose()
            if self._parts.ha is not None:
                await self._parts.ha.aclose()
        if self._consensus is not None:
            await self._consensus.aclose()
        await self._background.aclose()
        if self._gossip is not None:
            await self._gossip.aclose()
        elif self._discovery is not None:
            await self._discovery.aclose()
        if self._directory is not None:
            self._directory.close_watchers()
        if self._servers is not None:
            await self._servers.stop()
        if self._peers is not None:
            await self._peers.aclose()
        if self._store is not None:
            self._store.close()
        self._closed.set()
