"""Clients written from protos/ alone, in other languages, against a live node:
examples/node (``@grpc/grpc-js`` + ``@grpc/proto-loader``). Needs node and
npm (scripts/test installs them; skips without, except under CI=true); the
npm packages are installed once per lockfile under .praxis/npm.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from praxis_grpc.launcher import NodeProcess
from praxis_grpc.testing import node_process
from praxis_grpc.testing.system_tools import npm_install, require_tool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = ROOT / "examples" / "node"
NPM_CACHE = ROOT / ".praxis" / "npm"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return npm_install(NODE_EXAMPLE, NPM_CACHE)


@pytest.fixture(scope="module")
def praxis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with node_process(tmp_path_factory.mktemp("node"), "js-target") as process:
        yield process


def run_node_client(node_modules: Path, target: str, *args: str) -> dict[str, Any]:
    node = require_tool("node", "apt-get install nodejs")
    result = subprocess.run(
        [node, str(NODE_EXAMPLE / "client.js"), "--target", target, *args],
        env={**os.environ, "NODE_PATH": str(node_modules)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_node_client_submits_watches_and_lists_cards(
    node_modules: Path, praxis: NodeProcess
) -> None:
    out = run_node_client(node_modules, praxis.grpc, "calculator", '{"expression": "6*7"}')
    assert out["state"] == "TASK_STATE_COMPLETED"
    assert out["states"][-1] == "TASK_STATE_COMPLETED"
    assert out["result"]["result"] == 42
    (card,) = out["cards"]
    assert card["name"] == "js-target"
    assert {"calculator", "echo", "sleep"} <= set(card["tools"])


def test_node_client_struct_values_round_trip(node_modules: Path, praxis: NodeProcess) -> None:
    arguments = {"text": "héllo", "n": 2.5, "flag": True, "none": None, "list": [1, "a", {"b": 0}]}
    out = run_node_client(node_modules, praxis.grpc, "echo", json.dumps(arguments))
    assert out["state"] == "TASK_STATE_COMPLETED"
    assert out["arguments"] == arguments
    assert out["result"]["echo"] == arguments


def test_snake_case_struct_members_arrive_empty(node_modules: Path, praxis: NodeProcess) -> None:
    """The proto-loader trap the README warns about: with keepCase: true the
    bundled struct.proto still wants camelCase Value members."""
    out = run_node_client(
        node_modules, praxis.grpc, "--snake-case-struct", "echo", '{"text": "hi", "n": 3}'
    )
    assert out["state"] == "TASK_STATE_COMPLETED"
    assert out["arguments"] == {"text": None, "n": None}
