"""End to end: real `praxis node` processes from configs/, grpcurl, SIGKILL and SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from praxis_grpc.client import PraxisClient
from praxis_grpc.testing import eventually, node_process

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")

pytestmark = pytest.mark.e2e


def grpcurl(target: str, *command: str, data: object = None) -> str:
    flags = ["-d", json.dumps(data)] if data is not None else []
    result = subprocess.run(
        [GRPCURL, "-plaintext", *flags, target, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_reflection_and_calculator(tmp_path: Path) -> None:
    with node_process(tmp_path, "agent1", config_path=CONFIGS / "agent1.yaml") as node:
        services = grpcurl(node.grpc, "list").split()
        assert set(services) >= {
            "praxis.v1.AgentService",
            "praxis.v1.CardService",
            "praxis.v1.TaskService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        described = grpcurl(node.grpc, "describe", "praxis.v1.TaskService")
        for rpc in ("SubmitTask", "GetTask", "ListTasks", "CancelTask", "WatchTask"):
            assert f"rpc {rpc}" in described
        request = {"tool": "calculator", "arguments": {"expression": "(1 + 2) * 7"}, "wait": True}
        out = json.loads(grpcurl(node.grpc, "praxis.v1.TaskService/SubmitTask", data=request))
        assert out["task"]["state"] == "TASK_STATE_COMPLETED"
        assert out["task"]["result"]["result"] == 21
        health = json.loads(
            grpcurl(
                node.grpc,
                "grpc.health.v1.Health/Check",
                data={"service": "praxis.v1.TaskService"},
            )
        )
        assert health["status"] == "SERVING"


SLOW_CONTRACT = """\
name: slow_write
description: sleeps, then writes a marker file (a side effect, so not idempotent)
input_schema:
  type: object
  required: [seconds]
  properties:
    seconds: {type: number}
command: ["{python}", "run.py"]
timeout: 60s
idempotent: false
"""
SLOW_SCRIPT = """\
import json, sys, time
args = json.load(sys.stdin)
time.sleep(args["seconds"])
print(json.dumps({"slept": args["seconds"]}))
"""


def write_slow_contract(root: Path) -> Path:
    tool = root / "contracts" / "slow_write"
    tool.mkdir(parents=True)
    (tool / "contract.yaml").write_text(SLOW_CONTRACT)
    (tool / "run.py").write_text(SLOW_SCRIPT)
    return tool.parent


def test_sigkill_loses_no_accepted_task(tmp_path: Path) -> None:
    overrides = {
        "tasks": {"max_concurrency": 2, "drain_timeout": "1s"},
        "tools": {"contracts_dir": str(write_slow_contract(tmp_path))},
    }
    with (
        node_process(tmp_path, "durable", overrides=overrides) as node,
        PraxisClient(node.grpc) as client,
    ):
        done = client.submit("calculator", {"expression": "2**10"}, wait=True).task
        rerun = client.submit("sleep", {"seconds": 30}).task  # idempotent, running
        interrupted = client.submit("slow_write", {"seconds": 30}).task  # side effect, running
        queued = [client.submit("calculator", {"expression": f"{n}*3"}).task for n in range(5)]
        eventually(
            lambda: client.get_agent().load.in_flight == 2 and client.get_agent().load.queued == 5,
            what="two running, five queued",
        )
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)

    with (
        node_process(tmp_path, "durable", overrides=overrides) as node,
        PraxisClient(node.grpc) as client,
    ):
        listed = {t.task_id: t for t in client.list_tasks(page_size=100).tasks}
        expected = {done.task_id, rerun.task_id, interrupted.task_id, *(t.task_id for t in queued)}
        assert expected <= set(listed)
        assert client.get_task(done.task_id).result["result"] == 1024
        failed = client.get_task(interrupted.task_id)
        assert failed.state == 4  # FAILED
        assert failed.error.reason == "INTERRUPTED"
        for task in queued:
            final = next(s for s in client.watch_task(task.task_id) if s.state >= 3)
            assert final.state == 3  # COMPLETED
        again = client.get_task(rerun.task_id)
        assert again.state == 2  # WORKING again after re-queue
        assert again.attempt == 2


def test_sigterm_drains_running_tasks_and_exits_zero(tmp_path: Path) -> None:
    with node_process(tmp_path, "drainer") as node, PraxisClient(node.grpc) as client:
        task = client.submit("sleep", {"seconds": 1.0}).task
        eventually(lambda: client.get_task(task.task_id).state == 2, what="task working")
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(timeout=30) == 0
    with node_process(tmp_path, "drainer") as node, PraxisClient(node.grpc) as client:
        assert client.get_task(task.task_id).state == 3  # finished during the drain


def praxis(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "praxis_grpc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("api:\n  port: 99999\ntasks:\n  max_concurency: 3\n")
    result = praxis("node", "--config", str(bad))
    assert result.returncode == 2
    assert "api.port" in result.stderr
    assert "tasks.max_concurency: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_against_a_node(tmp_path: Path) -> None:
    with node_process(tmp_path, "cli") as node:
        ok = praxis(
            "-t", node.grpc, "submit", "calculator", "--args", '{"expression": "6*7"}', "--wait"
        )
        assert ok.returncode == 0, ok.stderr
        assert "COMPLETED" in ok.stdout
        assert '"result": 42' in ok.stdout
        watched = praxis(
            "-t", node.grpc, "--json", "submit", "echo", "--args", '{"a": 1}', "--watch"
        )
        states = [json.loads(line)["state"] for line in watched.stdout.splitlines()]
        assert states[-1] == "TASK_STATE_COMPLETED"
        unknown = praxis("-t", node.grpc, "submit", "nope")
        assert unknown.returncode == 1
        assert "FAILED_PRECONDITION: no agent offers tool 'nope'" in unknown.stderr
        bad_args = praxis("-t", node.grpc, "submit", "calculator", "--args", "{oops")
        assert bad_args.returncode == 2
        assert "--args is not valid JSON" in bad_args.stderr
        listing = praxis("-t", node.grpc, "tasks", "--state", "completed")
        assert listing.returncode == 0
        assert listing.stdout.count("COMPLETED") == 2
        cards = praxis("-t", node.grpc, "cards")
        assert "calculator" in cards.stdout
        status = praxis("-t", node.grpc, "status")
        assert "SERVING" in status.stdout
        assert node.info["agent_id"] in status.stdout
    refused = praxis("-t", node.grpc, "status", timeout=60)
    assert refused.returncode == 1
    assert f"cannot reach a praxis node at {node.grpc}" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_praxis_up_json_and_clean_stop(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "praxis_grpc", "--json", "up", "--nodes", "2"]
    with subprocess.Popen(
        [*command, "--dir", str(tmp_path / "up")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    ) as process:
        try:
            assert process.stdout is not None
            document = json.loads(process.stdout.readline())
            nodes = document["nodes"]
            assert [n["name"] for n in nodes] == ["orchestrator", "agent1"]
            keys = {"name", "agent_id", "pid", "grpc", "metrics", "p2p", "role", "tools"}
            for entry in nodes:
                assert set(entry) == keys
                assert entry["role"] == "peer"
                with PraxisClient(entry["grpc"]) as client:
                    assert client.get_agent().agent_id == entry["agent_id"]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            for entry in nodes:
                with pytest.raises(ProcessLookupError):
                    os.kill(entry["pid"], 0)
        finally:
            # SIGTERM lets `praxis up` stop its nodes (and etcd); SIGKILL would
            # orphan them.
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
