"""The README's benchmark suite in one command: every plotted benchmark, then the plots.

Usage::

    .venv/bin/python -m bench [--out DIR] [--only NAME[,NAME...]] [--dry-run]

Runs, one after the other and each in its own process, the benchmarks whose
curves the README shows (``task_roundtrip``, ``failover``, ``mesh_sim``,
``mesh_propagation``) with the README's arguments; each writes its table to
``DIR/NAME.txt`` (what it prints) and its figures to ``DIR/NAME.json``
(``--json-out``). Then ``bench.plots`` draws the PNGs from those JSON files
into ``DIR`` (default ``docs/bench``, where the README's plots live).
``--dry-run`` prints the commands instead. The whole suite takes several
minutes on 2 cores; run it by hand on a quiet machine. The other benchmarks
(``delegated_roundtrip``, ``balance``, ``nemesis``, ``nat_roundtrip``, …) run
on their own, as the README shows.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._common import REPO_ROOT

#: name -> the arguments the README's Plots section runs it with.
SUITE: dict[str, tuple[str, ...]] = {
    "task_roundtrip": (
        "--concurrency", "1,4,16,64", "--requests", "1000", "--warmup", "100",
        "--duration-cap", "10", "--rounds", "3",
    ),
    "failover": ("--trials", "3", "--skip-load", "--etcd-leases", "1"),
    "mesh_sim": ("--nodes", "10,30,100,300,1000"),
    "mesh_propagation": ("--nodes", "3,5,8", "--trials", "2", "--seed", "1"),
}  # fmt: skip


def commands(out: Path, only: Sequence[str] = ()) -> list[list[str]]:
    """The suite's command lines (benchmarks, then the plots) writing into ``out``."""
    chosen = [name for name in SUITE if not only or name in only]
    lines = [
        ["-m", f"bench.{name}", *SUITE[name], "--json-out", str(out / f"{name}.json")]
        for name in chosen
    ]
    plots = ["-m", "bench.plots"]
    for name in chosen:
        plots += [f"--{name.replace('_', '-')}", str(out / f"{name}.json")]
    return [*lines, [*plots, "--out", str(out)]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite (or print it with ``--dry-run``); 1 if a benchmark failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(SUITE)}")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(SUITE))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}")
    suite = commands(args.out, only)
    if args.dry_run:
        for line in suite:
            print(shlex.join([".venv/bin/python", *line]))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for line in suite:
        name = line[1].removeprefix("bench.")
        print(f"== {shlex.join(['python', *line])}", file=sys.stderr, flush=True)
        table = args.out / f"{name}.txt"
        with table.open("w") as output:
            done = subprocess.run([sys.executable, *line], stdout=output, check=False)
        if done.returncode != 0:
            print(f"{name} failed (exit {done.returncode}); see {table}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
