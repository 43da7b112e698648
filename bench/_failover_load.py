"""Accepted tasks/s on fresh clusters: wait for quiet, load, time the backlog.

Each run is one :mod:`bench._accept_load` process against some nodes of a
cluster started for the load alone (no failover has happened on it). The
tasks every node lists as SUBMITTED or WORKING before the run are noted and
not counted as its backlog. After the load the run waits (bounded) until no
node lists any other unfinished task: the time the cluster needed to execute
what it accepted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench._accept_load import accept_load_process
from bench._common import progress
from bench._failover_report import LoadRow
from bench._ha_cluster import HaMesh, coordinator
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.client import PraxisClient
from praxis_grpc.launcher import LaunchError, LocalMesh, NodeProcess
from praxis_grpc.testing.etcd_cluster import EtcdClusterError

_UNFINISHED = [types_pb2.TASK_STATE_SUBMITTED, types_pb2.TASK_STATE_WORKING]
_IDLE_POLL = 0.1
_PAGE = 1000
_WARMUP_S = 1.0


@dataclass(frozen=True)
class LoadSettings:
    """How each load run goes.

    Attributes:
        clients: Concurrent SubmitTask coroutines.
        seconds: Measured seconds (after one second of warm-up).
        settle_timeout: Bound on waiting for the backlog to finish.
        launch_timeout: Bound on starting a cluster and finding its coordinator.
    """

    clients: int
    seconds: float
    settle_timeout: float
    launch_timeout: float


def unfinished(nodes: Sequence[NodeProcess]) -> set[tuple[str, str]]:
    """(node, task id) of every task a node lists as SUBMITTED or WORKING."""
    found: set[tuple[str, str]] = set()
    for node in nodes:
        with PraxisClient(node.grpc, timeout=5) as client:
            token = ""
            while True:
                page = client.list_tasks(
                    _UNFINISHED, page_size=_PAGE, page_token=token, local_only=True
                )
                found.update((node.name, task.task_id) for task in page.tasks)
                token = page.next_page_token
                if not token:
                    break
    return found


def wait_idle(
    nodes: Sequence[NodeProcess], within: float, ignore: set[tuple[str, str]]
) -> float | None:
    """Seconds until no node lists an unfinished task outside ``ignore`` (None: not within)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            if not unfinished(nodes) - ignore:
                return time.monotonic() - start
        except grpc.RpcError:
            pass
        time.sleep(_IDLE_POLL)
    return None


def measure_load(
    label: str,
    where: str,
    nodes: Sequence[NodeProcess],
    targets: Sequence[NodeProcess],
    settings: LoadSettings,
) -> LoadRow:
    """One load run spread over ``targets``; then how long ``nodes`` took to finish it."""
    row = LoadRow(label, where)
    try:
        before = unfinished(nodes)
        row.unfinished_before = len(before)
        row.load = accept_load_process(
            [node.grpc for node in targets], settings.clients, settings.seconds, _WARMUP_S
        )
    except (RuntimeError, grpc.RpcError) as exc:
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return row
    row.drained_s = wait_idle(nodes, settings.settle_timeout, before)
    progress(f"load {label} at {where}: {row.load.rps:.0f} accepted/s, {row.load.errors} errors")
    return row


def active_passive_load(
    root: Path, base: Mapping[str, Any], backend: str, settings: LoadSettings
) -> list[LoadRow]:
    """Load at the coordinator, then at a standby, of a fresh 3-node active-passive cluster.

    etcd runs on LocalMesh's own local etcd cluster with the default lease.
    """
    label = f"active-passive {backend}"
    mesh = HaMesh(root / f"load-{backend}", 3, base, mode="active-passive", backend=backend)
    try:
        mesh.start(settings.launch_timeout)
        lead = coordinator(mesh, settings.launch_timeout)
        chosen = next(node for node in mesh.nodes if node.name == lead.name)
        standby = next(node for node in mesh.nodes if node is not chosen)
        return [
            measure_load(label, f"coordinator ({chosen.name})", mesh.nodes, [chosen], settings),
            measure_load(label, f"standby ({standby.name})", mesh.nodes, [standby], settings),
        ]
    except (LaunchError, EtcdClusterError, OSError, grpc.RpcError) as exc:
        return [LoadRow(label, "coordinator", error=f"{type(exc).__name__}: {exc}")]
    finally:
        mesh.stop()


def active_active_load(root: Path, base: Mapping[str, Any], settings: LoadSettings) -> LoadRow:
    """Load spread over a fresh 3-node active-active mesh."""
    where = "all 3 nodes"
    mesh = LocalMesh(root / "active-active", 3, base)
    try:
        mesh.start(settings.launch_timeout)
        return measure_load("active-active", where, mesh.nodes, mesh.nodes, settings)
    except (LaunchError, OSError, grpc.RpcError) as exc:
        return LoadRow("active-active", where, error=f"{type(exc).__name__}: {exc}")
    finally:
        mesh.stop()
