"""Active-passive clusters of node processes for the failover benchmark.

:class:`HaMesh` is :class:`praxis_grpc.launcher.LocalMesh` in active-passive
mode with two additions: the etcd lease TTL written into every node's config
(``ha.consensus.etcd.lease_ttl``), and optionally a local etcd cluster with
other heartbeat/election settings than the ones ``LocalMesh`` picks. Without
``etcd_timing`` the etcd cluster is LocalMesh's own.

:func:`restart` starts a killed node again from its own config file. Its
libp2p port is ephemeral, so the peers it bootstrapped from may have moved
(node1 bootstraps from nobody): the restart passes the survivors' current
addresses as ``PRAXIS_P2P__BOOTSTRAP_NODES``, the documented environment
override, and leaves the file untouched.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from typing import Any

import grpc
import psutil

from bench._common import busy_seconds, interrupts_deferred
from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from praxis_grpc.client import PraxisClient
from praxis_grpc.launcher import LaunchError, LocalMesh, NodeProcess, start_node, wait_ready
from praxis_grpc.testing.etcd_cluster import EtcdCluster

_RPC_TIMEOUT = 2.0


@dataclass
class HaMesh(LocalMesh):
    """A LocalMesh whose etcd lease TTL (and optionally etcd timing) the benchmark chooses.

    Attributes:
        lease_ttl: ``ha.consensus.etcd.lease_ttl`` for every node; None keeps
            the config default.
        etcd_timing: (heartbeat, election timeout) in seconds of the local etcd
            cluster; None uses LocalMesh's.
    """

    lease_ttl: int | None = None
    etcd_timing: tuple[float, float] | None = None

    def _prepare_ha(self) -> None:
        if self.backend == "etcd" and self.etcd_timing is not None:
            heartbeat, election = self.etcd_timing
            self._etcd = EtcdCluster(3, heartbeat=heartbeat, election_timeout=election)
            self._etcd.start()
            consensus = {"backend": "etcd", "etcd": {"endpoints": self._etcd.endpoints}}
            self._ha = {"mode": self.mode, "consensus": consensus}
        else:
            super()._prepare_ha()
        if self.backend == "etcd" and self.lease_ttl is not None:
            self._ha["consensus"]["etcd"]["lease_ttl"] = self.lease_ttl

    def _spawn(self, index: int, bootstrap: list[str]) -> NodeProcess:
        node = super()._spawn(index, bootstrap)
        self.spawned(node)
        return node

    def spawned(self, node: NodeProcess) -> None:
        """Called right after a node process is spawned (also by :func:`restart`), before
        it is ready; subclasses override it (the nemesis benchmark puts it in a cgroup)."""

    @property
    def etcd(self) -> EtcdCluster | None:
        """The local etcd cluster (etcd backend, while started)."""
        cluster: EtcdCluster | None = self._etcd
        return cluster


@dataclass(frozen=True)
class AgentView:
    """What one node's GetAgent says about the cluster."""

    name: str
    agent_id: str
    role: str
    leader_agent_id: str
    term: int


ROLE_NAMES = {1: "peer", 2: "coordinator", 3: "standby"}


def agent_view(node: NodeProcess) -> AgentView:
    """GetAgent of ``node`` (raises grpc.RpcError)."""
    with PraxisClient(node.grpc, timeout=_RPC_TIMEOUT) as client:
        agent = client.get_agent()
    return AgentView(
        node.name,
        agent.agent_id,
        ROLE_NAMES.get(agent.role, ""),
        agent.leader_agent_id,
        agent.term,
    )


def coordinator(mesh: LocalMesh, timeout: float) -> AgentView:
    """The coordinator once exactly one node is it and the others are standbys."""
    name = mesh.wait_coordinator(timeout)
    view = agent_view(next(node for node in mesh.nodes if node.name == name))
    if view.role != "coordinator":
        raise LaunchError(f"{name} stopped coordinating right after it was elected")
    return view


def restart(mesh: LocalMesh, dead: NodeProcess, timeout: float) -> float:
    """Start ``dead`` again from its config; wait until it serves and the cluster is whole.

    Whole: one coordinator, every other node a standby, and every node
    connected to every other over libp2p and listing all cards.

    Returns:
        Seconds from the spawn until all of that held.

    Raises:
        LaunchError: the node exited or the cluster was not whole in time.
    """
    seeds = [
        address
        for node in mesh.nodes
        if node is not dead and node.process.poll() is None
        for address in list(node.info.get("p2p", []))[:1]
    ]
    started = time.monotonic()
    with interrupts_deferred():
        node = start_node(
            dead.config_path,
            dead.ready_file,
            dead.log_path,
            dead.name,
            env={"PRAXIS_P2P__BOOTSTRAP_NODES": json.dumps(seeds)},
        )
        if isinstance(mesh, HaMesh):
            mesh.spawned(node)
        mesh.nodes[mesh.nodes.index(dead)] = node
    wait_ready([node], timeout)
    mesh.wait_coordinator(timeout)
    mesh.wait_meshed(timeout)
    return time.monotonic() - started


def granted_lease_ttls(etcd: EtcdCluster) -> list[int]:
    """The TTLs etcd granted to the live leases (praxis members' sessions), sorted.

    etcd raises a requested TTL to its minimum, 1.5 election timeouts rounded
    up to whole seconds, so this can exceed ``lease_ttl``.
    """
    for endpoint in etcd.endpoints:
        try:
            with grpc.insecure_channel(endpoint) as channel:
                stub: Any = rpc_pb2_grpc.LeaseStub(channel)
                leases = stub.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=_RPC_TIMEOUT)
                ttls = [
                    int(
                        stub.LeaseTimeToLive(
                            rpc_pb2.LeaseTimeToLiveRequest(ID=lease.ID), timeout=_RPC_TIMEOUT
                        ).grantedTTL
                    )
                    for lease in leases.leases
                ]
        except grpc.RpcError:
            continue
        return sorted(ttls)
    return []


class OtherCpu:
    """CPU that processes other than this one and its children used over a window.

    Children come and go here (nodes are killed and restarted), so "ours" is
    this process, its live descendants and its reaped children.
    """

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._busy, self._ours = busy_seconds(), _our_seconds()

    def percent(self) -> float:
        """Other processes' CPU since the start, in % of one core."""
        wall = max(time.monotonic() - self._start, 1e-9)
        other = busy_seconds() - self._busy - (_our_seconds() - self._ours)
        return max(100.0 * other / wall, 0.0)


def _our_seconds() -> float:
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + reaped.ru_utime + reaped.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
