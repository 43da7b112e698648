"""``python -m bench.plots`` draws PNGs from the JSON the benchmarks write with ``--json-out``.

The fixtures are built from the benchmarks' own result dataclasses, so a
renamed field breaks this test rather than the next hand-run plot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from bench import plots
from bench._common import write_json
from bench._failover_report import ClusterRun, Trial
from bench.mesh_propagation import MeshResult
from bench.task_roundtrip import Summary

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MACHINE = {"nproc": "2", "python": "3.11", "grpcio": "1.85", "revision": "abc123"}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def roundtrip_document() -> dict[str, Any]:
    rows = []
    for concurrency, echo_rps, praxis_rps in ((1, 1500.0, 300.0), (16, 6000.0, 900.0)):
        for target, rps in (("echo", echo_rps), ("praxis", praxis_rps)):
            rows.append(Summary(target, concurrency, 100, 0, rps, 1.0, 3.0, 200.0, rps / echo_rps))
    return {
        "command": "python -m bench.task_roundtrip --json-out x.json",
        "machine": MACHINE,
        "summary": [dataclasses.asdict(row) for row in rows],
        "runs": [],
    }


def failover_document() -> dict[str, Any]:
    clusters = []
    for label, times in (("raft", (1.2, 0.9, 1.5)), ("etcd lease 1s", (2.0, math.inf, 1.8))):
        run = ClusterRun(label, label.split()[0])
        for number, failover in enumerate(times, start=1):
            trial = Trial(number, "node2", failover_s=None if failover == math.inf else failover)
            trial.elected_s, trial.reaped_s = 0.5, 0.01
            trial.timeline = [
                (-0.5, -0.45, "node1", "OK"),
                (-0.2, -0.19, "node2", "OK"),
                (0.1, 2.1, "node3", "DEADLINE_EXCEEDED"),
                (0.2, 0.3, "node1", "UNAVAILABLE"),
                (failover - 0.05, failover, "node3", "OK"),
            ][: 5 if failover != math.inf else 4]
            run.trials.append(trial)
        clusters.append(dataclasses.asdict(run))
    return {
        "command": "python -m bench.failover --json-out x.json",
        "machine": MACHINE,
        "clusters": clusters,
    }


def mesh_sim_rows() -> list[dict[str, float]]:
    rows = []
    for n in (10, 100):
        for loss in (0.0, 0.01):
            rows.append(
                {
                    "n": n,
                    "loss": loss,
                    "payload_100": 1.0 + n / 100,
                    "dead_100": 3.0 + loss,
                    "pause_suspect": math.inf if n == 100 and loss else 0.5,
                }
            )
    return rows


def mesh_propagation_document() -> dict[str, Any]:
    results = [
        MeshResult(5, converge_s=1.0, join_visible_s=0.8, change_median_s=0.3, dead_removed_s=4),
        MeshResult(10, converge_s=2.0, join_visible_s=None, change_median_s=0.5),
        MeshResult(20, error="LaunchError: node7 did not start"),
    ]
    return {
        "command": "python -m bench.mesh_propagation --json-out x.json",
        "machine": MACHINE,
        "results": [dataclasses.asdict(result) for result in results],
    }


def test_plots_are_drawn_from_each_benchmarks_json(tmp_path: Path) -> None:
    inputs = {
        "task-roundtrip": roundtrip_document(),
        "failover": failover_document(),
        "mesh-sim": mesh_sim_rows(),
        "mesh-propagation": mesh_propagation_document(),
    }
    argv = ["--out", str(tmp_path / "out")]
    for name, document in inputs.items():
        # As the benchmarks write it (json.dumps writes inf as Infinity).
        write_json(tmp_path / f"{name}.json", document)
        argv += [f"--{name}", str(tmp_path / f"{name}.json")]
    assert plots.main(argv) == 0
    drawn = {path.name: png_size(path) for path in (tmp_path / "out").iterdir()}
    assert set(drawn) == {"throughput.png", "failover_timeline.png", "mesh_convergence.png"}
    assert all(width >= 500 and height >= 300 for width, height in drawn.values()), drawn
    # Two clusters make two panels; two mesh benchmarks, two side by side.
    assert drawn["failover_timeline.png"][1] > drawn["throughput.png"][1]
    assert drawn["mesh_convergence.png"][0] > drawn["throughput.png"][0]


def test_one_mesh_benchmark_is_enough(tmp_path: Path) -> None:
    write_json(tmp_path / "sim.json", mesh_sim_rows())
    assert plots.main(["--mesh-sim", str(tmp_path / "sim.json"), "--out", str(tmp_path)]) == 0
    assert png_size(tmp_path / "mesh_convergence.png")[0] >= 500


def test_the_median_trial_is_the_one_drawn() -> None:
    document = json.loads(json.dumps(failover_document()))
    raft = plots.median_trial(document["clusters"][0]["trials"])
    assert raft is not None
    assert raft["number"] == 1  # failovers 1.2, 0.9, 1.5
    etcd = plots.median_trial(document["clusters"][1]["trials"])
    assert etcd is not None
    assert etcd["number"] == 3  # 2.0 and 1.8 finished: the lower median


def test_a_failover_document_without_timelines_is_refused(tmp_path: Path) -> None:
    document = failover_document()
    for cluster in document["clusters"]:
        for trial in cluster["trials"]:
            trial["timeline"] = []
    with pytest.raises(ValueError, match="timeline"):
        plots.failover_timeline(document)


def test_no_input_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        plots.main([])
    assert exited.value.code == 2
    assert "at least one" in capsys.readouterr().err
