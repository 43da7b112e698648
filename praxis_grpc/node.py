"""A node: wires the plug points from a validated config and runs their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from praxis_grpc import __version__
from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    card_service_pb2,
    card_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)
from praxis_grpc.a2a import a2a_agent_card
from praxis_grpc.api.agent_service import AgentService
from praxis_grpc.api.card_service import CardService
from praxis_grpc.api.interceptors import MetricsInterceptor, RequestDecodingInterceptor
from praxis_grpc.api.server_limits import request_size_limits, server_options
from praxis_grpc.api.task_service import TaskService
from praxis_grpc.cards import (
    AgentCard,
    CardEventType,
    CardLoad,
    Endpoint,
    ToolInfo,
    timer_scale,
)
from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Consensus, ConsensusError, Leadership
from praxis_grpc.consensus.factory import build_consensus
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery, PeerStatus
from praxis_grpc.discovery.members import MembershipOptions, MemberSource, MemberStatus
from praxis_grpc.gossip import CardGossip
from praxis_grpc.ha.coordinator import CLUSTER_ORIGIN, HaController
from praxis_grpc.ha.fence import Fence
from praxis_grpc.heap import trim_periodically
from praxis_grpc.http_endpoints import HttpEndpoints
from praxis_grpc.identity import Identity, load_or_create_identity, next_incarnation
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.peers.grpc import GrpcPeerClient
from praxis_grpc.peers.service import PeerService, add_to_server
from praxis_grpc.roster import MemberRoster
from praxis_grpc.routing.delegation import Delegations
from praxis_grpc.routing.dispatcher import TaskDispatcher
from praxis_grpc.routing.peer_requests import PeerRequests
from praxis_grpc.routing.router import Router
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine
from praxis_grpc.tasks.sqlite_store import SqliteTaskStore
from praxis_grpc.tasks.store import TaskStore
from praxis_grpc.tools.registry import ToolRegistry, build_registry
from praxis_grpc.tools.workers import WorkerPool

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    card_service_pb2.DESCRIPTOR.services_by_name["CardService"].full_name,
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# (agent_id, grpc_address) -> an unstarted consensus member; a test plug point.
ConsensusFactory = Callable[[str, str], Consensus]


class StartupError(Exception):
    """The node could not start (port in use, unreadable key, bad store...)."""


@dataclass(frozen=True)
class Endpoints:
    """Where a started node can be reached."""

    grpc: str
    metrics: str | None


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
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._http: HttpEndpoints | None = None
        self._background: list[asyncio.Task[None]] = []
        self._engine: TaskEngine | None = None
        self._directory: CardDirectory | None = None
        self._dispatcher: TaskDispatcher | None = None
        self._delegations: Delegations | None = None
        self._peers: PeerClient | None = None
        self._peer_requests: PeerRequests | None = None
        self._consensus_factory = consensus
        self._consensus: Consensus | None = None
        self._ha: HaController | None = None
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
        self.p2p_addrs: list[str] = []
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
    def dispatcher(self) -> TaskDispatcher:
        """Routes submissions and serves tasks wherever they run (after start)."""
        if self._dispatcher is None:
            raise RuntimeError("node not started")
        return self._dispatcher

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
        data_dir = cfg.resolved_data_dir
        key = "data_dir"  # the config key a failure below is reported against
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            if self._identity is None:
                key = "p2p.key_file"
                self._identity = load_or_create_identity(cfg.key_file)
            key = "data_dir"
            self.incarnation = next_incarnation(data_dir / "incarnation")
            if self._store is None:
                key = "tasks.store"
                self._store = SqliteTaskStore(cfg.store_path, fsync=cfg.tasks.fsync)
            if self._tools is None:
                key = "tools"
                self._tools = build_registry(
                    cfg.tools.builtins, cfg.tools.contracts_dir, cfg.sandbox_root, self._workers
                )
        except StartupError:
            raise
        except Exception as exc:
            raise StartupError(f"{key}: {exc}") from exc
        self.metrics.node_info.labels(
            __version__, cfg.agent.name, cfg.ha.mode, cfg.ha.consensus.backend
        ).set(1)
        self.metrics.build.info({"version": __version__})
        limits = EngineLimits(
            max_concurrency=cfg.tasks.max_concurrency,
            queue_limit=cfg.tasks.queue_limit,
            default_timeout=cfg.tasks.default_timeout,
            max_timeout=cfg.tasks.max_timeout,
            max_result_bytes=cfg.tasks.max_result_bytes,
            max_attempts=cfg.tasks.max_attempts,
        )
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
        self._build_routing(limits)
        try:
            await self._start_grpc()
            self._start_metrics()
            await self._start_gossip()
        except BaseException:
            await self.aclose(grace=0)
            raise
        report = self._engine.start()
        self._serving = True
        self.refresh_card()
        assert self._delegations is not None
        following = self._delegations.start(CLUSTER_ORIGIN if self._ha is not None else "")
        self._background = [
            asyncio.create_task(self._heartbeat(), name="card-heartbeat"),
            asyncio.create_task(self._close_departed_channels(), name="channel-cleanup"),
            asyncio.create_task(
                self._directory.expire_periodically(cfg.cards.heartbeat), name="card-expiry"
            ),
            asyncio.create_task(trim_periodically(), name="heap-trim"),
        ]
        try:
            await self._start_consensus()
        except BaseException:
            await self.aclose(grace=0)
            raise
        await self._set_health(_SERVING)
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

    def _build_routing(self, limits: EngineLimits) -> None:
        cfg = self.config
        engine, directory = self.engine, self.directory
        self.metrics.task_queue_limit.set(limits.queue_limit)

        def local_pending() -> tuple[int, int, int]:
            load = engine.load()
            return load.in_flight + load.queued, load.capacity, load.capacity + load.queue_limit

        router = Router(
            local_agent_id=self.agent_id,
            cards=directory.cards,
            local_pending=local_pending,
            strategy=cfg.routing.strategy,
        )
        self._peers = GrpcPeerClient(self.agent_id, cfg.api.max_message_bytes)
        self._delegations = Delegations(
            engine=engine,
            router=router,
            directory=directory,
            peers=self._peers,
            metrics=self.metrics,
            config=cfg.routing,
            discovery_wait=cfg.routing.reattach_wait,
            fencing_token=lambda: self._ha.term if self._ha is not None else 0,
            fenced_origin=CLUSTER_ORIGIN if cfg.ha.mode == "active-passive" else "",
            max_attempts=cfg.tasks.max_attempts,
        )
        if cfg.ha.mode == "active-passive":
            self._ha = HaController(
                engine=engine,
                router=router,
                delegations=self._delegations,
                peers=self._peers,
                fence=Fence(cfg.resolved_data_dir / "fencing"),
                metrics=self.metrics,
                forward=cfg.ha.forward_submissions,
                on_change=self._role_changed,
                retention=cfg.ha.record_retention,
                hold_timeout=cfg.ha.hold_timeout,
            )
        self._dispatcher = TaskDispatcher(
            engine=engine,
            router=router,
            delegations=self._delegations,
            metrics=self.metrics,
            config=cfg.routing,
            limits=limits,
            standby=self._ha,
        )
        self._peer_requests = PeerRequests(
            engine=engine,
            dispatcher=self._dispatcher,
            admit=self._ha.admit if self._ha is not None else None,
        )

    async def _start_consensus(self) -> None:
        if self._ha is None:
            return
        cfg = self.config.ha.consensus
        try:
            if self._consensus_factory is not None:
                self._consensus = self._consensus_factory(self.agent_id, self.endpoints.grpc)
            else:
                self._consensus = build_consensus(
                    self.config, agent_id=self.agent_id, grpc_address=self.endpoints.grpc
                )
            await self._consensus.start()
        except ConsensusError as exc:
            raise StartupError(str(exc)) from exc
        self._ha.attach(self._consensus)
        self._background.append(
            asyncio.create_task(self._follow_leadership(self._ha), name="ha-role")
        )
        log.info("active-passive with consensus backend %s", cfg.backend)

    async def _follow_leadership(self, ha: HaController) -> None:
        """Run the role switch. It survives every failure of a role change, so
        if it ends while the node serves, the node can no longer follow the
        leadership (it would serve as a zombie, never coordinating again):
        it fails instead (see :meth:`wait_failed`)."""
        try:
            await ha.run()
            reason = "the consensus member stopped reporting the leadership"
        except Exception as exc:
            log.exception("the role switch failed")
            reason = f"the role switch failed ({exc!r})"
        if not self._closing:
            await self._fail(reason)

    async def _fail(self, reason: str) -> None:
        """Stop serving for good: refuse tasks, report NOT_SERVING and wake
        :meth:`wait_failed` (whose caller stops the node)."""
        log.critical("%s; this node stops serving and must be restarted", reason)
        self.failure = reason
        self._draining = True
        self.engine.set_accepting(False)
        self.refresh_card()
        await self._set_health(_NOT_SERVING)
        self._failed.set()

    async def wait_failed(self) -> str:
        """Return, with the reason, once the node has failed in a way only a
        restart mends (it then answers health checks NOT_SERVING and refuses
        tasks); ``praxis node`` then stops and exits 1. Never returns for a
        node that keeps working."""
        await self._failed.wait()
        return self.failure

    def leadership(self) -> Leadership:
        """The coordinator as this node sees it (empty in active-active mode)."""
        return self._ha.leadership() if self._ha is not None else Leadership()

    @property
    def role(self) -> str:
        """``peer`` (active-active), ``coordinator`` or ``standby``."""
        return self._ha.role if self._ha is not None else "peer"

    def _role_changed(self) -> None:
        self.refresh_card()
        self._background.append(asyncio.create_task(self._sync_task_health()))

    async def _sync_task_health(self) -> None:
        """TaskService is NOT_SERVING while draining, and in active-passive mode
        while there is no coordinator to route or forward to."""
        if self._ha is None or not self._serving:
            return
        ready = self.leadership().known and not self._draining
        await self._health.set(SERVICE_NAMES[2], _SERVING if ready else _NOT_SERVING)

    async def _close_departed_channels(self) -> None:
        """Drop the connection to every agent whose card is removed."""
        while True:
            try:
                async for event in self.directory.watch():
                    if event is not None and event.type is CardEventType.REMOVED:
                        self.peer_client.discard(event.card.grpc_address)
                return
            except OverflowError:
                continue

    async def _start_grpc(self) -> None:
        cfg = self.config
        server = grpc.aio.server(
            interceptors=[
                MetricsInterceptor(self.metrics),
                RequestDecodingInterceptor(
                    size_limits=request_size_limits(cfg.tasks.max_argument_bytes)
                ),
            ],
            options=server_options(cfg.api),
            maximum_concurrent_rpcs=cfg.api.max_concurrent_rpcs,
        )
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentService(self), server)
        card_service_pb2_grpc.add_CardServiceServicer_to_server(
            CardService(self.directory, self.refresh_card), server
        )
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskService(
                self.dispatcher,
                max_argument_bytes=cfg.tasks.max_argument_bytes,
                max_message_bytes=cfg.api.max_message_bytes,
            ),
            server,
        )
        assert self._peer_requests is not None
        # Internal: served, but not listed by reflection (see peer_service.proto).
        add_to_server(
            PeerService(
                self._peer_requests,
                max_argument_bytes=cfg.tasks.max_argument_bytes,
                max_message_bytes=cfg.api.max_message_bytes,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        await self._set_health(_NOT_SERVING)
        address = f"{cfg.api.host}:{cfg.api.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"api.port: cannot listen on {address}: {exc}") from None
        if port == 0:
            raise StartupError(f"api.port: cannot listen on {address} (address in use?)")
        await server.start()
        self._server = server
        host = cfg.api.advertise_host or cfg.api.host
        self._endpoints = Endpoints(grpc=f"{host}:{port}", metrics=None)

    async def _start_gossip(self) -> None:
        p2p = self.config.p2p
        if self._discovery is None and p2p.enabled:
            from praxis_grpc.discovery.bridge import Libp2pDiscovery
            from praxis_grpc.discovery.libp2p import HostOptions

            assert self._identity is not None
            roster = MemberRoster(
                directory=self.directory,
                metrics=self.metrics,
                forget_after=self.config.membership.gossip_to_the_dead,
            )
            self._discovery = Libp2pDiscovery(
                HostOptions(
                    key_pair=self._identity.key_pair,
                    listen_host=p2p.host,
                    listen_port=p2p.port,
                    bootstrap=tuple(p2p.bootstrap_nodes),
                    enable_mdns=p2p.enable_mdns,
                    enable_dht=p2p.enable_dht,
                    rendezvous=p2p.rendezvous,
                    rendezvous_points=tuple(p2p.rendezvous_points),
                    heartbeat_interval=min(self.config.cards.heartbeat, 1.0),
                    max_card_bytes=p2p.max_card_bytes,
                    target_peers=p2p.target_peers,
                    max_peers=p2p.max_peers,
                    trim_grace=p2p.trim_grace,
                ),
                membership=MembershipOptions(
                    self.config.membership.protocol(), self.incarnation, roster
                ),
            )
        if self._discovery is None:
            return
        assert self._identity is not None
        self._gossip = CardGossip(
            directory=self.directory,
            identity=self._identity,
            discovery=self._discovery,
            metrics=self.metrics,
            disconnect_grace=p2p.disconnect_grace,
            max_card_bytes=p2p.max_card_bytes,
            load_threshold=self.config.cards.load_threshold,
        )
        try:
            self.p2p_addrs = await self._gossip.start()
        except Exception as exc:
            raise StartupError(
                f"p2p: cannot start the libp2p host on {p2p.host}:{p2p.port}: {exc}"
            ) from exc

    async def peers(self) -> list[PeerStatus]:
        """Connected mesh peers (empty without discovery)."""
        return await self._discovery.peers() if self._discovery is not None else []

    async def members(self) -> list[MemberStatus]:
        """Mesh members and their SWIM states (empty without a failure detector)."""
        source = self._discovery
        return await source.members() if isinstance(source, MemberSource) else []

    def _start_metrics(self) -> None:
        cfg = self.config.metrics
        if not cfg.enabled:
            return
        directory = self.directory

        def agent_card() -> dict[str, Any] | None:
            # Called on the HTTP thread: reads the current (immutable) card only.
            try:
                return a2a_agent_card(directory.local)
            except RuntimeError:
                return None

        http = HttpEndpoints(self.metrics.registry, agent_card)
        try:
            http.start(cfg.host, cfg.port)
        except OSError as exc:
            raise StartupError(
                f"metrics.port: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}"
            ) from None
        self._http = http
        self._endpoints = Endpoints(grpc=self.endpoints.grpc, metrics=f"{cfg.host}:{http.port}")

    def refresh_card(self) -> AgentCard:
        """Publish the local card with current load and state; returns it."""
        assert self._tools is not None
        load = self.engine.load()
        cfg = self.config
        card = AgentCard(
            agent_id=self.agent_id,
            name=cfg.agent.name,
            praxis_version=__version__,
            role=self.role,
            endpoints=(
                Endpoint("grpc", self.endpoints.grpc),
                *(Endpoint("libp2p", addr) for addr in self.p2p_addrs),
            ),
            tools=tuple(
                ToolInfo(
                    name=spec.name,
                    description=spec.description,
                    input_schema=dict(spec.input_schema),
                    idempotent=spec.idempotent,
                    default_timeout=spec.default_timeout,
                )
                for spec in self._tools.specs()
            ),
            tags=tuple(cfg.agent.tags),
            load=CardLoad(load.in_flight, load.queued, load.capacity, load.queue_limit),
            draining=self._draining,
            incarnation=self.incarnation,
            version=0,
            updated_at=datetime.now(UTC),
        )
        card = self.directory.publish_local(card)
        if self._gossip is not None:
            self._gossip.announce()
        return card

    def set_draining(self, draining: bool) -> None:
        """Enter or leave drain mode: refuse new tasks and report NOT_SERVING."""
        self._draining = draining
        self.engine.set_accepting(not draining)
        self.refresh_card()
        status = _NOT_SERVING if draining else _SERVING
        self._background.append(asyncio.create_task(self._set_health(status)))

    async def _set_health(self, status: Any) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _heartbeat(self) -> None:
        """Sample the load (a status goes out if it moved); refresh the status now and then."""
        cards, loop = self.config.cards, asyncio.get_running_loop()
        refresh_at = loop.time() + cards.heartbeat
        while True:
            await asyncio.sleep(cards.sample_interval)
            self.refresh_card()
            if self._gossip is not None and loop.time() >= refresh_at:
                self._gossip.refresh()
                refresh_at = loop.time() + cards.heartbeat * timer_scale(len(self.directory))

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
            await self._set_health(_NOT_SERVING)
            self.refresh_card()
        if self._engine is not None:
            await self._engine.aclose(grace)
        await self._workers.aclose()
        if self._delegations is not None:
            await self._delegations.aclose()
        if self._ha is not None:
            await self._ha.aclose()
        if self._consensus is not None:
            await self._consensus.aclose()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._gossip is not None:
            await self._gossip.aclose()
        elif self._discovery is not None:
            await self._discovery.aclose()
        if self._directory is not None:
            self._directory.close_watchers()
        await self._stop_servers()
        if self._store is not None:
            self._store.close()
        self._closed.set()

    async def _stop_servers(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self._peers is not None:
            await self._peers.aclose()
        if self._http is not None:
            self._http.close()
