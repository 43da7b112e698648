"""Idle CPU of a formed mesh of real praxis nodes, nothing else: for side-by-side runs.

Usage::

    .venv/bin/python -m bench.mesh_idle [--nodes 5,10] [--settle SECONDS] [--window SECONDS]

For each N: N ``praxis node`` processes with the defaults of
:mod:`bench.mesh_propagation` (``LocalMesh``: node1 first, the rest bootstrap
from it) until every node lists every card and N alive members; then, after
``--settle`` seconds, the nodes' CPU seconds (user + system, ``psutil``) per
wall second over ``--window``, summed over the mesh (% of one core). Nothing
polls the nodes meanwhile, so to compare two revisions run this from each
checkout alternately on the same machine. Run it by hand; tests never run it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench._common import cpu_seconds, int_list, positive_seconds
from bench.mesh_propagation import BASE_CONFIG
from praxis_grpc.launcher import LocalMesh


def idle_cpu(count: int, settle: float, window: float) -> float:
    """% of one core the formed ``count``-node mesh uses over ``window`` seconds."""
    with tempfile.TemporaryDirectory(prefix="mesh-idle-") as root:
        mesh = LocalMesh(Path(root), count, BASE_CONFIG)
        started = time.monotonic()
        mesh.start(timeout=240)
        try:
            print(f"N={count}: formed in {time.monotonic() - started:.1f} s", flush=True)
            time.sleep(settle)
            pids = [node.pid for node in mesh.nodes]
            cpu, clock = cpu_seconds(pids), time.monotonic()
            time.sleep(window)
            return 100.0 * (cpu_seconds(pids) - cpu) / (time.monotonic() - clock)
        finally:
            mesh.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int_list(2, "5,10"), default=[5, 10])
    parser.add_argument("--settle", type=positive_seconds, default=5.0)
    parser.add_argument("--window", type=positive_seconds, default=30.0)
    args = parser.parse_args()
    for count in args.nodes:
        pct = idle_cpu(count, args.settle, args.window)
        print(f"N={count}: idle mesh CPU {pct:.1f}% of one core ({pct / count:.1f}% per node)")


if __name__ == "__main__":
    main()
