"""End to end: active-passive clusters of node processes on embedded Raft and on
a real 3-member etcd cluster: election, forwarding, coordinator kill -9 under
load, a paused (SIGSTOP) coordinator, whole-cluster restart, topology switch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.client import PraxisClient
from praxis_grpc.launcher import LocalMesh, NodeProcess, start_node, wait_ready
from praxis_grpc.testing import eventually
from praxis_grpc.testing.counting import RunLog, install_counting_tools
from praxis_grpc.testing.etcd_cluster import find_etcd

pytestmark = pytest.mark.e2e

BACKENDS = ["raft", "etcd"]


def base_config(tools: Path) -> dict[str, Any]:
    return {
        "tools": {"builtins": ["echo"], "contracts_dir": str(tools)},
        "cards": {"heartbeat": "500ms", "ttl": "5s"},
        "p2p": {"disconnect_grace": "500ms", "rendezvous": ""},
    }


@pytest.fixture
def count_tool(tmp_path: Path) -> Path:
    return install_counting_tools(tmp_path / "tools")


def need(backend: str) -> None:
    if backend == "etcd" and find_etcd() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("etcd is not installed (scripts/test installs etcd-server)")
        pytest.skip("etcd is not installed")


@contextlib.contextmanager
def cluster(
    root: Path, backend: str, tools: Path, mode: str = "active-passive"
) -> Iterator[LocalMesh]:
    mesh = LocalMesh(root, 3, base_config(tools), mode=mode, backend=backend)
    mesh.start()
    try:
        yield mesh
    finally:
        mesh.stop()


def by_role(mesh: LocalMesh, role: str) -> list[NodeProcess]:
    roles = mesh.roles()
    return [node for node in mesh.nodes if roles[node.name] == role]


def executions(log: Path) -> dict[str, int]:
    """Runs started, per key."""
    return RunLog(log).runs()


def final_state(nodes: list[NodeProcess], task_id: str) -> types_pb2.Task | None:
    for node in nodes:
        if node.process.poll() is not None:
            continue
        with contextlib.suppress(grpc.RpcError), PraxisClient(node.grpc, timeout=5) as client:
            task = client.get_task(task_id)
            if task.state in (types_pb2.TASK_STATE_COMPLETED, types_pb2.TASK_STATE_FAILED):
                return task
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_coordinator_standby_forwarding_and_kill_9_under_load(
    tmp_path: Path, count_tool: Path, backend: str
) -> None:
    need(backend)
    log = tmp_path / "executions.log"
    with cluster(tmp_path / "c", backend, count_tool) as mesh:
        (coordinator,) = by_role(mesh, "coordinator")
        standbys = by_role(mesh, "standby")
        assert len(standbys) == 2
        with PraxisClient(standbys[0].grpc) as client:
            # A client retries UNAVAILABLE: right after start-up a re-election
            # may leave the standby without a coordinator for a moment.
            forwarded = eventually(
                lambda: client.submit("echo", {"x": 1}, wait=True, rpc_timeout=10).task,
                timeout=20,
                what="a submission forwarded through a standby",
            )
            agent = client.get_agent()
        assert forwarded.state == types_pb2.TASK_STATE_COMPLETED
        (coordinator,) = by_role(mesh, "coordinator")
        assert agent.leader_agent_id == coordinator.info["agent_id"]
        assert agent.term > 0
        acknowledged: dict[str, str] = {}
        # The standby holds each call through the election (ha.hold_timeout)
        # and resends a relay the dead coordinator never answered, so its
        # client sees no error at all.
        with PraxisClient(standbys[0].grpc, timeout=30) as client:
            for i in range(200):
                if i == 60:
                    coordinator.process.send_signal(signal.SIGKILL)
                    coordinator.process.wait(timeout=10)
                key = f"k{i}"
                arguments = {"seconds": 0, "key": key, "log": str(log)}
                task = client.submit("count", arguments, idempotency_key=key).task
                acknowledged[key] = task.task_id
        survivors = [node for node in mesh.nodes if node is not coordinator]
        eventually(lambda: len(by_role(mesh, "coordinator")) == 1, timeout=30, what="new leader")
        for key, task_id in acknowledged.items():
            final = eventually(
                lambda task_id=task_id: final_state(survivors, task_id),  # type: ignore[misc]
                timeout=60,
                what=f"{key} finishes",
            )
            assert final.state == types_pb2.TASK_STATE_COMPLETED, (key, final)
        counts = executions(log)
        assert {key: counts.get(key, 0) for key in acknowledged} == dict.fromkeys(acknowledged, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_paused_coordinator_cannot_dispatch_after_a_new_one_is_elected(
    tmp_path: Path, count_tool: Path, backend: str
) -> None:
    need(backend)
    log = tmp_path / "executions.log"
    with cluster(tmp_path / "c", backend, count_tool) as mesh:
        (old,) = by_role(mesh, "coordinator")
        others = [node for node in mesh.nodes if node is not old]
        old.process.send_signal(signal.SIGSTOP)
        try:

            def new_coordinator() -> NodeProcess | None:
                roles = {n.name: r for n, r in zip(others, _roles(others), strict=True)}
                return next((n for n in others if roles[n.name] == "coordinator"), None)

            new = eventually(new_coordinator, timeout=30, what="a new coordinator")
            with PraxisClient(new.grpc) as client:
                fresh = client.submit(
                    "count", {"seconds": 0, "key": "fresh", "log": str(log)}, wait=True
                ).task
            assert fresh.state == types_pb2.TASK_STATE_COMPLETED, fresh
        finally:
            old.process.send_signal(signal.SIGCONT)
        # Right after waking up the old coordinator still believes it leads.
        outcome = ""
        refused: grpc.StatusCode | None = None
        try:
            with PraxisClient(old.grpc, timeout=10) as client:
                task = client.submit(
                    "count", {"seconds": 0, "key": "stale", "log": str(log)}, rpc_timeout=10
                ).task
            outcome = task.task_id
        except grpc.RpcError as exc:
            refused = exc.code()
        # Refused: UNAVAILABLE (its commit was fenced, or it knows it was
        # deposed) or FAILED_PRECONDITION (its cards expired while it slept).
        assert outcome or refused in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.FAILED_PRECONDITION,
        ), refused
        if outcome:
            # Accepted: then by the new coordinator (relayed), which holds it.
            with PraxisClient(new.grpc) as client:
                assert client.get_task(outcome).task_id == outcome
            eventually(lambda: executions(log).get("stale") == 1, timeout=30, what="stale runs")
        time.sleep(1)
        assert executions(log).get("stale", 0) <= 1
        assert executions(log)["fresh"] == 1


def _roles(nodes: list[NodeProcess]) -> list[str]:
    names = {1: "peer", 2: "coordinator", 3: "standby"}
    found = []
    for node in nodes:
        try:
            with PraxisClient(node.grpc, timeout=2) as client:
                found.append(names.get(client.get_agent().role, ""))
        except grpc.RpcError:
            found.append("")
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_cluster_restart_keeps_the_queue(
    tmp_path: Path, count_tool: Path, backend: str
) -> None:
    need(backend)
    log = tmp_path / "executions.log"
    mesh = LocalMesh(
        tmp_path / "c", 3, base_config(count_tool), mode="active-passive", backend=backend
    )
    mesh.start()
    try:
        (coordinator,) = by_role(mesh, "coordinator")
        with PraxisClient(coordinator.grpc) as client:
            ids = [
                client.submit(
                    "count",
                    {"seconds": 2, "key": f"q{i}", "log": str(log)},
                    idempotency_key=f"q{i}",
                ).task.task_id
                for i in range(12)
            ]
        for node in mesh.nodes:
            node.process.send_signal(signal.SIGKILL)
        for node in mesh.nodes:
            node.process.wait(timeout=10)
        restarted = [
            start_node(n.config_path, n.ready_file, n.log_path, n.name) for n in mesh.nodes
        ]
        mesh.nodes = restarted
        wait_ready(restarted)
        mesh.wait_coordinator(60)
        for task_id in ids:
            final = eventually(
                lambda task_id=task_id: final_state(restarted, task_id),  # type: ignore[misc]
                timeout=90,
                what=f"{task_id} finishes after the restart",
            )
            assert final.state == types_pb2.TASK_STATE_COMPLETED
        counts = executions(log)
        assert all(counts.get(f"q{i}", 0) >= 1 for i in range(12))
    finally:
        mesh.stop()


def test_switching_topology_by_rolling_restart_keeps_every_task(
    tmp_path: Path, count_tool: Path
) -> None:
    log = tmp_path / "executions.log"
    ids: dict[str, str] = {}

    def submit_some(mesh: LocalMesh, prefix: str) -> None:
        with PraxisClient(mesh.nodes[0].grpc) as client:
            for i in range(4):
                key = f"{prefix}{i}"
                ids[key] = client.submit(
                    "count", {"seconds": 1, "key": key, "log": str(log)}, idempotency_key=key
                ).task.task_id

    def every_task_completes(nodes: list[NodeProcess]) -> None:
        for key, task_id in ids.items():
            final = eventually(
                lambda task_id=task_id: final_state(nodes, task_id),  # type: ignore[misc]
                timeout=60,
                what=f"{key} finishes",
            )
            assert final.state == types_pb2.TASK_STATE_COMPLETED, key

    mesh = LocalMesh(tmp_path / "c", 3, base_config(count_tool))
    mesh.start()
    try:
        submit_some(mesh, "aa")  # still running when the roll begins
        mesh.switch("active-passive", "raft")
        # One coordinator (a re-election may be settling right after the roll).
        eventually(
            lambda: sorted(mesh.roles().values()) == ["coordinator", "standby", "standby"],
            timeout=30,
            what="one coordinator and two standbys",
        )
        submit_some(mesh, "ap")
        mesh.switch("active-active", "none")
        assert set(mesh.roles().values()) == {"peer"}
        submit_some(mesh, "bb")
        every_task_completes(mesh.nodes)
        counts = executions(log)
        assert all(counts.get(key, 0) >= 1 for key in ids)
    finally:
        mesh.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_praxis_up_active_passive_reports_roles(tmp_path: Path, backend: str) -> None:
    need(backend)
    command = [sys.executable, "-m", "praxis_grpc", "--json", "up", "--nodes", "3"]
    command += ["--mode", "active-passive", "--backend", backend, "--dir", str(tmp_path / "up")]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            document = json.loads(process.stdout.readline())
            roles = sorted(node["role"] for node in document["nodes"])
            assert roles == ["coordinator", "standby", "standby"]
            if backend == "etcd":
                assert len(document["etcd"]) == 3
            standby = next(n for n in document["nodes"] if n["role"] == "standby")
            with PraxisClient(standby["grpc"]) as client:
                task = client.submit("calculator", {"expression": "2+2"}, wait=True).task
            assert task.result["result"] == 4
            pids = [node["pid"] for node in document["nodes"]]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            for pid in pids:
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
        finally:
            # SIGTERM lets `praxis up` stop its nodes (and etcd); SIGKILL would
            # orphan them.
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
