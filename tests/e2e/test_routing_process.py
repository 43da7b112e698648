"""End to end: routing between node processes started from configs/, and what
happens to delegated tasks when a worker or the entry node is killed -9."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.client import PraxisClient
from praxis_grpc.launcher import NodeProcess
from praxis_grpc.testing import eventually, node_process
from praxis_grpc.testing.counting import RunLog, install_counting_tools

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
FAST = {
    "cards": {"heartbeat": "500ms", "ttl": "5s"},
    "p2p": {"disconnect_grace": "500ms", "rendezvous": "", "enable_dht": False},
}


def overrides(*sections: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for section in sections:
        for key, values in section.items():
            merged.setdefault(key, {}).update(values)
    return merged


@pytest.fixture
def count_tool(tmp_path: Path) -> Path:
    """``count`` (idempotent) and ``count_once`` (not idempotent)."""
    return install_counting_tools(tmp_path / "count_tools", {"count": True, "count_once": False})


def bootstrap(node: NodeProcess) -> dict[str, Any]:
    return {"p2p": {"bootstrap_nodes": list(node.info["p2p"])[:1]}}


def cards_at(node: NodeProcess) -> dict[str, types_pb2.AgentCard]:
    with PraxisClient(node.grpc, timeout=5) as client:
        return {card.name: card for card in client.list_cards()}


def sees(node: NodeProcess, names: set[str], timeout: float = 30) -> None:
    eventually(lambda: set(cards_at(node)) >= names, timeout=timeout, what=f"{node.name} sees")


def executions(log: Path, key: str) -> list[tuple[int, str]]:
    return RunLog(log).events(key)


def kill(node: NodeProcess) -> None:
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(timeout=10)


def test_configs_mesh_routes_each_tool_to_the_agent_that_has_it(tmp_path: Path) -> None:
    analytics_tools = {"tools": {"contracts_dir": str(REPO / "tools")}}
    # Only the analytics worker loads the contract tools (data_stats).
    no_contracts = overrides(FAST, {"tools": {"contracts_dir": None}})
    with contextlib.ExitStack() as stack:
        entry = stack.enter_context(
            node_process(tmp_path, "orchestrator", no_contracts, CONFIGS / "orchestrator.yaml")
        )
        joined = overrides(no_contracts, bootstrap(entry))
        stack.enter_context(
            node_process(
                tmp_path,
                "analytics",
                overrides(joined, analytics_tools),
                CONFIGS / "worker_analytics.yaml",
            )
        )
        stack.enter_context(
            node_process(tmp_path, "files", joined, CONFIGS / "worker_filesystem.yaml")
        )
        names = {"orchestrator", "analytics", "files"}  # the launcher names nodes
        sees(entry, names)
        owners = {name: card.agent_id for name, card in cards_at(entry).items()}
        with PraxisClient(entry.grpc) as client:
            placed = {
                tool: client.submit(tool, arguments, wait=True).task
                for tool, arguments in (
                    ("text_analyzer", {"text": "praxis routes tasks"}),
                    ("data_stats", {"values": [1, 2, 3]}),
                    ("json_formatter", {"data": {"b": 1, "a": 2}}),
                    ("system_info", {}),
                )
            }
        for tool, owner in (
            ("text_analyzer", "analytics"),
            ("data_stats", "analytics"),
            ("json_formatter", "files"),
            ("system_info", "orchestrator"),
        ):
            assert placed[tool].state == types_pb2.TASK_STATE_COMPLETED, placed[tool]
            assert placed[tool].owner_agent_id == owners[owner], tool
        assert placed["data_stats"].result["mean"] == 2
        # The CLI against the entry node: submit routes, `tasks` names the owner.
        cli = [sys.executable, "-m", "praxis_grpc", "-t", entry.grpc]
        submitted = subprocess.run(
            [*cli, "--json", "submit", "text_analyzer", "--args", '{"text": "hi"}', "--wait"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(submitted.stdout)["owner_agent_id"] == owners["analytics"]
        listing = subprocess.run(
            [*cli, "tasks"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert " analytics " in listing
        assert " files " in listing


def test_worker_killed_mid_task_the_task_completes_elsewhere(
    tmp_path: Path, count_tool: Path
) -> None:
    log = tmp_path / "executions.log"
    worker = overrides(FAST, {"tools": {"builtins": [], "contracts_dir": str(count_tool)}})
    with contextlib.ExitStack() as stack:
        entry = stack.enter_context(
            node_process(tmp_path, "orchestrator", FAST, CONFIGS / "orchestrator.yaml")
        )
        joined = overrides(worker, bootstrap(entry))
        first = stack.enter_context(
            node_process(tmp_path, "first", joined, CONFIGS / "worker_analytics.yaml")
        )
        second = stack.enter_context(
            node_process(tmp_path, "second", joined, CONFIGS / "worker_analytics.yaml")
        )
        sees(entry, {"first", "second"})
        cards = cards_at(entry)
        with PraxisClient(entry.grpc) as client:
            task = client.submit(
                "count",
                {"seconds": 3, "key": "moved", "log": str(log)},
                preferred_agent=cards["first"].agent_id,
            ).task
            eventually(lambda: executions(log, "moved"), timeout=20, what="first starts the task")
            assert executions(log, "moved") == [(first.pid, "start")]
            states = client.watch_task(task.task_id)
            kill(first)
            final = list(states)[-1]
        assert final.state == types_pb2.TASK_STATE_COMPLETED, final
        assert final.owner_agent_id == cards["second"].agent_id
        assert executions(log, "moved") == [
            (first.pid, "start"),
            (second.pid, "start"),
            (second.pid, "done"),
        ]
        # The killed worker comes back and recovers its copy of the task
        # (idempotent: queued again); the entry node tells it to cancel it.
        back = stack.enter_context(
            node_process(tmp_path, "first", joined, CONFIGS / "worker_analytics.yaml")
        )

        def copy_canceled() -> bool:
            with PraxisClient(back.grpc, timeout=5) as client:
                copy = client.get_task(task.task_id)
            return copy.state == types_pb2.TASK_STATE_CANCELED and "second" in copy.error.message

        eventually(copy_canceled, timeout=30, what="the abandoned copy is canceled")


def test_owner_of_a_non_idempotent_task_killed_the_task_fails_owner_lost(
    tmp_path: Path, count_tool: Path
) -> None:
    log = tmp_path / "executions.log"
    worker = overrides(FAST, {"tools": {"builtins": [], "contracts_dir": str(count_tool)}})
    entry_config = overrides(FAST, {"routing": {"owner_lost_timeout": "2s"}})
    with contextlib.ExitStack() as stack:
        entry = stack.enter_context(
            node_process(tmp_path, "orchestrator", entry_config, CONFIGS / "orchestrator.yaml")
        )
        joined = overrides(worker, bootstrap(entry))
        first = stack.enter_context(
            node_process(tmp_path, "first", joined, CONFIGS / "worker_analytics.yaml")
        )
        stack.enter_context(
            node_process(tmp_path, "second", joined, CONFIGS / "worker_analytics.yaml")
        )
        sees(entry, {"first", "second"})
        with PraxisClient(entry.grpc) as client:
            task = client.submit(
                "count_once",
                {"seconds": 5, "key": "once-only", "log": str(log)},
                preferred_agent=cards_at(entry)["first"].agent_id,
            ).task
            eventually(lambda: executions(log, "once-only"), timeout=20, what="first starts")
            kill(first)
            final = list(client.watch_task(task.task_id))[-1]
        assert final.state == types_pb2.TASK_STATE_FAILED, final
        assert final.error.reason == "OWNER_LOST"
        assert executions(log, "once-only") == [(first.pid, "start")]


def test_worker_killed_after_completing_is_not_run_again(tmp_path: Path, count_tool: Path) -> None:
    """The entry node is down while the task completes and its owner is then
    killed; both come back and the entry node learns the result from the
    owner's store, although another capable worker was available all along."""
    log = tmp_path / "executions.log"
    worker = overrides(FAST, {"tools": {"builtins": [], "contracts_dir": str(count_tool)}})
    with contextlib.ExitStack() as stack:
        # "second" is the bootstrap peer: it is never killed.
        second = stack.enter_context(
            node_process(tmp_path, "second", worker, CONFIGS / "worker_analytics.yaml")
        )
        joined = overrides(worker, bootstrap(second))
        entry = stack.enter_context(
            node_process(
                tmp_path,
                "orchestrator",
                overrides(FAST, bootstrap(second)),
                CONFIGS / "orchestrator.yaml",
            )
        )
        first = stack.enter_context(
            node_process(tmp_path, "first", joined, CONFIGS / "worker_analytics.yaml")
        )
        sees(entry, {"first", "second", "orchestrator"})
        with PraxisClient(entry.grpc) as client:
            task = client.submit(
                "count",
                {"seconds": 1, "key": "once", "log": str(log)},
                preferred_agent=cards_at(entry)["first"].agent_id,
            ).task
        kill(entry)

        def completed_on_first() -> bool:
            # Committed, not merely logged by the tool: a kill between the
            # two is a worker dying mid-task, and an idempotent task re-runs.
            with PraxisClient(first.grpc, timeout=5) as client:
                return client.get_task(task.task_id).state == types_pb2.TASK_STATE_COMPLETED

        eventually(completed_on_first, timeout=20, what="the task completes on first")
        kill(first)
        stack.enter_context(
            node_process(tmp_path, "first", joined, CONFIGS / "worker_analytics.yaml")
        )
        entry = stack.enter_context(
            node_process(
                tmp_path,
                "orchestrator",
                overrides(FAST, bootstrap(second)),
                CONFIGS / "orchestrator.yaml",
            )
        )

        def completed() -> bool:
            with PraxisClient(entry.grpc, timeout=5) as client:
                return client.get_task(task.task_id).state == types_pb2.TASK_STATE_COMPLETED

        eventually(completed, timeout=30, what="the entry node re-attaches")
        with PraxisClient(entry.grpc) as client:
            final = client.get_task(task.task_id)
        assert final.result["key"] == "once"
        assert [what for _, what in executions(log, "once")] == ["start", "done"]
