"""The role configs (``configs/``) and contract tools (``tools/``) shipped
beside the package, found from the install rather than the working directory.

``praxis up`` gives its nodes these roles in turn, so a local mesh shows at
once what the mesh is for: the tools differ between nodes and a task
submitted anywhere runs where its tool is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The checkout (or editable install) the package lives in.
INSTALL_ROOT = Path(__file__).resolve().parent.parent
#: The role configs of the original design.
CONFIGS_DIR = INSTALL_ROOT / "configs"
#: The example contract tools (``data_stats``).
TOOLS_DIR = INSTALL_ROOT / "tools"
#: The order in which ``praxis up`` hands out roles (then again from the start).
ROLE_ORDER = ("orchestrator", "agent1", "agent2", "worker_analytics", "worker_filesystem")

# Where a node listens, stores its state and finds its peers is the
# launcher's to choose; a role is what the node offers and how it routes.
_PLACEMENT = {
    "api": ("host", "port", "advertise_host"),
    "tools": ("sandbox_root",),
    "tasks": ("store",),
}
_NOT_ROLE = ("data_dir", "metrics", "p2p", "ha")


class RolesUnavailable(Exception):
    """The role configs are not where the install keeps them."""


@dataclass(frozen=True)
class Role:
    """One node's role: its agent name and the config sections it brings."""

    name: str
    source: Path
    config: Mapping[str, Any]

    @property
    def tools(self) -> list[str]:
        """The built-in tools it offers (contract tools come on top)."""
        return list(self.config.get("tools", {}).get("builtins", []))


def load_role(path: Path, tools_dir: Path) -> Role:
    """The role a config file describes.

    Its ``tools.contracts_dir`` (relative to the working directory in the
    file) becomes ``tools_dir``; placement keys (ports, data and sandbox
    directories, discovery, HA) are dropped.
    """
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    config = {k: copy.deepcopy(v) for k, v in raw.items() if k not in _NOT_ROLE}
    for section, keys in _PLACEMENT.items():
        for key in keys:
            config.get(section, {}).pop(key, None)
    tools = config.get("tools", {})
    if tools.get("contracts_dir"):
        tools["contracts_dir"] = str(tools_dir.resolve())
    name = str(config.get("agent", {}).get("name") or path.stem)
    return Role(name, path, config)


def roles(count: int, configs_dir: Path = CONFIGS_DIR, tools_dir: Path = TOOLS_DIR) -> list[Role]:
    """``count`` roles in :data:`ROLE_ORDER`, cycling; repeats are named ``<name>-2``, ...

    Raises:
        RolesUnavailable: a role's config file is missing.
    """
    missing = [name for name in ROLE_ORDER if not (configs_dir / f"{name}.yaml").is_file()]
    if missing:
        raise RolesUnavailable(
            f"no role configs ({', '.join(missing)}) in {configs_dir}; pass --config FILE"
        )
    result = []
    for index in range(count):
        role = load_role(configs_dir / f"{ROLE_ORDER[index % len(ROLE_ORDER)]}.yaml", tools_dir)
        lap = index // len(ROLE_ORDER)
        if lap:
            name = f"{role.name}-{lap + 1}"
            config = {**role.config, "agent": {**role.config.get("agent", {}), "name": name}}
            role = Role(name, role.source, config)
        result.append(role)
    return result
