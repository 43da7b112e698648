"""Start nodes for tests: in-process (same event loop) or as real processes.

Every node binds ephemeral ports (port 0) and reports the bound addresses, so
tests never assume a fixed port is free.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from praxis_grpc.config import Config
from praxis_grpc.launcher import NodeProcess, node_config, start_node, stop_nodes, wait_ready
from praxis_grpc.node import Node

TEST_BUILTINS = [
    "calculator",
    "text_analyzer",
    "json_formatter",
    "file_merger",
    "system_info",
    "echo",
    "sleep",
]


def make_config(data_dir: Path, name: str = "node1", **sections: Mapping[str, Any]) -> Config:
    """A config on ephemeral ports under ``data_dir``; ``sections`` override keys."""
    raw = node_config(
        name, data_dir, {"tools": {"builtins": TEST_BUILTINS}, "p2p": {"enabled": False}}
    )
    for section, values in sections.items():
        if isinstance(values, Mapping):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return Config.model_validate(raw)


@contextlib.asynccontextmanager
async def running_node(config: Config, **plug_points: Any) -> AsyncIterator[Node]:
    """Start a :class:`Node` in this event loop; drain and stop it on exit."""
    node = Node(config, **plug_points)
    try:
        await node.start()
        yield node
    finally:
        await node.aclose(grace=0)


@contextlib.contextmanager
def node_process(
    data_dir: Path,
    name: str = "node1",
    overrides: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[NodeProcess]:
    """Run ``praxis node`` as a subprocess until the block exits (SIGTERM, then SIGKILL).

    With ``config_path`` the file is used as is except for ports and data_dir,
    which are replaced so the test owns its ports and state.
    """
    base: dict[str, Any] = {"tools": {"builtins": TEST_BUILTINS}, "p2p": {"enabled": False}}
    if config_path is not None:
        base = yaml.safe_load(config_path.read_text()) or {}
        for section, key in (
            ("api", "port"),
            ("metrics", "port"),
            ("tools", "sandbox_root"),
            ("tasks", "store"),
            ("p2p", "key_file"),
            ("p2p", "port"),
            ("p2p", "bootstrap_nodes"),
        ):
            base.setdefault(section, {}).pop(key, None)
        # Tests own their peers: no multicast discovery of other tests' nodes.
        base["p2p"]["enable_mdns"] = False
    for section, values in (overrides or {}).items():
        base.setdefault(section, {}).update(values)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(node_config(name, data_dir / name, base), sort_keys=False))
    process = start_node(path, data_dir / name / "ready.json", data_dir / f"{name}.log", name)
    try:
        wait_ready([process], timeout)
        yield process
    finally:
        stop_nodes([process], timeout=30)
