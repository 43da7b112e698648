"""Nemesis suite, long form: faults under a non-idempotent workload, then an audit.

Usage::

    .venv/bin/python -m bench.nemesis [--backends raft,etcd] [--nemeses N,...]
        [--trials 10] [--min-acked 2000] [--clients 8] [--after S]
        [--partition-holds 3,8,0.2] [--settle-timeout S] [--launch-timeout S]
        [--keep] [--json]

Per backend (embedded raft; etcd on a local 3-member etcd cluster) and per
nemesis, a 3-node active-passive cluster of real ``praxis node`` processes
runs ``--trials`` trials (more, up to three times as many, until the
nemesis has ``--min-acked`` acknowledged tasks). Each trial
(:mod:`bench._nemesis_trial`) runs closed-loop clients submitting
non-idempotent counting tasks with unique idempotency keys (resent with the
same key through any node until acknowledged), injects the nemesis, heals it,
and audits (:mod:`bench._nemesis_check`): every acknowledged task on every
node, every node's store, and the execution log the tool fsyncs a marker to.

Nemeses (:mod:`bench._nemeses`): SIGKILL of the coordinator and of a
standby (restarted after 1 s); SIGSTOP/SIGCONT of the coordinator for half
and five times the raft election timeout (raft) or half and the lease TTL
plus 1.5 s (etcd); SIGSTOP of a standby for 2 s; a partition of the
coordinator from everyone (:mod:`bench._nemesis_net`, root with nft and
cgroup2; skipped otherwise), cut for each of ``--partition-holds`` in turn.

A cluster serves every trial of its nemesis; after a trial that left it
without a coordinator it is replaced by a fresh one. Run it by hand; the
short form is ``tests/nemesis``. Exit code 1 if anything was lost, executed
twice, a key had two tasks, a trial failed, or a cut leaked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import (
    choice_list,
    command_line,
    header,
    machine,
    positive_int,
    positive_seconds,
    progress,
    run_main,
)
from bench._nemeses import NEMESES, make
from bench._nemesis_net import Cut, unavailable
from bench._nemesis_report import NemesisRun, notes, summary_table
from bench._nemesis_trial import NemesisMesh, Settings, base_config, install_tool, run_trial
from praxis_grpc.config import EtcdConfig, RaftConfig
from praxis_grpc.launcher import LaunchError
from praxis_grpc.testing.counting import RunLog
from praxis_grpc.testing.etcd_cluster import EtcdClusterError

BACKENDS = ("raft", "etcd")


def holds(backend: str, nemesis: str, partition_holds: Sequence[float]) -> list[float]:
    """The hold (s) of each trial, cycled: pauses sized to the backend's failure detector."""
    if backend == "raft":
        detector = RaftConfig().election_timeout
        short, long = detector / 2, detector * 5
    else:
        detector = EtcdConfig().lease_ttl
        short, long = detector / 2, detector + 1.5
    fixed = {
        "kill-coordinator": 1.0,
        "kill-standby": 1.0,
        "pause-coordinator-short": short,
        "pause-coordinator-long": long,
        "pause-standby": 2.0,
    }
    return list(partition_holds) if nemesis.startswith("partition") else [fixed[nemesis]]


def seconds_list(text: str) -> list[float]:
    """argparse type: comma-separated positive seconds."""
    return [positive_seconds(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.nemesis", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--backends", type=choice_list(BACKENDS), default=list(BACKENDS))
    add("--nemeses", type=choice_list(NEMESES), default=list(NEMESES))
    add("--trials", type=positive_int, default=10, help="trials per nemesis (default: 10)")
    add("--min-acked", type=positive_int, default=2000, help="acknowledged tasks per nemesis")
    add("--clients", type=positive_int, default=8, help="closed-loop clients (default: 8)")
    add("--warmup", type=positive_seconds, default=1.0, help="workload before the nemesis")
    add("--after", type=positive_seconds, default=3.0, help="workload after the heal")
    add("--partition-holds", type=seconds_list, default=seconds_list("3,8,0.2"))
    add("--task-seconds", type=float, default=0.05, help="each task's run time")
    add("--rpc-timeout", type=positive_seconds, default=8.0, help="deadline of each call")
    add("--settle-timeout", type=positive_seconds, default=60.0, help="bound on tasks finishing")
    add("--launch-timeout", type=positive_seconds, default=60.0, help="bound on (re)starts")
    add("--keep", action="store_true", help="keep node directories, logs and the run log")
    add("--json", action="store_true", help="print JSON instead of Markdown")
    return parser.parse_args(argv)


def run_nemesis(root: Path, backend: str, name: str, args: Any, cut: Cut | None) -> NemesisRun:
    """Every trial of one nemesis on one backend."""
    hold_cycle = holds(backend, name, args.partition_holds)
    run = NemesisRun(backend, name, {"hold_s": hold_cycle[0]})
    settings = Settings(
        clients=args.clients,
        warmup=args.warmup,
        after=args.after,
        task_seconds=args.task_seconds,
        rpc_timeout=args.rpc_timeout,
        settle_timeout=args.settle_timeout,
        launch_timeout=args.launch_timeout,
    )
    where = root / f"{backend}-{name}"
    tools = install_tool(where / "tools")
    log = RunLog(where / "executions.log")
    mesh: NemesisMesh | None = None
    try:
        number = 0
        while number < args.trials or (
            run.total("acknowledged") < args.min_acked and number < 3 * args.trials
        ):
            number += 1
            if mesh is None:
                mesh = NemesisMesh(
                    where / f"cluster{number}",
                    3,
                    base_config(tools),
                    mode="active-passive",
                    backend=backend,
                    cut=cut,
                )
                mesh.start(args.launch_timeout)
            nemesis = make(
                name, hold_cycle[(number - 1) % len(hold_cycle)], args.launch_timeout, cut
            )
            trial = run_trial(mesh, nemesis, log, f"{backend}-{name}-t{number}", number, settings)
            run.trials.append(trial)
            found = trial.audit
            progress(
                f"{backend} {name} trial {number} (hold {nemesis.hold:g} s, victim "
                f"{trial.victim}): {found.acknowledged} acked, lost {len(found.lost)}, twice "
                f"{len(found.executed_twice)}, two tasks {len(found.keys_with_two_tasks)}, "
                f"differ {len(found.answers_differ)}, outage {trial.outage_s:.2f} s, "
                f"recovered {trial.recovered_s}, served {trial.served_s}, "
                f"majority ack {trial.majority_ack_s} "
                f"{trial.error}"
            )
            if trial.error:
                mesh.stop()
                mesh = None
    except (LaunchError, EtcdClusterError, OSError) as exc:
        run.skipped = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        progress(f"{backend} {name}: {run.skipped}")
    finally:
        if mesh is not None:
            mesh.stop()
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; returns the exit code."""
    args = parse_args(argv)
    info = machine()
    root = Path(tempfile.mkdtemp(prefix="praxis-nemesis-"))
    runs: list[NemesisRun] = []
    why = unavailable()
    cut = Cut(uuid.uuid4().hex[:8]) if why is None else None
    try:
        for backend in args.backends:
            for name in args.nemeses:
                if name.startswith("partition") and cut is None:
                    runs.append(NemesisRun(backend, name, skipped=f"cannot cut: {why}"))
                    continue
                runs.append(run_nemesis(root, backend, name, args, cut))
    finally:
        if cut is not None:
            cut.close()
        if args.keep:
            progress(f"node directories and logs kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    command = command_line()
    if args.json:
        document = {
            "command": command,
            "machine": info,
            "runs": [dataclasses.asdict(run) for run in runs],
        }
        print(json.dumps(document, indent=2, default=list))
    else:
        print(header(info, command))
        print(
            f"3 praxis node processes per cluster; {args.clients} closed-loop clients, "
            f"non-idempotent tasks of {args.task_seconds:g} s, {args.rpc_timeout:g} s deadline; "
            "max / median over the trials\n"
        )
        print(summary_table(runs))
        print("\nNotes:\n")
        print(notes(runs))
    failed = any(
        run.total("lost") or run.total("executed_twice") or run.total("keys_with_two_tasks")
        for run in runs
    ) or any(
        trial.error or trial.cut_leaks or trial.victim_acks_in_cut
        for run in runs
        for trial in run.trials
    )
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, "process")
