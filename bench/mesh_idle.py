"""Idle CPU of a formed mesh of real praxis nodes, nothing else: for side-by-side runs.

Usage::

    .venv/bin/python -m bench.mesh_idle [--nodes 5,10] [--settle SECONDS] [--window SECONDS]

For each N: N ``praxis node`` processes with the defaults of
:mod:`bench.mesh_propagation` (``LocalMesh``: node1 first, the rest bootstrap
from it) until every node lists every card and N alive members; then, after
``--settle`` seconds, the nodes' CPU seconds (user + system, ``psutil``) per
wall second over ``--window``, summed over the mesh (% of one core), and the
outcomes of the nodes' SWIM probes (``praxis_swim_probes_total``, summed over
the mesh) during the join and over the window: with no node failing, every
"suspect" is a false suspicion. Nothing else polls the nodes meanwhile, so
to compare two revisions run this from each checkout alternately on the same
machine. Run it by hand; tests never run it.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from bench._common import cpu_seconds, int_list, positive_seconds
from bench.mesh_propagation import BASE_CONFIG
from praxis_grpc.launcher import LocalMesh, NodeProcess

_PROBES = re.compile(r'^praxis_swim_probes_total\{outcome="(\w+)"\} (\S+)$', re.MULTILINE)


def probe_outcomes(nodes: Iterable[NodeProcess]) -> dict[str, int]:
    """SWIM probe outcomes so far, summed over ``nodes`` (scraped from /metrics)."""
    totals: dict[str, int] = {}
    for node in nodes:
        with urllib.request.urlopen(f"http://{node.metrics}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for outcome, value in _PROBES.findall(text):
            totals[outcome] = totals.get(outcome, 0) + int(float(value))
    return totals


def idle_cpu(count: int, settle: float, window: float) -> float:
    """% of one core the formed ``count``-node mesh uses over ``window`` seconds."""
    with tempfile.TemporaryDirectory(prefix="mesh-idle-") as root:
        mesh = LocalMesh(Path(root), count, BASE_CONFIG)
        started = time.monotonic()
        mesh.start(timeout=240)
        try:
            formed = time.monotonic() - started
            joined = probe_outcomes(mesh.nodes)
            print(f"N={count}: formed in {formed:.1f} s; SWIM probes by then: {joined}", flush=True)
            time.sleep(settle)
            pids = [node.pid for node in mesh.nodes]
            before = probe_outcomes(mesh.nodes)
            cpu, clock = cpu_seconds(pids), time.monotonic()
            time.sleep(window)
            pct = 100.0 * (cpu_seconds(pids) - cpu) / (time.monotonic() - clock)
            after = probe_outcomes(mesh.nodes)
            idle = {k: v - before.get(k, 0) for k, v in after.items()}
            print(f"N={count}: SWIM probes over the window: {idle}", flush=True)
            return pct
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
