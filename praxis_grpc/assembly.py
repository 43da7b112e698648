"""Builds the task components of a node in dependency order, each given
everything it uses in its constructor (nothing is rewired afterwards).

Shared by :class:`~praxis_grpc.node.Node` and the socket-free
:class:`~praxis_grpc.testing.peer_nodes.PeerNode`, so tests on the memory
peers run the wiring the product runs.

Active-active: router -> delegations -> placement
(:class:`~praxis_grpc.routing.dispatcher.TaskDispatcher`, the front door).
Active-passive: an :class:`~praxis_grpc.ha.office.Office` (this node's tenure
as coordinator, written by the HA controller) is built first and read by the
router (no routing to itself while coordinating), the replicated records and
delegations (the fencing token); then the controller, and the front door is
the :class:`~praxis_grpc.ha.relay.StandbyRelay` around the placement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from praxis_grpc.config import RoutingConfig
from praxis_grpc.consensus.base import Consensus
from praxis_grpc.directory import CardDirectory
from praxis_grpc.ha.coordinator import CLUSTER_ORIGIN, HaController
from praxis_grpc.ha.fence import Fence
from praxis_grpc.ha.office import Office
from praxis_grpc.ha.records import ReplicatedRecords
from praxis_grpc.ha.relay import StandbyRelay
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.routing.delegation import Delegations
from praxis_grpc.routing.dispatcher import TaskDispatcher
from praxis_grpc.routing.frontend import TaskFrontend
from praxis_grpc.routing.peer_requests import PeerRequests
from praxis_grpc.routing.router import Router, Strategy
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine

__all__ = ["HaInputs", "TaskParts", "build_task_parts"]


@dataclass(frozen=True)
class HaInputs:
    """What an active-passive node adds (``ha.*`` settings).

    Attributes:
        consensus: The member (not started yet; started before ``ha.run()``).
        fence: The fencing token's file.
        on_change: Called after every role change.
    """

    consensus: Consensus
    fence: Fence
    on_change: Callable[[], None]
    forward: bool = True
    retention: float = 600.0
    hold_timeout: float = 5.0


@dataclass(frozen=True)
class TaskParts:
    """The task components of one node."""

    router: Router
    delegations: Delegations
    placement: TaskDispatcher
    frontend: TaskFrontend
    """What ``TaskService`` calls: the placement, or the standby relay around it."""
    requests: PeerRequests
    """What ``PeerService`` calls."""
    ha: HaController | None


def build_task_parts(
    *,
    engine: TaskEngine,
    directory: CardDirectory,
    peers: PeerClient,
    metrics: Metrics,
    routing: RoutingConfig,
    limits: EngineLimits,
    strategy: Strategy = "p2c",
    ha: HaInputs | None = None,
) -> TaskParts:
    """Build a node's task components (active-passive with ``ha``)."""

    def local_pending() -> tuple[int, int, int]:
        load = engine.load()
        return load.in_flight + load.queued, load.capacity, load.capacity + load.queue_limit

    office: Office | None = None
    records: ReplicatedRecords | None = None
    exclude_self: Callable[[], bool] = _never
    fencing_token: Callable[[], int] = _unfenced
    if ha is not None:
        office = Office(ha.consensus)
        records = ReplicatedRecords(engine, ha.consensus, office.term, metrics, CLUSTER_ORIGIN)
        exclude_self, fencing_token = office.in_office, office.term
    router = Router(
        local_agent_id=engine.agent_id,
        cards=directory.cards,
        local_pending=local_pending,
        strategy=strategy,
        exclude_self=exclude_self,
    )
    delegations = Delegations(
        engine=engine,
        router=router,
        directory=directory,
        peers=peers,
        metrics=metrics,
        config=routing,
        discovery_wait=routing.reattach_wait,
        records=records,
        fencing_token=fencing_token,
        fenced_origin=CLUSTER_ORIGIN if ha is not None else "",
        max_attempts=limits.max_attempts,
    )
    placement = TaskDispatcher(
        engine=engine,
        router=router,
        delegations=delegations,
        metrics=metrics,
        config=routing,
        limits=limits,
        records=records,
        origin=CLUSTER_ORIGIN if ha is not None else "",
    )
    if ha is None or office is None or records is None:
        requests = PeerRequests(engine=engine, frontend=placement)
        return TaskParts(router, delegations, placement, placement, requests, None)
    controller = HaController(
        engine=engine,
        consensus=ha.consensus,
        office=office,
        records=records,
        delegations=delegations,
        peers=peers,
        fence=ha.fence,
        metrics=metrics,
        forward=ha.forward,
        on_change=ha.on_change,
        retention=ha.retention,
        hold_timeout=ha.hold_timeout,
    )
    relay = StandbyRelay(placement=placement, engine=engine, standby=controller)
    requests = PeerRequests(engine=engine, frontend=relay, admit=controller.admit)
    return TaskParts(router, delegations, placement, relay, requests, controller)


def _never() -> bool:
    return False


def _unfenced() -> int:
    return 0
