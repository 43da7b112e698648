"""Meshes of real ``praxis node`` processes with per-node configs, for the benchmarks.

:class:`Cluster` starts the first node, then the rest bootstrapping from its
libp2p address (127.0.0.1, ephemeral ports), the way
:class:`praxis_grpc.launcher.LocalMesh` does, except that every node gets its
own config overrides (tools, concurrency, routing strategy). Every process
is recorded the moment it is spawned and :meth:`Cluster.stop` stops each one
by its pid, so an interrupt never leaves a node behind.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from bench._common import interrupts_deferred
from praxis_grpc._gen.praxis.v1 import card_service_pb2, card_service_pb2_grpc, types_pb2
from praxis_grpc.credentials import ClientCredentials
from praxis_grpc.launcher import NodeProcess, node_config, start_node, stop_nodes, wait_ready

_LOG_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (.*)$")
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_CHAINED = ("The above exception", "During handling of the above exception")
_LOG_NOISE = re.compile(
    r"12D3KooW\w+|Qm\w{44}|/ip[46]/\S+|0x[0-9a-f]+|"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b\d+(\.\d+)?\b"
)
_POLL_INTERVAL = 0.1
_RPC_TIMEOUT = 2.0


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, nested mappings merged key by key."""
    result = dict(base)
    for key, value in overrides.items():
        below = result.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            result[key] = merged(below, value)
        else:
            result[key] = value
    return result


def spawn(
    root: Path, name: str, config: Mapping[str, Any], bootstrap: Sequence[str]
) -> NodeProcess:
    """Write ``root/<name>.yaml`` and spawn the node (no readiness wait).

    The config is ``config`` on ephemeral ports with its data under
    ``root/<name>``; a node with ``bootstrap`` addresses and none of its own
    dials them.
    """
    node_dir = (root / name).resolve()
    full = node_config(name, node_dir, config)
    p2p = full.setdefault("p2p", {})
    p2p.setdefault("port", 0)
    if bootstrap and not p2p.get("bootstrap_nodes"):
        p2p["bootstrap_nodes"] = list(bootstrap)
    config_path = root / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(full, sort_keys=False))
    return start_node(config_path, node_dir / "ready.json", node_dir / "node.log", name)


@dataclass
class Cluster:
    """Node processes under ``root``, one config per node name.

    Attributes:
        root: Holds each node's config, data directory and log.
        configs: Node name to config (layered over the launcher's defaults);
            the first node is the one the others bootstrap from.
        nodes: The spawned processes, in spawn order.
    """

    root: Path
    configs: Mapping[str, Mapping[str, Any]]
    nodes: list[NodeProcess] = field(default_factory=list)

    def start(self, timeout: float) -> None:
        """Spawn the first node, wait until it serves, then spawn and wait for the rest.

        Raises:
            praxis_grpc.launcher.LaunchError: a node exited or was not ready in time.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        names = list(self.configs)
        with interrupts_deferred():
            self.nodes.append(spawn(self.root, names[0], self.configs[names[0]], []))
        wait_ready(self.nodes, timeout)
        seeds = list(self.nodes[0].info.get("p2p", []))[:1]
        for name in names[1:]:
            with interrupts_deferred():
                self.nodes.append(spawn(self.root, name, self.configs[name], seeds))
        wait_ready(self.nodes[1:], timeout)

    def node(self, name: str) -> NodeProcess:
        """The node called ``name``."""
        return next(node for node in self.nodes if node.name == name)

    def stop(self) -> dict[str, int]:
        """SIGTERM every node by pid, SIGKILL what is left after the timeout; exit codes."""
        with interrupts_deferred():
            return stop_nodes(self.nodes, timeout=30)


async def wait_for_tool(
    address: str,
    tool: str,
    agents: Iterable[str],
    within: float,
    credentials: ClientCredentials | None = None,
) -> tuple[float, list[types_pb2.AgentCard]]:
    """Poll ``address``'s ``ListCards`` (with ``credentials``: over TLS, with a
    token) until every named agent lists ``tool``.

    Returns:
        Seconds it took and the cards of the last response.

    Raises:
        TimeoutError: not within ``within`` seconds; the message says who was missing.
    """
    wanted = set(agents)
    start = time.monotonic()
    missing = wanted
    async with (credentials or ClientCredentials()).aio_channel(address) as channel:
        cards_stub = card_service_pb2_grpc.CardServiceStub(channel)
        while True:
            try:
                response = await cards_stub.ListCards(
                    card_service_pb2.ListCardsRequest(), timeout=_RPC_TIMEOUT
                )
            except grpc.aio.AioRpcError:
                cards: list[types_pb2.AgentCard] = []
            else:
                cards = list(response.cards)
            offering = {c.name for c in cards if any(t.name == tool for t in c.tools)}
            missing = wanted - offering
            elapsed = time.monotonic() - start
            if not missing:
                return elapsed, cards
            if elapsed >= within:
                raise TimeoutError(
                    f"{address} did not list tool {tool!r} on {', '.join(sorted(missing))} "
                    f"within {within:g}s"
                )
            await asyncio.sleep(_POLL_INTERVAL)


def log_problems(nodes: Iterable[NodeProcess]) -> dict[str, int]:
    """Problems in the node logs, by normalized message.

    Counted: WARNING/ERROR/CRITICAL records, tracebacks (by the exception that
    ends each one) and lines printed outside logging (py-libp2p prints some of
    its connection errors straight to stdout).
    """
    counts: collections.Counter[str] = collections.Counter()
    for node in nodes:
        try:
            text = node.log_path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        in_traceback = False
        for line in text.splitlines():
            match = _LOG_PROBLEM.match(line)
            if match is not None:
                counts[f"{match[1]} {_LOG_NOISE.sub('#', match[2])[:160]}"] += 1
            elif line.startswith("Traceback"):
                in_traceback = True
            elif in_traceback and line and not line[0].isspace():
                # The first unindented line after a traceback names the exception.
                counts[f"Traceback ending {_LOG_NOISE.sub('#', line)[:160]}"] += 1
                in_traceback = False
            elif (
                line
                and not line[0].isspace()
                and not in_traceback
                and not _LOG_RECORD.match(line)
                and not line.startswith(_CHAINED)
            ):
                counts[f"printed {_LOG_NOISE.sub('#', line)[:80]}"] += 1
    return dict(counts)


def problems_since(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The log problems counted in ``after`` beyond those in ``before``."""
    return {key: n - before.get(key, 0) for key, n in after.items() if n > before.get(key, 0)}


def describe_problems(problems: Mapping[str, int], limit: int = 6) -> str:
    """The most frequent problems on one line."""
    top = sorted(problems.items(), key=lambda item: -item[1])[:limit]
    listed = "; ".join(f"{n} x {message}" for message, n in top)
    return f"{sum(problems.values())} lines: {listed}"
