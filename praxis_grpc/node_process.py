"""One local node process: its config on ephemeral ports, spawning it,
waiting until it is ready and stopping it (``praxis up``, tests, benchmarks).

Each node is a separate ``praxis node`` process on ephemeral ports. A node
reports readiness by writing a *ready file* (JSON: name, agent_id, pid, grpc,
metrics, p2p) once it serves; the launcher waits for those files instead of
guessing ports, so there is no race for free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_BUILTINS",
    "LaunchError",
    "NodeProcess",
    "Progress",
    "layered",
    "node_config",
    "start_node",
    "stop_nodes",
    "wait_ready",
    "write_ready_file",
]

#: ``progress(node_name, what)``: told as the nodes of a mesh start.
Progress = Callable[[str, str], None]

DEFAULT_BUILTINS = ("calculator", "text_analyzer", "json_formatter", "file_merger", "system_info")


class LaunchError(Exception):
    """A node failed to start; the message includes the tail of its log."""


@dataclass
class NodeProcess:
    """A running node process."""

    name: str
    config_path: Path
    ready_file: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def grpc(self) -> str:
        """host:port of the gRPC server (after ready)."""
        return str(self.info["grpc"])

    @property
    def metrics(self) -> str | None:
        """host:port of /metrics (after ready), if enabled."""
        value = self.info.get("metrics")
        return str(value) if value else None

    def tail(self, lines: int = 20) -> str:
        """The last lines of the node's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def write_ready_file(path: Path, info: Mapping[str, Any]) -> None:
    """Atomically write the ready file a launcher waits for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(info)))
    os.replace(tmp, path)


def node_config(
    name: str, data_dir: Path, base: Mapping[str, Any] | None = None, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """A config for a local node on ephemeral ports, layered over ``base``.

    Contract tools come only from a ``tools.contracts_dir`` in ``base``, never
    from the working directory.
    """
    config: dict[str, Any] = json.loads(json.dumps(dict(base or {})))
    config["data_dir"] = str(data_dir)
    config.setdefault("agent", {})["name"] = name
    config.setdefault("api", {}).update({"host": host, "port": 0})
    config.setdefault("metrics", {}).update({"host": host, "port": 0})
    config.setdefault("tools", {}).setdefault("builtins", list(DEFAULT_BUILTINS))
    return config


def layered(base: Mapping[str, Any] | None, top: Mapping[str, Any]) -> dict[str, Any]:
    """``top``'s sections over ``base``'s, key by key within a section."""
    merged: dict[str, Any] = json.loads(json.dumps(dict(base or {})))
    for section, values in top.items():
        if isinstance(values, Mapping) and isinstance(merged.get(section), dict):
            merged[section].update(json.loads(json.dumps(dict(values))))
        else:
            merged[section] = json.loads(json.dumps(values))
    return merged


def start_node(
    config_path: Path,
    ready_file: Path,
    log_path: Path,
    name: str,
    env: Mapping[str, str] | None = None,
) -> NodeProcess:
    """Spawn ``praxis node`` for ``config_path`` (does not wait for readiness)."""
    ready_file.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "praxis_grpc",
        "node",
        "--config",
        str(config_path),
        "--ready-file",
        str(ready_file),
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return NodeProcess(name, config_path, ready_file, log_path, process)


def wait_ready(
    nodes: Iterable[NodeProcess], timeout: float = 60.0, progress: Progress | None = None
) -> None:
    """Block until every node wrote its ready file (``progress(name, "ready")`` each).

    Raises:
        LaunchError: a node exited or the timeout passed.
    """
    pending = list(nodes)
    deadline = time.monotonic() + timeout
    while pending:
        for node in list(pending):
            if node.ready_file.exists():
                node.info = json.loads(node.ready_file.read_text())
                pending.remove(node)
                if progress is not None:
                    progress(node.name, "ready")
            elif node.process.poll() is not None:
                raise LaunchError(
                    f"node {node.name} exited with code {node.process.returncode}:\n{node.tail()}"
                )
        if pending and time.monotonic() > deadline:
            names = ", ".join(n.name for n in pending)
            raise LaunchError(f"nodes not ready after {timeout:g}s: {names}")
        if pending:
            time.sleep(0.05)


def stop_nodes(nodes: Iterable[NodeProcess], timeout: float = 40.0) -> dict[str, int]:
    """SIGTERM every live node, wait for them to drain, SIGKILL stragglers.

    Returns:
        Exit codes by node name.
    """
    nodes = list(nodes)
    for node in nodes:
        if node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
    codes = {}
    deadline = time.monotonic() + timeout
    for node in nodes:
        try:
            codes[node.name] = node.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            node.process.kill()
            codes[node.name] = node.process.wait()
    return codes
