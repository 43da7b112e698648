"""The parts of a node built from its config, besides its task components
(:mod:`praxis_grpc.assembly`) and its side of the mesh
(:mod:`praxis_grpc.p2p_setup`): the state it loads, the gRPC server with every
service, the Prometheus endpoint, the consensus member, the engine's limits."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    card_service_pb2,
    card_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)
from praxis_grpc.api.call_limit import CallLimit
from praxis_grpc.api.card_service import CardService
from praxis_grpc.api.interceptors import (
    MetricsInterceptor,
    OnePass,
    RequestDecodingInterceptor,
)
from praxis_grpc.api.server_limits import request_size_limits, server_options
from praxis_grpc.api.server_security import (
    SecuritySettingsError,
    api_tokens,
    auth_interceptors,
    server_credentials,
)
from praxis_grpc.api.task_service import TaskService
from praxis_grpc.assembly import HaInputs
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Consensus, ConsensusError
from praxis_grpc.consensus.factory import build_consensus
from praxis_grpc.ha.fence import Fence
from praxis_grpc.http_endpoints import HttpEndpoints
from praxis_grpc.identity import Identity, load_or_create_identity, next_incarnation
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.listener import ListenError, peer_server
from praxis_grpc.peers.service import PeerService, add_to_server
from praxis_grpc.routing.frontend import TaskFrontend
from praxis_grpc.routing.peer_requests import PeerRequests
from praxis_grpc.tasks.engine import EngineLimits
from praxis_grpc.tasks.sqlite_store import SqliteTaskStore
from praxis_grpc.tasks.store import TaskStore
from praxis_grpc.tools.registry import ToolRegistry, build_registry
from praxis_grpc.tools.workers import WorkerPool

__all__ = [
    "SERVICE_NAMES",
    "Servers",
    "StartupError",
    "State",
    "engine_limits",
    "ha_inputs",
    "load_state",
]

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    card_service_pb2.DESCRIPTOR.services_by_name["CardService"].full_name,
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StartupError(Exception):
    """The node could not start (port in use, unreadable key, bad store...);
    the message names the config key at fault."""


@dataclass(frozen=True)
class State:
    """What a node loads from its data directory and config before it starts."""

    identity: Identity
    incarnation: int
    store: TaskStore
    tools: ToolRegistry


def load_state(
    cfg: Config,
    workers: WorkerPool,
    *,
    identity: Identity | None,
    store: TaskStore | None,
    tools: ToolRegistry | None,
) -> State:
    """Load (or create) what is not passed in: the identity, the store, the
    tools; and count this start (the incarnation).

    Raises:
        StartupError: naming the config key at fault.
    """
    data_dir = cfg.resolved_data_dir
    key = "data_dir"  # the config key a failure below is reported against
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if identity is None:
            key = "p2p.key_file"
            identity = load_or_create_identity(cfg.key_file)
        key = "data_dir"
        incarnation = next_incarnation(data_dir / "incarnation")
        if store is None:
            key = "tasks.store"
            store = SqliteTaskStore(cfg.store_path, fsync=cfg.tasks.fsync)
        if tools is None:
            key = "tools"
            tools = build_registry(
                cfg.tools.builtins, cfg.tools.contracts_dir, cfg.sandbox_root, workers
            )
    except Exception as exc:
        raise StartupError(f"{key}: {exc}") from exc
    return State(identity, incarnation, store, tools)


def ha_inputs(
    cfg: Config,
    consensus: Callable[[str, str], Consensus] | None,
    *,
    agent_id: str,
    grpc_address: str,
    on_change: Callable[[], None],
) -> HaInputs | None:
    """Active-passive (``ha.mode``): the consensus member (built by
    ``consensus``, else from ``ha.consensus``; not started) and the ``ha.*``
    settings. None in active-active mode.

    Raises:
        StartupError: the member cannot be built.
    """
    if cfg.ha.mode != "active-passive":
        return None
    try:
        if consensus is not None:
            member = consensus(agent_id, grpc_address)
        else:
            member = build_consensus(cfg, agent_id=agent_id, grpc_address=grpc_address)
    except ConsensusError as exc:
        raise StartupError(str(exc)) from exc
    return HaInputs(
        consensus=member,
        fence=Fence(cfg.resolved_data_dir / "fencing"),
        on_change=on_change,
        forward=cfg.ha.forward_submissions,
        retention=cfg.ha.record_retention,
        hold_timeout=cfg.ha.hold_timeout,
    )


def _generic_only(server: grpc.aio.Server) -> grpc.aio.Server:
    """``server`` as the generated ``add_*_to_server`` functions see it (they
    call only the two methods of :class:`_GenericOnly`)."""
    return cast(grpc.aio.Server, _GenericOnly(server))


class _GenericOnly:
    """Servicers added through this become generic handlers of ``server``
    only, not also registered methods.

    grpc.aio's server waits for the next call of each registered method on a
    future of its own, and pays for every call an ``asyncio.wait`` over all of
    them (25 methods here: ~28 µs a call against ~15 µs for one future, in
    a loop that only does that); with none registered it waits on one (and
    reflection's). Calls are served the same either way: generic handlers
    are looked up by method name, as registered ones are.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """Registers nothing: the generic handler added with them serves the calls."""


class Servers:
    """The node's gRPC server, bound at construction to ``api.host:api.port``
    (so its address is known before anything is built on it; with TLS and
    tokens when ``api.tls`` / ``api.auth`` say so) and started by
    :meth:`start` with its services, and the ``/metrics`` endpoint.

    With ``credentials`` the peer service is not on that server but on its own,
    bound to ``api.host:cluster.peer_port`` with mutual TLS (members only, see
    :mod:`~praxis_grpc.peers.members_only`); ``peer_port`` is its port (else None).

    Raises:
        StartupError: an address cannot be listened on, or a file of
            ``api.tls`` / ``api.auth`` cannot be used.
    """

    def __init__(
        self,
        cfg: Config,
        metrics: Metrics,
        agent_card: Callable[[], dict[str, Any] | None],
        credentials: ClusterCredentials | None = None,
    ) -> None:
        self._cfg, self._metrics = cfg, metrics
        self._agent_card = agent_card
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._http: HttpEndpoints | None = None
        self.metrics_address: str | None = None
        self.peer_service: PeerService | None = None
        self._running: list[grpc.aio.Server] = []
        try:
            self.tokens = api_tokens(cfg.api.auth)
            api_credentials = server_credentials(cfg.api.tls)
        except SecuritySettingsError as exc:
            raise StartupError(str(exc)) from None
        self._server = grpc.aio.server(
            interceptors=[
                OnePass(
                    CallLimit(cfg.api.max_concurrent_rpcs),
                    MetricsInterceptor(metrics),
                    *auth_interceptors(cfg.api.auth, self.tokens),
                    RequestDecodingInterceptor(
                        size_limits=request_size_limits(cfg.tasks.max_argument_bytes)
                    ),
                )
            ],
            options=server_options(cfg.api),
        )
        address = f"{cfg.api.host}:{cfg.api.port}"
        try:
            if api_credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, api_credentials)
        except RuntimeError as exc:
            raise StartupError(f"api.port: cannot listen on {address}: {exc}") from None
        if self.port == 0:
            raise StartupError(f"api.port: cannot listen on {address} (address in use?)")
        self._peer_server: grpc.aio.Server | None = None
        self.peer_port: int | None = None
        if credentials is not None:
            try:
                self._peer_server, self.peer_port = peer_server(cfg, metrics, credentials)
            except ListenError as exc:
                raise StartupError(str(exc)) from None

    async def start(
        self,
        *,
        agent_service: agent_service_pb2_grpc.AgentServiceServicer,
        cards: CardService,
        tasks: TaskFrontend,
        requests: PeerRequests,
        describe: Callable[[], agent_service_pb2.Agent],
    ) -> None:
        """Serve the public services, the internal PeerService (served, but
        not listed by reflection: see peer_service.proto), health (NOT_SERVING
        until :meth:`set_health`) and reflection; then ``/metrics``."""
        cfg, server = self._cfg, _generic_only(self._server)
        # grpc asks the generic handlers in turn at every call: the busiest first.
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskService(
                tasks,
                max_argument_bytes=cfg.tasks.max_argument_bytes,
                max_message_bytes=cfg.api.max_message_bytes,
            ),
            server,
        )
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(agent_service, server)
        card_service_pb2_grpc.add_CardServiceServicer_to_server(cards, server)
        self.peer_service = PeerService(
            requests,
            max_argument_bytes=cfg.tasks.max_argument_bytes,
            max_message_bytes=cfg.api.max_message_bytes,
            describe=describe,
        )
        # With ``cluster`` set, members only: the mutual-TLS peer listener.
        add_to_server(self.peer_service, _generic_only(self._peer_server or self._server))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # Registered (one future more): it serves grpc.aio only if it is given one.
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        await self.set_health(serving=False)
        await self._server.start()
        self._running.append(self._server)
        if self._peer_server is not None:
            await self._peer_server.start()
            self._running.append(self._peer_server)
        self._start_metrics()

    def _start_metrics(self) -> None:
        settings = self._cfg.metrics
        if not settings.enabled:
            return
        http = HttpEndpoints(
            self._metrics.registry,
            self._agent_card,
            self.tokens if settings.require_token else None,
        )
        try:
            http.start(settings.host, settings.port)
        except OSError as exc:
            raise StartupError(
                f"metrics.port: cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        self._http = http
        self.metrics_address = f"{settings.host}:{http.port}"

    async def set_health(self, *, serving: bool) -> None:
        """Every service (and the server as a whole) SERVING or NOT_SERVING."""
        status = _SERVING if serving else _NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def set_task_health(self, *, serving: bool) -> None:
        """TaskService alone SERVING or NOT_SERVING."""
        await self.health.set(SERVICE_NAMES[2], _SERVING if serving else _NOT_SERVING)

    async def stop(self) -> None:
        """Stop the gRPC servers (1 s grace) and ``/metrics``; release their
        ports even if :meth:`start` never ran or failed halfway."""
        for server in [self._server, *([self._peer_server] if self._peer_server else [])]:
            if server in self._running:
                await server.stop(grace=1.0)
            else:
                # grpc.aio keeps the port of a server that was bound but never
                # started until the process exits; only start + stop frees it.
                await _release(server)
        self._running.clear()
        if self._http is not None:
            self._http.close()


async def _release(server: grpc.aio.Server) -> None:
    """Start and stop at once a bound server (no calls are served: stop
    ends them at once): the only way grpc.aio frees its port."""
    with contextlib.suppress(Exception):
        await server.start()
    await server.stop(None)


def engine_limits(cfg: Config) -> EngineLimits:
    """The task engine's limits (``tasks.*``)."""
    tasks = cfg.tasks
    return EngineLimits(
        max_concurrency=tasks.max_concurrency,
        queue_limit=tasks.queue_limit,
        default_timeout=tasks.default_timeout,
        max_timeout=tasks.max_timeout,
        max_result_bytes=tasks.max_result_bytes,
        max_attempts=tasks.max_attempts,
    )
