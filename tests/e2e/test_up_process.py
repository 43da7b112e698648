"""End to end: ``praxis up`` as a new user runs it, from any directory: the
global flags after the subcommand, the shipped roles (distinct tools, so a
task is delegated at once), contract tools from the install, progress on
stderr, and ``--json`` output that matches grpcurl's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from praxis_grpc.client import PraxisClient

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def praxis(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "praxis_grpc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@contextlib.contextmanager
def up(command: list[str], cwd: Path) -> Iterator[tuple[dict[str, Any], subprocess.Popen[str]]]:
    """Run ``command`` (a ``praxis up``) until its JSON line; SIGTERM it after."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            yield json.loads(line), process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_up_json_after_the_subcommand_gives_each_node_a_role(tmp_path: Path) -> None:
    # issue 15: `praxis up --nodes 3 --json` exited 2; every node offered the
    # same tools; data_stats only appeared when run from the repository root.
    command = [sys.executable, "-m", "praxis_grpc", "up", "--nodes", "4", "--json"]
    command += ["--dir", str(tmp_path / "up")]
    with up(command, cwd=tmp_path) as (document, process):
        nodes = {node["name"]: node for node in document["nodes"]}
        assert list(nodes) == ["orchestrator", "agent1", "agent2", "worker-analytics"]
        assert nodes["orchestrator"]["tools"] == ["system_info"]
        assert set(nodes["agent1"]["tools"]) >= {"calculator", "echo", "sleep"}
        assert set(nodes["worker-analytics"]["tools"]) == {"text_analyzer", "data_stats"}
        entry = nodes["orchestrator"]["grpc"]
        ids = {node["agent_id"]: name for name, node in nodes.items()}
        with PraxisClient(entry) as client:
            calc = client.submit("calculator", {"expression": "6*7"}, wait=True).task
            stats = client.submit("data_stats", {"values": [1, 2, 3]}, wait=True).task
        assert ids[calc.owner_agent_id] in {"agent1", "agent2"}
        assert ids[stats.owner_agent_id] == "worker-analytics"
        assert stats.result["mean"] == 2

        # One output convention: what grpcurl prints, whole numbers as integers.
        shown = praxis("--target", entry, "task", "get", calc.task_id, "--json", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        ours = json.loads(shown.stdout)
        assert ours["result"]["result"] == 42
        assert re.search(r'"result": 42[,}]', shown.stdout), shown.stdout
        if Path(GRPCURL).exists():
            request = json.dumps({"task_id": calc.task_id})
            theirs = subprocess.run(
                [GRPCURL, "-plaintext", "-d", request, entry, "praxis.v1.TaskService/GetTask"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert json.loads(theirs.stdout)["task"] == ours
        listed = praxis("tasks", "--json", "-t", entry, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert {task["task_id"] for task in json.loads(listed.stdout)} == {
            calc.task_id,
            stats.task_id,
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        progress = process.stderr.read()
        for name in nodes:
            assert f"praxis up: {name}: starting" in progress
            assert f"praxis up: {name}: in the mesh" in progress


@pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "praxis").exists(),
    reason="scripts/run needs the repository's .venv (scripts/test creates it)",
)
def test_scripts_run_passes_json_to_praxis_up(tmp_path: Path) -> None:
    # issue 15: `scripts/run --json` exited 2 (it runs `praxis up --json`).
    command = [str(ROOT / "scripts" / "run"), "--json", "--dir", str(tmp_path / "up")]
    with up(command, cwd=tmp_path) as (document, _):
        assert [node["name"] for node in document["nodes"]] == ["orchestrator", "agent1", "agent2"]
