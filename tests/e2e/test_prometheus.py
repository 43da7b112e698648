"""deploy/prometheus against a real Prometheus (Debian's ``prometheus``)
scraping a 3-node active-passive mesh of node processes, and the alert rules
through ``promtool``. Needs ``prometheus`` and ``promtool`` (scripts/test
installs them); skips without them, except under CI=true.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from praxis_grpc.client import PraxisClient
from praxis_grpc.launcher import LocalMesh
from praxis_grpc.testing import eventually
from praxis_grpc.testing.system_tools import free_port, require_tool

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
DASHBOARD = DEPLOY.parent / "grafana" / "praxis.json"
TASKS = 3


def test_rules_and_config_pass_promtool() -> None:
    promtool = require_tool("promtool", "apt-get install prometheus")
    for args in (
        ["check", "rules", "praxis-rules.yml"],
        ["test", "rules", "praxis-rules.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], check=False, cwd=DEPLOY, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    base = {
        "tools": {"builtins": ["calculator"]},
        "tasks": {"queue_limit": 200},
        "p2p": {"rendezvous": ""},
    }
    local = LocalMesh(tmp_path / "mesh", 3, base, mode="active-passive", backend="raft")
    local.start()
    try:
        yield local
    finally:
        local.stop()


def scrape(address: str, name: str, labels: dict[str, str]) -> float:
    """The sum of the samples of ``name`` with ``labels`` a node exposes now."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant query: the value of each series, keyed by its instance label."""
        data = self.get("/api/v1/query", query=expr)
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in data["result"]}


@pytest.fixture
def prometheus(tmp_path: Path, mesh: LocalMesh) -> Iterator[Prometheus]:
    binary = require_tool("prometheus", "apt-get install prometheus")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(DEPLOY / "praxis-rules.yml")]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [node.metrics for node in mesh.nodes]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Its log says when it serves (polling the port before would leave
        # refused sockets to the garbage collector, a ResourceWarning).
        eventually(
            lambda: b"Server is ready to receive web requests" in log_path.read_bytes(),
            timeout=30,
            what="prometheus ready",
        )
        yield Prometheus(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_prometheus_scrapes_the_mesh_and_evaluates_the_rules(
    mesh: LocalMesh, prometheus: Prometheus
) -> None:
    with PraxisClient(mesh.nodes[0].grpc) as client:
        for n in range(TASKS):
            response = client.submit("calculator", {"expression": f"{n}+1"}, wait=True)
            assert response.task.result["result"] == n + 1
    targets = {str(node.metrics) for node in mesh.nodes}
    completed = {"state": "COMPLETED", "tool": "calculator"}
    expected = {t: scrape(t, "praxis_tasks_total", completed) for t in targets}
    assert sum(expected.values()) >= TASKS

    def scraped_three_times() -> bool:
        counts = prometheus.query('count_over_time(up{job="praxis"}[5m])')
        return set(counts) == targets and min(counts.values()) >= 3

    eventually(scraped_three_times, timeout=30, what="three scrapes of every node")
    assert prometheus.query('up{job="praxis"}') == dict.fromkeys(targets, 1.0)
    counted = prometheus.query(
        'sum by (instance) (praxis_tasks_total{state="COMPLETED",tool="calculator"})'
    )
    assert {t: counted.get(t, 0.0) for t in targets} == expected
    leaders = prometheus.query("praxis_consensus_is_leader")
    assert set(leaders) == targets
    assert sorted(leaders.values()) == [0.0, 0.0, 1.0]
    assert prometheus.query("praxis_task_queue_limit") == dict.fromkeys(targets, 200.0)

    def rules_evaluated() -> list[dict[str, Any]]:
        (group,) = prometheus.get("/api/v1/rules")["groups"]
        rules: list[dict[str, Any]] = group["rules"]
        done = all(r["lastEvaluation"] > "2000" for r in rules)
        return rules if done else []

    rules = eventually(rules_evaluated, timeout=30, what="every rule evaluated")
    assert {r["name"] for r in rules} >= {"PraxisNoCoordinator", "PraxisQueueNearLimit"}
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules] == [
        (r["name"], "ok", "") for r in rules
    ]
    # A healthy mesh with a coordinator raises none of them.
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert firing == []
    # Every query of the Grafana dashboard runs, with Grafana's variables set.
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
            prometheus.get("/api/v1/query", query=expr)
    coordinators = prometheus.query('sum(praxis_consensus_is_leader{instance=~".*"})')
    assert coordinators == {"": 1.0}
