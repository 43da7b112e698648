"""The ``praxis`` CLI without a node: global flags anywhere, one JSON
convention, the shipped roles of ``praxis up``, the status view's drawing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import struct_pb2
from rich.console import Console

from praxis_grpc._gen.praxis.v1 import agent_service_pb2, types_pb2
from praxis_grpc.cli import build_parser
from praxis_grpc.cli.output import message_dict, print_task, whole_numbers
from praxis_grpc.cli.status_view import MeshView, NodeView, render
from praxis_grpc.launcher import node_config
from praxis_grpc.shipped import CONFIGS_DIR, ROLE_ORDER, TOOLS_DIR, roles


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "up", "--nodes", "3"],
        # issue 15: exited 2 (unrecognized arguments: --json)
        ["up", "--nodes", "3", "--json"],
        ["up", "--json", "--nodes", "3"],
    ],
)
def test_global_json_flag_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.json is True
    assert args.nodes == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["-t", "h:1", "task", "get", "x"],
        ["task", "get", "x", "-t", "h:1"],
        ["task", "-t", "h:1", "get", "x"],
        ["--target", "h:2", "task", "get", "x", "--target", "h:1"],
    ],
)
def test_target_anywhere_the_last_one_wins(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.target == "h:1"
    assert args.task_id == "x"
    assert args.json is False


def test_defaults_without_global_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRAXIS_TARGET", "env:7")
    args = build_parser().parse_args(["status", "--watch"])
    assert (args.target, args.json, args.watch, args.nodes) == ("env:7", False, True, [])


def test_json_is_snake_case_with_whole_numbers_as_integers() -> None:
    result = struct_pb2.Struct()
    result.update({"result": 21, "ratio": 0.5, "nested": {"list": [1, 2.5, 3]}})
    task = types_pb2.Task(task_id="t1", state=types_pb2.TASK_STATE_COMPLETED, result=result)
    document = message_dict(task)
    # issue 15: camelCase keys (taskId) and 21.0
    assert document["task_id"] == "t1"
    assert "taskId" not in document
    assert document["result"] == {"result": 21, "ratio": 0.5, "nested": {"list": [1, 2.5, 3]}}
    assert isinstance(document["result"]["result"], int)
    assert json.dumps(document["result"]["result"]) == "21"


def test_text_output_prints_whole_numbers_as_integers(capsys: pytest.CaptureFixture[str]) -> None:
    result = struct_pb2.Struct()
    result.update({"result": 21})
    print_task(types_pb2.Task(task_id="t", tool="calculator", result=result), as_json=False)
    assert 'result={"result": 21}' in capsys.readouterr().out


def test_whole_numbers_keeps_large_and_fractional_floats() -> None:
    assert whole_numbers([2.0**60, 1.5, True, "3.0", 4.0]) == [2.0**60, 1.5, True, "3.0", 4]


def test_up_roles_are_the_shipped_configs_in_turn() -> None:
    chosen = roles(7)
    assert [r.name for r in chosen] == [
        "orchestrator",
        "agent1",
        "agent2",
        "worker-analytics",
        "worker-filesystem",
        "orchestrator-2",
        "agent1-2",
    ]
    for role, stem in zip(chosen, [*ROLE_ORDER, *ROLE_ORDER], strict=False):
        shipped = yaml.safe_load((CONFIGS_DIR / f"{stem}.yaml").read_text())
        assert role.tools == shipped["tools"]["builtins"]
        assert role.config["agent"]["tags"] == shipped["agent"]["tags"]
        # Placement is the launcher's: no fixed ports, no mDNS between meshes.
        assert "p2p" not in role.config
        assert "metrics" not in role.config
        assert "port" not in role.config.get("api", {})
    # The tools differ, so delegation shows at once; echo and sleep are on offer.
    assert "calculator" not in chosen[0].tools
    assert {"calculator", "echo", "sleep"} <= set(chosen[1].tools)


def test_contract_tools_come_from_the_install_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tools").mkdir()  # a stray ./tools must not be picked up
    analytics = roles(4)[3]
    contracts = Path(analytics.config["tools"]["contracts_dir"])
    assert contracts == TOOLS_DIR.resolve()
    assert (contracts / "data_stats" / "contract.yaml").is_file()
    assert "contracts_dir" not in roles(1)[0].config.get("tools", {})
    assert "contracts_dir" not in node_config("n", tmp_path / "n")["tools"]
    custom = roles(4, tools_dir=tmp_path / "tools")[3]
    assert custom.config["tools"]["contracts_dir"] == str((tmp_path / "tools").resolve())


def test_status_view_draws_nodes_members_tasks_and_failures() -> None:
    agent = agent_service_pb2.Agent(
        agent_id="A" * 52,
        name="alpha",
        role=types_pb2.AGENT_ROLE_COORDINATOR,
        ha_mode=types_pb2.HA_MODE_ACTIVE_PASSIVE,
        leader_agent_id="A" * 52,
        term=7,
        load=types_pb2.Load(in_flight=1, capacity=4, queued=2, queue_limit=10),
    )
    card = types_pb2.AgentCard(agent_id="A" * 52, name="alpha", role=agent.role)
    failed = types_pb2.Task(
        task_id="t-failed",
        tool="sleep",
        state=types_pb2.TASK_STATE_FAILED,
        owner_agent_id="A" * 52,
        error=types_pb2.TaskError(reason="TOOL_ERROR", message="boom"),
    )
    view = MeshView(
        [NodeView("h:1", agent, "SERVING"), NodeView("h:2", error="UNAVAILABLE: refused")],
        cards={card.agent_id: card},
        failures=[failed],
    )
    console = Console(record=True, width=200, color_system=None)
    console.print(render(view, interval=1.0))
    text = console.export_text()
    assert "leader alpha (term 7)" in text
    assert "every 1s · Ctrl-C quits" in text
    assert "1/4" in text
    assert "2/10" in text
    assert "UNAVAILABLE: refused" in text
    failure = next(line for line in text.splitlines() if "t-failed" in line)
    assert "FAILED" in failure
    assert "TOOL_ERROR: boom" in failure
    assert "alpha" in failure
