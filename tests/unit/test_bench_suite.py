"""``python -m bench``: the README's plotted suite in one command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bench.__main__ as suite

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_suite_the_runner_runs() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "bench", "--dry-run", "--out", "docs/bench"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.splitlines()
    readme = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    start = readme.index(shown[0])
    assert readme[start : start + len(shown)] == shown


def test_unknown_benchmarks_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        suite.main(["--only", "mesh_sim,nope", "--dry-run"])
    assert exited.value.code == 2
    assert "unknown benchmark(s) nope" in capsys.readouterr().err


def test_a_subset_runs_and_is_plotted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(suite.SUITE, "mesh_sim", ("--nodes", "10"))
    assert suite.main(["--only", "mesh_sim", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "mesh_sim.json").stat().st_size > 0
    assert "| 10 | 1% |" in (tmp_path / "mesh_sim.txt").read_text()  # its table
    assert (tmp_path / "mesh_convergence.png").read_bytes().startswith(b"\x89PNG")
