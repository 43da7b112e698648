"""Start and supervise a local mesh of node processes (``praxis up`` and test
fixtures). One process's helpers (config, spawn, readiness, stop) are in
:mod:`praxis_grpc.node_process`, re-exported here.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from praxis_grpc.node_process import (
    DEFAULT_BUILTINS,
    LaunchError,
    NodeProcess,
    Progress,
    layered,
    node_config,
    start_node,
    stop_nodes,
    wait_ready,
    write_ready_file,
)
from praxis_grpc.shipped import Role

if TYPE_CHECKING:
    from praxis_grpc.credentials import ClientCredentials
    from praxis_grpc.secure_setup import SecureSetup

__all__ = [
    "DEFAULT_BUILTINS",
    "LaunchError",
    "LocalMesh",
    "NodeProcess",
    "Progress",
    "layered",
    "node_config",
    "start_node",
    "stop_nodes",
    "wait_ready",
    "write_ready_file",
]


@dataclass
class LocalMesh:
    """N local nodes started from generated configs under ``root``.

    ``mode``/``backend`` choose the HA topology: ``active-passive`` with
    ``raft`` gives every node a Raft address and a shared secret; with
    ``etcd`` a local 3-member etcd cluster (the ``etcd`` binary) is started
    first and stopped last. With ``node_roles`` the i-th node takes the
    i-th role's name and config (layered over ``base``); else it is ``node<i>``.
    ``progress`` hears each node start, become ready, join the mesh.
    """

    root: Path
    count: int
    base: Mapping[str, Any] | None = None
    mode: str = "active-active"
    backend: str = "none"
    node_roles: Sequence[Role] = ()
    progress: Progress | None = None
    security: SecureSetup | None = None
    nodes: list[NodeProcess] = field(default_factory=list)
    _ha: dict[str, Any] = field(default_factory=dict)
    _raft_addresses: list[str] = field(default_factory=list)
    _etcd: Any = None

    def start(self, timeout: float = 60.0) -> list[NodeProcess]:
        """Write configs and spawn the nodes; wait until all are ready.

        node1 starts first; the others bootstrap from its libp2p address, so
        with discovery on they form one mesh. In active-passive mode this also
        waits until one node is the coordinator.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._prepare_ha()
            first = self._spawn(1, bootstrap=[])
            wait_ready([first], timeout, self.progress)
            seeds = list(first.info.get("p2p", []))[:1]
            rest = [self._spawn(index, seeds) for index in range(2, self.count + 1)]
            wait_ready(rest, timeout, self.progress)
            if (self.base or {}).get("p2p", {}).get("enabled", True):
                self.wait_meshed(timeout)
            if self.mode == "active-passive":
                self.wait_coordinator(timeout)
        except BaseException:
            self.stop()
            raise
        return self.nodes

    def _prepare_ha(self) -> None:
        if self.mode == "active-active":
            return
        consensus: dict[str, Any] = {"backend": self.backend}
        if self.backend == "raft":
            secret = self.root / "raft.secret"
            if not secret.exists():
                secret.write_text(secrets.token_hex(32) + "\n")
                secret.chmod(0o600)
            self._raft_addresses = [f"127.0.0.1:{port}" for port in _free_ports(self.count)]
            consensus["raft"] = {"secret_file": str(secret.resolve())}
        elif self.backend == "etcd":
            from praxis_grpc.consensus.local_etcd import EtcdCluster

            self._etcd = EtcdCluster(3, heartbeat=0.1, election_timeout=1.0)
            self._etcd.start()
            consensus["etcd"] = {"endpoints": self._etcd.endpoints}
        else:
            raise LaunchError(f"--backend {self.backend!r}: active-passive needs raft or etcd")
        self._ha = {"mode": self.mode, "consensus": consensus}

    def _spawn(self, index: int, bootstrap: list[str]) -> NodeProcess:
        base = self.base
        if self.node_roles:
            role = self.node_roles[(index - 1) % len(self.node_roles)]
            name, base = role.name, layered(self.base, role.config)
        else:
            name = f"node{index}"
        node_dir = (self.root / name).resolve()
        config = node_config(name, node_dir, base)
        if self.security is not None:
            config = layered(config, self.security.node_overlay(name, node_dir))
        p2p = config.setdefault("p2p", {})
        p2p.setdefault("port", 0)
        if bootstrap and not p2p.get("bootstrap_nodes"):
            p2p["bootstrap_nodes"] = bootstrap
        config.pop("ha", None)
        if self._ha:
            ha = json.loads(json.dumps(self._ha))
            if self._raft_addresses:
                me = self._raft_addresses[index - 1]
                ha["consensus"]["raft"]["address"] = me
                ha["consensus"]["raft"]["peers"] = [a for a in self._raft_addresses if a != me]
            config["ha"] = ha
        config_path = self.root / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        node = start_node(config_path, node_dir / "ready.json", node_dir / "node.log", name)
        self.nodes.append(node)
        if self.progress is not None:
            self.progress(name, "starting")
        return node

    def switch(self, mode: str, backend: str, timeout: float = 60.0) -> None:
        """Change the HA topology with a rolling restart, one node at a time.

        Each node is stopped with SIGTERM (it drains), its config is rewritten
        with the new ``ha`` section and it is started again before the next
        one goes; in active-passive mode this finally waits for a coordinator.
        """
        if self._etcd is not None:
            self._etcd.close()
            self._etcd = None
        self.mode, self.backend = mode, backend
        self._ha, self._raft_addresses = {}, []
        self._prepare_ha()
        for position, node in enumerate(list(self.nodes)):
            stop_nodes([node])
            seeds = [
                address
                for other in self.nodes
                if other is not node and other.process.poll() is None
                for address in list(other.info.get("p2p", []))[:1]
            ]
            self.nodes.remove(node)
            restarted = self._spawn(position + 1, seeds)
            self.nodes.remove(restarted)
            self.nodes.insert(position, restarted)
            wait_ready([restarted], timeout)
        if mode == "active-passive":
            self.wait_coordinator(timeout)

    def roles(self) -> dict[str, str]:
        """Each node's role (``peer``, ``coordinator``, ``standby``; "" if unreachable)."""
        from praxis_grpc.client import PraxisClient

        found: dict[str, str] = {}
        for node in self.nodes:
            try:
                with PraxisClient(node.grpc, timeout=2, credentials=self._credentials()) as client:
                    role = client.get_agent().role
                found[node.name] = _ROLE_NAMES.get(role, "")
            except Exception:
                found[node.name] = ""
        return found

    def tools(self) -> dict[str, list[str]]:
        """The tools each node's own card offers ([] if unreachable)."""
        from praxis_grpc._gen.praxis.v1 import card_service_pb2
        from praxis_grpc.client import PraxisClient

        found: dict[str, list[str]] = {}
        for node in self.nodes:
            try:
                with PraxisClient(node.grpc, timeout=2, credentials=self._credentials()) as client:
                    request = card_service_pb2.GetCardRequest()
                    card = client.cards_stub.GetCard(request, timeout=2).card
                found[node.name] = [tool.name for tool in card.tools]
            except Exception:
                found[node.name] = []
        return found

    def _credentials(self) -> ClientCredentials | None:
        return self.security.client() if self.security is not None else None

    def wait_meshed(self, timeout: float = 60.0) -> None:
        """Block until every node lists all cards and knows every node alive.

        With SWIM (the default) "knows" means its member table lists all N
        alive: a node keeps connections to a bounded set of neighbours
        (``p2p.max_peers``), so in a mesh larger than that no node is
        connected to every other. Without a member table, every node must
        be connected to every other.

        Raises:
            LaunchError: not within ``timeout``.
        """
        from praxis_grpc._gen.praxis.v1 import agent_service_pb2
        from praxis_grpc.client import PraxisClient

        names = {node.name for node in self.nodes}

        def meshed(node: NodeProcess) -> bool:
            try:
                with PraxisClient(node.grpc, timeout=2, credentials=self._credentials()) as client:
                    cards = {card.name for card in client.list_cards()}
                    peers, members = client.list_peers_and_members()
            except Exception:
                return False
            if not members:
                return cards >= names and len(peers) >= len(names) - 1
            alive = [m for m in members if m.state == agent_service_pb2.MEMBER_STATE_ALIVE]
            return cards >= names and len(alive) >= len(names)

        deadline = time.monotonic() + timeout
        done: set[str] = set()
        while len(done) < len(self.nodes):
            for node in self.nodes:
                if node.name not in done and meshed(node):
                    done.add(node.name)
                    if self.progress is not None:
                        self.progress(node.name, "meshed")
            if len(done) < len(self.nodes):
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"the {len(names)} nodes did not form a mesh within {timeout:g}s"
                    )
                time.sleep(0.1)

    def wait_coordinator(self, timeout: float = 60.0) -> str:
        """Block until exactly one node is the coordinator; return its name.

        Raises:
            LaunchError: no coordinator within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = self.roles()
            leaders = [name for name, role in roles.items() if role == "coordinator"]
            if len(leaders) == 1 and all(r in ("coordinator", "standby") for r in roles.values()):
                return leaders[0]
            time.sleep(0.1)
        raise LaunchError(f"no coordinator elected within {timeout:g}s: {self.roles()}")

    def stop(self) -> dict[str, int]:
        """Stop every node (and the local etcd cluster, if any)."""
        codes = stop_nodes(self.nodes)
        if self._etcd is not None:
            self._etcd.close()
            self._etcd = None
        return codes

    def describe(self) -> dict[str, Any]:
        """The ``praxis up --json`` document."""
        roles, tools = self.roles(), self.tools()
        document: dict[str, Any] = {
            "nodes": [
                {
                    "name": node.name,
                    "agent_id": node.info.get("agent_id", ""),
                    "pid": node.pid,
                    "grpc": node.info.get("grpc", ""),
                    "metrics": node.info.get("metrics") or "",
                    "p2p": node.info.get("p2p", []),
                    "role": roles.get(node.name, ""),
                    "tools": tools.get(node.name, []),
                }
                for node in self.nodes
            ]
        }
        if self._etcd is not None:
            document["etcd"] = self._etcd.endpoints
        if self.security is not None:
            document["ca_cert"] = str(self.security.ca_cert.resolve())
            document["tokens"] = str(self.security.tokens_text.resolve())
        return document


_ROLE_NAMES = {1: "peer", 2: "coordinator", 3: "standby"}


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are bound so the ports are distinct.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
