"""Coordinator failover of active-passive clusters, against etcd's own leader failover.

Usage::

    .venv/bin/python -m bench.failover [--trials N] [--backends raft,etcd]
        [--etcd-leases 2,1,1@50/250] [--etcd-timings 50/250] [--before S]
        [--after S] [--interval S] [--rpc-timeout S] [--failover-timeout S]
        [--settle-timeout S] [--launch-timeout S] [--load-seconds S]
        [--load-clients C] [--skip-load] [--keep] [--json] [--json-out PATH]

In one run, every cluster being real ``praxis node`` processes on 127.0.0.1
with ephemeral ports:

1. **Coordinator failover.** A 3-node active-passive cluster
   (:class:`praxis_grpc.launcher.LocalMesh`, raft at the config defaults; etcd
   once per ``--etcd-leases`` entry: the lease TTL, optionally ``@HB/ET`` ms
   for the local etcd instead of LocalMesh's). Per trial a client submits
   ``echo`` tasks (wait=False, a fresh idempotency key per call) to every node
   continuously, the coordinator is SIGKILLed, and the time from the kill to
   the first submission acknowledged by the new coordinator is taken. Then
   the killed node is started again from its config and the next trial
   begins once the cluster has one coordinator, two standbys and a full
   mesh: the same cluster for every trial, the coordinator moving around.
2. **Tasks.** After each trial every acknowledged task must be found and end
   COMPLETED, resending its key must return the same task, and no key may
   map to two task ids nor a task run on two nodes (every node's ListTasks).
3. **etcd's own leader failover** on a fresh 3-member etcd per timing: the
   timings the praxis etcd clusters used, raft's heartbeat/election timeout,
   and ``--etcd-timings``.
4. **Accepted tasks/s**: SubmitTask(wait=False, echo) from ``--load-clients``
   coroutines in a separate process for ``--load-seconds``, against fresh
   3-node clusters: active-active (spread over the nodes), and active-passive
   raft and etcd (default lease, at the coordinator, then at a standby).
   These run first.

Run it by hand; tests never run it. SIGTERM and Ctrl-C stop every process
the run started and remove its temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench._cluster import log_problems, problems_since
from bench._common import (
    add_json_out,
    choice_list,
    command_line,
    header,
    machine,
    positive_int,
    positive_seconds,
    progress,
    run_main,
    write_json,
)
from bench._etcd_failover import EtcdFailover, leader_failover
from bench._failover_client import account, kill_under_load, listings
from bench._failover_load import LoadSettings, active_active_load, active_passive_load
from bench._failover_report import (
    ClusterRun,
    LoadRow,
    Trial,
    etcd_table,
    failover_table,
    load_table,
    notes,
    targets_table,
    tasks_table,
)
from bench._ha_cluster import HaMesh, OtherCpu, coordinator, granted_lease_ttls, restart
from praxis_grpc.config import EtcdConfig, RaftConfig
from praxis_grpc.launcher import LaunchError
from praxis_grpc.testing.etcd_cluster import EtcdClusterError

BACKENDS = ("raft", "etcd")
BASE_CONFIG: dict[str, Any] = {
    "tools": {"builtins": ["echo"]},
    "tasks": {"max_concurrency": 64, "queue_limit": 1_000},
}
NOISY_PCT = 10.0

Timing = tuple[float, float]


@dataclass(frozen=True)
class EtcdLease:
    """One etcd-backed cluster to run: the praxis lease TTL and the etcd timing."""

    ttl: int
    timing: Timing | None = None

    @property
    def label(self) -> str:
        """e.g. ``etcd lease 1 s, etcd 50/250 ms``."""
        own = "" if self.timing is None else f", etcd {_ms(self.timing)}"
        return f"etcd lease {self.ttl} s{own}"


def _ms(timing: Timing) -> str:
    return f"{timing[0] * 1000:.0f}/{timing[1] * 1000:.0f} ms"


def timing(text: str) -> Timing:
    """``HB/ET`` in milliseconds to seconds."""
    try:
        heartbeat, election = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEARTBEAT/ELECTION in ms, got {text!r}"
        ) from None
    if heartbeat < 1 or election < 5 * heartbeat:
        raise argparse.ArgumentTypeError(f"{text}: the election timeout must be >= 5 heartbeats")
    return heartbeat / 1000, election / 1000


def timings(text: str) -> list[Timing]:
    """argparse type: comma-separated ``HB/ET`` (ms)."""
    return [timing(part) for part in text.split(",") if part.strip()]


def leases(text: str) -> list[EtcdLease]:
    """argparse type: comma-separated ``TTL`` or ``TTL@HB/ET`` (seconds, ms)."""
    found = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        ttl, _, own = part.partition("@")
        found.append(EtcdLease(positive_int(ttl), timing(own) if own else None))
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--trials", type=positive_int, default=10, help="kills per cluster (default: 10)")
    add("--backends", type=choice_list(BACKENDS), default=list(BACKENDS))
    add(
        "--etcd-leases",
        type=leases,
        default=leases("2,1,1@50/250"),
        help="etcd clusters to run: lease TTL s, optionally @HB/ET ms of the local etcd "
        "(default: 2,1,1@50/250)",
    )
    add(
        "--etcd-timings",
        type=timings,
        default=timings("50/250"),
        help="more etcd HB/ET (ms) for etcd's own leader failover (default: 50/250)",
    )
    add("--before", type=positive_seconds, default=1.0, help="submitting before the kill")
    add("--after", type=positive_seconds, default=0.5, help="submitting after the takeover")
    add("--interval", type=positive_seconds, default=0.02, help="pause between a node's calls")
    add("--rpc-timeout", type=positive_seconds, default=2.0, help="deadline of each call")
    add("--failover-timeout", type=positive_seconds, default=30.0, help="bound on a takeover")
    add("--settle-timeout", type=positive_seconds, default=60.0, help="bound on tasks finishing")
    add("--launch-timeout", type=positive_seconds, default=60.0, help="bound on (re)starts")
    add("--load-seconds", type=positive_seconds, default=5.0, help="measured load per target")
    add("--load-clients", type=positive_int, default=16, help="load coroutines (default: 16)")
    add("--skip-load", action="store_true", help="no accepted-tasks/s measurement")
    add("--keep", action="store_true", help="keep node directories and logs")
    add("--json", action="store_true", help="print JSON instead of Markdown")
    add_json_out(parser)
    return parser.parse_args(argv)


def run_trial(mesh: HaMesh, run: ClusterRun, number: int, slug: str, args: Any) -> Trial:
    """Kill the coordinator under load, account for the tasks, restart the node."""
    old = coordinator(mesh, args.launch_timeout)
    victim = next(node for node in mesh.nodes if node.name == old.name)
    agent_ids = {node.name: str(node.info["agent_id"]) for node in mesh.nodes}
    names = {agent_id: name for name, agent_id in agent_ids.items()}
    trial = Trial(number, victim.name, old_term=old.term)
    run.trials.append(trial)
    prefix = f"{slug}-t{number:02d}"
    takeover = asyncio.run(
        kill_under_load(
            list(mesh.nodes),
            victim,
            prefix,
            old_term=old.term,
            before=args.before,
            after=args.after,
            interval=args.interval,
            rpc_timeout=args.rpc_timeout,
            within=args.failover_timeout,
        )
    )
    trial.attempts = len(takeover.attempts)
    for attempt in takeover.attempts:
        if attempt.code != "OK":
            trial.failed_by_code[attempt.code] = trial.failed_by_code.get(attempt.code, 0) + 1
    trial.failover_s, trial.acked_by = takeover.failover_s, takeover.acked_by
    trial.elected_s = takeover.elected_s
    trial.reaped_s = takeover.reaped_at - takeover.killed_at
    trial.timeline = [
        (a.started - takeover.killed_at, a.ended - takeover.killed_at, a.node, a.code)
        for a in takeover.attempts
    ]
    trial.new_coordinator = names.get(takeover.coordinator_id, takeover.coordinator_id)
    trial.new_term = takeover.term
    trial.confirmed = takeover.coordinator_id not in ("", old.agent_id) and takeover.term > old.term
    if takeover.first_ack is None:
        trial.error = f"nothing acknowledged within {args.failover_timeout:g} s of the kill"
    acked = [a for a in takeover.attempts if a.code == "OK"]
    survivors = [node for node in mesh.nodes if node is not victim]
    accounting = asyncio.run(
        account(survivors, acked, within=args.settle_timeout, rpc_timeout=args.rpc_timeout)
    )
    trial.acknowledged, trial.completed = accounting.acknowledged, accounting.completed
    trial.other_terminal, trial.missing = accounting.other_terminal, accounting.missing
    trial.unfinished, trial.settled_s = accounting.unfinished, accounting.settled_s
    trial.key_remapped, trial.key_unchecked = accounting.key_remapped, accounting.key_unchecked
    trial.restart_s = restart(mesh, victim, args.launch_timeout)
    listing = asyncio.run(
        listings(mesh.nodes, agent_ids, prefix, {a.task_id for a in acked}, args.rpc_timeout)
    )
    acked_keys = {a.key for a in acked}
    trial.accepted_unacked = len(set(listing.ids_by_key) - acked_keys)
    trial.duplicate_keys, trial.ran_twice = listing.duplicate_keys, listing.ran_twice
    trial.reruns, trial.stale, trial.stale_get = listing.reruns, listing.stale, listing.stale_get
    progress(
        f"{run.label} trial {number}: killed {victim.name} (term {old.term}); "
        f"failover {trial.failover_s if trial.failover_s is None else round(trial.failover_s, 3)}"
        f" s, acked via {trial.acked_by} -> {trial.new_coordinator} term {trial.new_term}; "
        f"{trial.acknowledged} acked, {trial.completed} completed, lost {trial.lost}, "
        f"duplicated {trial.duplicated}"
    )
    return trial


def run_cluster(root: Path, backend: str, lease: EtcdLease | None, args: Any) -> ClusterRun:
    """Every trial on one active-passive cluster."""
    label = "raft" if lease is None else lease.label
    slug = label.replace(" ", "").replace(",", "-").replace("/", "-")
    run = ClusterRun(label, backend)
    if backend == "raft":
        raft = RaftConfig()
        run.settings = {"election_timeout_s": raft.election_timeout, "heartbeat_s": raft.heartbeat}
    mesh = HaMesh(
        root / slug,
        3,
        BASE_CONFIG,
        mode="active-passive",
        backend=backend,
        lease_ttl=None if lease is None else lease.ttl,
        etcd_timing=None if lease is None else lease.timing,
    )
    try:
        mesh.start(args.launch_timeout)
        if mesh.etcd is not None:
            run.etcd_timing = (mesh.etcd.heartbeat, mesh.etcd.election_timeout)
            run.settings = {
                "lease_ttl_s": lease.ttl if lease is not None else EtcdConfig().lease_ttl,
                "etcd": _ms(run.etcd_timing),
            }
            run.granted_lease_s = granted_lease_ttls(mesh.etcd)
        progress(f"{label}: 3 nodes up, roles {mesh.roles()}")
        for number in range(1, args.trials + 1):
            trial = run_trial(mesh, run, number, slug, args)
            if trial.error:
                break
    except (LaunchError, EtcdClusterError, OSError, grpc.RpcError, TimeoutError) as exc:
        run.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        progress(f"{label}: {run.error}")
    finally:
        run.log_problems = log_problems(mesh.nodes)
        run.exit_codes = mesh.stop()
        run.log_problems_shutdown = problems_since(run.log_problems, log_problems(mesh.nodes))
    return run


@dataclass
class Run:
    """The whole invocation."""

    clusters: list[ClusterRun]
    etcd: list[EtcdFailover]
    loads: list[LoadRow]
    other_cpu_pct: dict[str, float] = field(default_factory=dict)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])


def _load_settings(args: Any) -> LoadSettings:
    return LoadSettings(
        args.load_clients, args.load_seconds, args.settle_timeout, args.launch_timeout
    )


def run_benchmark(args: Any, root: Path) -> Run:
    """The load runs, every failover cluster, then etcd's own failover at each timing."""
    result = Run([], [], [])
    if not args.skip_load:
        settings = _load_settings(args)
        window = OtherCpu()
        result.loads.append(active_active_load(root, BASE_CONFIG, settings))
        for backend in args.backends:
            result.loads.extend(active_passive_load(root, BASE_CONFIG, backend, settings))
        result.other_cpu_pct["load runs"] = window.percent()
    plans: list[tuple[str, EtcdLease | None]] = []
    if "raft" in args.backends:
        plans.append(("raft", None))
    if "etcd" in args.backends:
        plans.extend(("etcd", lease) for lease in args.etcd_leases)
    for backend, lease in plans:
        window = OtherCpu()
        run = run_cluster(root, backend, lease, args)
        result.other_cpu_pct[run.label] = window.percent()
        result.clusters.append(run)
    wanted: list[Timing] = [run.etcd_timing for run in result.clusters if run.etcd_timing]
    if "raft" in args.backends:
        raft = RaftConfig()
        wanted.append((raft.heartbeat, raft.election_timeout))
    for heartbeat, election in dict.fromkeys([*wanted, *args.etcd_timings]):
        window = OtherCpu()
        etcd = leader_failover(heartbeat, election, args.trials, args.failover_timeout)
        result.other_cpu_pct[f"etcd {etcd.label}"] = window.percent()
        progress(f"etcd {etcd.label}: first {etcd.first_s}, all {etcd.agreed_s} {etcd.error}")
        result.etcd.append(etcd)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    info = machine()
    root = Path(tempfile.mkdtemp(prefix="praxis-failover-bench-"))
    try:
        result = run_benchmark(args, root)
    finally:
        if args.keep:
            progress(f"node directories and logs kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    command = command_line()
    document = _document(result, info, command)
    write_json(args.json_out, document)
    if args.json:
        print(json.dumps(document, indent=2, default=list))
    else:
        _print_markdown(result, info, command, args)
    trials = [t for run in result.clusters for t in run.trials]
    failed = any(run.error for run in result.clusters) or any(
        t.error or t.lost or t.duplicated for t in trials
    )
    return 1 if failed else 0


def _document(result: Run, info: dict[str, str], command: str) -> dict[str, Any]:
    asdict: Callable[[Any], dict[str, Any]] = dataclasses.asdict
    return {
        "command": command,
        "machine": info,
        "base_config": BASE_CONFIG,
        "clusters": [asdict(run) for run in result.clusters],
        "etcd_leader_failover": [{**asdict(e), "label": e.label} for e in result.etcd],
        "accepted_tasks": [asdict(row) for row in result.loads],
        "load_average_before": result.load_before,
        "other_cpu_pct": result.other_cpu_pct,
    }


def _print_markdown(result: Run, info: dict[str, str], command: str, args: Any) -> None:
    print(header(info, command))
    print(
        f"nodes: 3 praxis node processes per cluster, tools [echo], tasks.max_concurrency 64; "
        f"client: one sender per node, {args.interval * 1000:g} ms between calls, "
        f"{args.rpc_timeout:g} s deadline, killed after {args.before:g} s; "
        f"1-minute load average before the run: {result.load_before:.2f}\n"
    )
    print(
        "Coordinator failover: SIGKILL of the coordinator to the first submission "
        "acknowledged by the new one\n"
    )
    print(failover_table(result.clusters))
    print("\netcd's own leader failover: SIGKILL of the leader member to a new leader in Status\n")
    print(etcd_table(result.etcd))
    print("\nAcknowledged tasks, summed over each cluster's trials\n")
    print(tasks_table(result.clusters))
    if result.loads:
        print(
            f"\nAccepted tasks/s: SubmitTask(wait=False, echo), {args.load_seconds:g} s after "
            "1 s of warm-up\n"
        )
        print(load_table(result.loads))
    print("\nTargets:\n")
    print(targets_table(result.clusters, result.etcd))
    print("\nNotes:\n")
    print(notes(result.clusters, result.etcd, result.loads))
    noisy = {phase: pct for phase, pct in result.other_cpu_pct.items() if pct >= NOISY_PCT}
    if noisy:
        listed = ", ".join(f"{phase} {pct:.0f}%" for phase, pct in noisy.items())
        print(f"- the machine was not quiet: other processes used, in % of one core: {listed}")


if __name__ == "__main__":
    run_main(main, "process")
