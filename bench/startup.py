"""What one ``praxis`` process costs before it does any work, and what a node costs to stop.

Usage::

    .venv/bin/python -m bench.startup [--runs N] [--checkout DIR ...] [--only CASE,...] [--json]

Cases (each run once per round, checkouts alternating within the round):

- ``help``: ``praxis --help``, wall time to exit.
- ``usage``: ``praxis submit`` without its tool, to the usage error.
- ``submit`` / ``status``: ``praxis submit echo`` / ``praxis status`` against a
  port nothing listens on, to the connection error.
- ``node``: one ``praxis node`` as the tests start it
  (:func:`praxis_grpc.testing.node_process`'s config: p2p off, consensus none),
  spawned and waited for with the process helpers; ``ready`` is the time to its
  ready file (serving), ``stop`` the time from SIGTERM to its exit.
- ``node-p2p``: the same with ``configs/agent1.yaml`` (libp2p on, mDNS off).
- ``mesh3``: :class:`praxis_grpc.launcher.LocalMesh` of 3 p2p nodes (as
  ``tests/e2e/test_mesh_process.py`` starts it): ``ready`` until meshed,
  ``stop`` until every process exited.

``cpu`` is the user + system CPU time of the processes a case started,
which moves far less than wall time when other work shares the machine.

With ``--checkout DIR`` (repeatable) each case runs the ``praxis`` of that
source tree (child processes start in DIR with ``PYTHONPATH=DIR``); the default
is this tree. Give two to compare a change with its base side by side, e.g.
``--checkout ../base --checkout .`` (a ``git worktree`` of the base
revision). The table shows medians over runs.
Run it by hand; tests never run it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench._common import (
    REPO_ROOT,
    choice_list,
    command_line,
    header,
    machine,
    median,
    positive_int,
    progress,
    run_main,
)
from praxis_grpc.launcher import LocalMesh
from praxis_grpc.node_process import node_config, start_node, stop_nodes, wait_ready
from praxis_grpc.testing import TEST_BUILTINS

CASES = ("help", "usage", "submit", "status", "node", "node-p2p", "mesh3")

#: As ``tests/e2e/test_mesh_process.py`` starts its meshes.
MESH_BASE = {
    "tools": {"builtins": ["calculator", "echo"]},
    "cards": {"heartbeat": "500ms", "ttl": "5s"},
    "p2p": {"disconnect_grace": "500ms", "rendezvous": ""},
}


@dataclass
class Sample:
    """One run of one case: seconds of wall time per phase, and CPU seconds."""

    phases: dict[str, float]
    cpu: float


@dataclass
class Results:
    """Samples by (case, checkout)."""

    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)

    def add(self, case: str, checkout: str, sample: Sample) -> None:
        self.samples.setdefault((case, checkout), []).append(sample)

    def rows(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for (case, checkout), samples in self.samples.items():
            names = samples[0].phases
            phases = {name: round(median(s.phases[name] for s in samples), 3) for name in names}
            rows.append(
                {
                    "case": case,
                    "checkout": checkout,
                    "runs": len(samples),
                    **phases,
                    "cpu": round(median(s.cpu for s in samples), 3),
                }
            )
        return rows


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _running_from(checkout: Path) -> Iterator[None]:
    """Child processes started in the block import ``praxis_grpc`` from ``checkout``.

    ``python -m`` puts the working directory first on ``sys.path``, so both
    the working directory and ``PYTHONPATH`` are switched.
    """
    cwd, saved = Path.cwd(), os.environ.get("PYTHONPATH")
    os.chdir(checkout)
    os.environ["PYTHONPATH"] = str(checkout)
    try:
        yield
    finally:
        os.chdir(cwd)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> Callable[[Path], Sample]:
    def run(workdir: Path) -> Sample:
        cpu, start = _children_cpu(), time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "praxis_grpc", *args],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        return Sample({"exit": time.monotonic() - start}, _children_cpu() - cpu)

    return run


def _node(config: dict[str, object]) -> Callable[[Path], Sample]:
    def run(workdir: Path) -> Sample:
        path = workdir / "node1.yaml"
        path.write_text(yaml.safe_dump(node_config("node1", workdir / "node1", config)))
        cpu, start = _children_cpu(), time.monotonic()
        node = start_node(path, workdir / "ready.json", workdir / "node1.log", "node1")
        try:
            wait_ready([node], timeout=120)
            ready = time.monotonic()
        finally:
            stopping = time.monotonic()
            stop_nodes([node], timeout=60)
        return Sample(
            {"ready": ready - start, "stop": time.monotonic() - stopping},
            _children_cpu() - cpu,
        )

    return run


def _mesh3(workdir: Path) -> Sample:
    mesh = LocalMesh(workdir / "mesh", 3, MESH_BASE)
    cpu, start = _children_cpu(), time.monotonic()
    try:
        mesh.start(timeout=120)
        ready = time.monotonic()
    finally:
        stopping = time.monotonic()
        mesh.stop()
    return Sample(
        {"ready": ready - start, "stop": time.monotonic() - stopping}, _children_cpu() - cpu
    )


def _agent1() -> dict[str, object]:
    """``configs/agent1.yaml`` with the changes :func:`node_process` makes."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "agent1.yaml").read_text())
    for section in ("api", "metrics", "p2p"):
        config[section].pop("port", None)
    config["p2p"]["enable_mdns"] = False
    return dict(config)


def cases() -> dict[str, Callable[[Path], Sample]]:
    """Each case's run, given a fresh working directory."""
    closed = f"127.0.0.1:{_closed_port()}"
    return {
        "help": _cli("--help"),
        "usage": _cli("submit"),
        "submit": _cli("submit", "echo", "--target", closed),
        "status": _cli("status", "--target", closed),
        "node": _node({"tools": {"builtins": TEST_BUILTINS}, "p2p": {"enabled": False}}),
        "node-p2p": _node(_agent1()),
        "mesh3": _mesh3,
    }


def table(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown table of the medians."""
    lines = [
        "| case | checkout | runs | ready / exit s | stop s | CPU s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        first = row.get("exit", row.get("ready"))
        stop = row.get("stop", "")
        lines.append(
            f"| {row['case']} | {row['checkout']} | {row['runs']} | {first} | {stop} | "
            f"{row['cpu']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every chosen case ``--runs`` times per checkout; print the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=positive_int, default=5)
    parser.add_argument("--checkout", type=Path, action="append", default=[])
    parser.add_argument("--only", type=choice_list(CASES), default=list(CASES))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    checkouts = [path.resolve() for path in args.checkout] or [REPO_ROOT]
    for checkout in checkouts:
        if not (checkout / "praxis_grpc" / "__init__.py").is_file():
            parser.error(f"--checkout {checkout}: no praxis_grpc package there")
    runs = cases()
    results = Results()
    for round_number in range(1, args.runs + 1):
        progress(f"round {round_number}/{args.runs}")
        for case in args.only:
            for checkout in checkouts:
                with (
                    tempfile.TemporaryDirectory(prefix="praxis-startup-") as tmp,
                    _running_from(checkout),
                ):
                    results.add(case, str(checkout), runs[case](Path(tmp)))
    rows = results.rows()
    if args.json:
        print(json.dumps({"machine": machine(), "command": command_line(), "rows": rows}))
    else:
        print(header(machine(), command_line()))
        print()
        print(table(rows))
    return 0


if __name__ == "__main__":
    run_main(main)
