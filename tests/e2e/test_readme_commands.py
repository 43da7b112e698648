"""The README's commands work as written: the marked block of ``praxis``
commands runs against a mesh started as the quick start does, and every
benchmark the README shows accepts the flags it is shown with."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_up_process import up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MARK = "<!-- readme-test: praxis"


def marked_block(marker: str) -> list[str]:
    """The indented code block after the comment starting with ``marker``."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    block: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            if block:
                break
            continue
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return block


def run_shell(line: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> str:
    """Run ``line`` through bash as a reader would paste it; its stdout (it must succeed)."""
    result = subprocess.run(
        ["bash", "-c", line],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=cwd,
    )
    assert result.returncode == 0, (line, result.stdout, result.stderr)
    return result.stdout


def bench_commands() -> list[str]:
    return re.findall(r"^    \.venv/bin/python (-m bench\.\w+.*)$", README, re.MULTILINE)


def test_the_readme_marks_its_cli_block() -> None:
    block = marked_block(MARK)
    assert block[0].startswith("export PRAXIS_TARGET=")
    assert all(line.startswith("praxis ") for line in block[1:])
    assert "praxis status --watch" in block


def test_quick_start_commands_run_as_written(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "praxis_grpc", "up", "--nodes", "3", "--json"]
    command += ["--dir", str(tmp_path / "up")]
    with up(command, cwd=tmp_path) as (document, _):
        entry = document["nodes"][0]
        assert entry["name"] == "orchestrator"
        env = {
            **os.environ,
            "PRAXIS_TARGET": entry["grpc"],
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
        }
        outputs: dict[str, str] = {}
        task_id = ""
        for written in marked_block(MARK)[1:]:
            line = written.replace("<task-id>", task_id)
            if line.endswith("--watch") and line.startswith("praxis status"):
                outputs[line] = watch_until_interrupted(line, env, tmp_path)
                continue
            outputs[line] = run_shell(line, env, tmp_path)
            if line.startswith("praxis submit"):
                task_id = outputs[line].split()[0]
        names = {node["agent_id"]: node["name"] for node in document["nodes"]}
        calc = next(out for line, out in outputs.items() if "calculator" in line)
        assert "COMPLETED" in calc
        assert '"result": 21' in calc
        canceled = next(out for line, out in outputs.items() if line.startswith("praxis task can"))
        assert "CANCELED" in canceled
        listed = json.loads(outputs["praxis tasks --limit 5 --json"])
        assert {task["tool"] for task in listed} == {"calculator", "echo", "sleep"}
        ran = next(task for task in listed if task["tool"] == "calculator")
        assert names[ran["owner_agent_id"]] in {"agent1", "agent2"}  # delegated
        pinned = next(task for task in listed if task["arguments"] == {"to": "agent2"})
        assert names[pinned["owner_agent_id"]] == "agent2"
        assert pinned["target_agent"] == pinned["owner_agent_id"]
        for name in names.values():
            assert name in outputs["praxis cards"]
        # One agent by name, through the node talked to.
        assert outputs['praxis agent --via "$PRAXIS_TARGET" --agent agent2'].startswith("agent2 ")
        targeted = next(out for line, out in outputs.items() if "--agent agent2 --wait" in line)
        assert "COMPLETED" in targeted
        via = outputs['praxis status --via "$PRAXIS_TARGET" --agent agent1 --agent agent2']
        assert "via 127.0.0.1:" in via
        assert "agent1" in via
        assert "agent2" in via
        status = json.loads(outputs["praxis status --json"])
        assert len(status["members"]) == 3
        watched = outputs["praxis status --watch"]
        assert "members (3)" in watched
        assert "calculator" in watched


def watch_until_interrupted(line: str, env: dict[str, str], cwd: Path) -> str:
    """Run a ``--watch`` line until its first frame, then Ctrl-C (SIGINT): exit 0."""
    with subprocess.Popen(
        ["bash", "-c", f"exec {line}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    ) as process:
        assert process.stdout is not None
        seen: list[str] = []
        try:
            for output in process.stdout:
                seen.append(output)
                if output.startswith("recent failures"):
                    break
            process.send_signal(signal.SIGINT)
            rest, errors = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, errors
        return "".join(seen) + rest


@pytest.mark.parametrize("line", bench_commands(), ids=lambda line: line.split()[1])
def test_benchmark_commands_accept_their_flags(line: str) -> None:
    module = line.split()[1]
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for flag in re.findall(r"(--[\w-]+)", line):
        assert flag in result.stdout, (module, flag)
