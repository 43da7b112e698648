"""SubmitTask(wait=True) delegated from one praxis node to another, against a raw gRPC ceiling.

Usage::

    .venv/bin/python -m bench.delegated_roundtrip [--requests N] [--concurrency 1,16]
        [--targets echo,delegated,direct] [--duration-cap SECONDS] [--warmup N]
        [--rounds R] [--launch-timeout SECONDS] [--cluster] [--secure] [--keep] [--json]

Starts, in separate processes, a raw ``grpc.aio`` echo server
(:mod:`bench.echo_server`) and two ``praxis node`` processes meshed over
libp2p: node A offers only ``system_info`` and node B only ``echo``, so every
``SubmitTask(tool="echo", wait=True)`` sent to A is routed to B and delegated
over gRPC. Once A's ``ListCards`` lists B with ``echo``, each round drives, at
each concurrency, every target in turn from a fresh load process
(:mod:`bench.load`):

- ``echo``: the echo server, the most a Python gRPC server does here;
- ``delegated``: SubmitTask at A, executed by B (every result's
  ``owner_agent_id`` must be B; other owners are counted);
- ``direct``: SubmitTask at B, which runs it itself (no delegation), to show
  what the hop costs;
- ``proxy-unary`` and ``proxy-stream``: the floor under ``delegated``, bare
  ``grpc.aio`` servers with no praxis work (:mod:`bench.proxy_floor`): A
  forwards each call to a B that answers at once, as one unary call each or
  over one bidirectional stream multiplexed by call id (the transport of the
  peer session); the same message sizes as SubmitTask's;
- ``proxy-stream-trio``, ``proxy-stream-heap`` (not run by default): that
  stream floor with one of a praxis node's traits each (a trio thread waking
  as often as libp2p's, with as much Python work; praxis' node modules
  imported, a node's heap), to isolate why grpc/asyncio work costs more in
  a node (issue 11, README "Seventh pass").

With ``--cluster`` the nodes get node certificates from a fresh CA (``cluster``
section): admission on the mesh, and delegation over the members-only peer
listener with mutual TLS (SECURITY.md); run with and without to see its cost.

With ``--secure`` a second pair of nodes runs beside the first, with
everything on: the cluster CA (admission, the members-only peer listener with
mutual TLS), ``api.tls`` and ``api.auth`` (the load process speaks TLS and
sends an admin bearer token). Each praxis target gets a ``-secure`` twin
measured next to it (``delegated``, then ``delegated-secure``; the other way
round in even rounds), and a second table gives the cost of security read off
the same run: req/s, p50/p95 and CPU per task, secure against plain, and
whether the cost stays under the issue's 20% bound.

Reports medians over rounds, throughput as a fraction of echo's, and the CPU
each server process used per request (user + system, warm-up included): on a
shared machine CPU per request moves far less than req/s. Run it by hand;
tests never run it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._cluster import (
    Cluster,
    describe_problems,
    log_problems,
    problems_since,
    wait_for_tool,
)
from bench._common import (
    CpuWindow,
    choice_list,
    command_line,
    header,
    int_list,
    interrupts_deferred,
    machine,
    median,
    positive_int,
    positive_seconds,
    progress,
    run_main,
)
from bench._secure_pair import (
    SECURE_SUFFIX,
    Security,
    round_order,
    secure_configs,
    security_table,
    with_certificates,
    with_secure_twins,
)
from bench.echo_server import echo_server_process
from bench.load import LoadResult, load_process
from bench.proxy_floor import proxy_processes
from praxis_grpc.credentials import ClientCredentials

PLAIN_TARGETS = ("echo", "delegated", "direct")
PROXY_TARGETS = ("proxy-unary", "proxy-stream")
# The stream floor with a praxis node's traits: target -> bench.proxy_floor options.
FLOOR_VARIANTS = {
    "proxy-stream-trio": ("--trio-rate=130", "--trio-work-us=100"),
    "proxy-stream-heap": ("--praxis-heap",),
}
TARGETS = (
    *PLAIN_TARGETS,
    *PROXY_TARGETS,
    *FLOOR_VARIANTS,
    "delegated" + SECURE_SUFFIX,
    "direct" + SECURE_SUFFIX,
)
TARGET_RATIO = 0.3
TARGET_CONCURRENCY = 16
NODE_A, NODE_B = "node-a", "node-b"
SECURE_PREFIX = "secure-"
# As in production (metrics on), with room for every client coroutine; cards
# every second so B's card (and its echo tool) reaches A quickly.
BASE_CONFIG: dict[str, Any] = {
    "metrics": {"enabled": True},
    "tasks": {"max_concurrency": 64, "queue_limit": 1_000},
    "cards": {"heartbeat": "1s"},
}
NODE_CONFIGS: dict[str, dict[str, Any]] = {
    NODE_A: {**BASE_CONFIG, "tools": {"builtins": ["system_info"]}},
    NODE_B: {**BASE_CONFIG, "tools": {"builtins": ["echo"]}},
}


@dataclass(frozen=True)
class Measurement:
    """One load run, the server CPU it cost and what else ran meanwhile.

    Attributes:
        target: echo, delegated or direct.
        load: What the load process measured.
        cpu_us: CPU µs per request served (warm-up included), by server process.
        other_cpu_pct: CPU of everything but the processes this run started
            (servers, load process) and this process, in % of one core.
    """

    target: str
    load: LoadResult
    cpu_us: dict[str, float]
    other_cpu_pct: float

    @property
    def concurrency(self) -> int:
        """Client coroutines."""
        return self.load.concurrency


@dataclass(frozen=True)
class Summary:
    """The median over rounds of one target at one concurrency."""

    target: str
    concurrency: int
    requests: int
    errors: int
    wrong_owner: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_us: float
    cpu_us: dict[str, float] = field(default_factory=dict)
    ratio: float = math.nan


def default_requests(concurrency: int) -> int:
    """Requests measured per run when ``--requests`` is not given."""
    return 1000 if concurrency == 1 else 3000


@dataclass(frozen=True)
class Plan:
    """How one target is driven.

    Attributes:
        address: Where the load process sends its calls.
        charged: Server process name to the column its CPU is reported in.
        security: The CA and token of the secure nodes, or None (plaintext).
    """

    address: str
    charged: Mapping[str, str]
    security: Security | None = None


def measure(
    target: str,
    plan: Plan,
    servers: Mapping[str, int],
    concurrency: int,
    requests: int,
    args: argparse.Namespace,
    expect_owner: str = "",
) -> Measurement:
    """Run one load process as ``plan`` says; report the CPU of its charged servers.

    ``servers`` (name: pid) are every server process this run started; the
    ones not charged are idle, and not counted as other processes either.

    Raises:
        RuntimeError: the load process failed or overran its time allowance.
    """
    window = CpuWindow(servers)
    security = plan.security
    load = load_process(
        target if target == "echo" else "proxy" if target.startswith("proxy-") else "praxis",
        plan.address,
        concurrency=concurrency,
        requests=requests,
        warmup=args.warmup,
        duration_cap=args.duration_cap,
        expect_owner=expect_owner,
        cacert=security.cacert if security else None,
        token=security.token if security else "",
    )
    used, others = window.finish()
    served = load.warmup_requests + load.requests
    cpu_us = {
        column: 1e6 * used[name] / served if served else math.nan
        for name, column in plan.charged.items()
    }
    return Measurement(target, load, cpu_us, others)


def summarize(
    runs: Sequence[Measurement], concurrencies: Sequence[int], targets: Sequence[str]
) -> list[Summary]:
    """Medians per target and concurrency; requests, errors and wrong owners are summed."""
    rows: list[Summary] = []
    for concurrency in concurrencies:
        echo_rps = median(m.load.rps for m in runs if _is(m, "echo", concurrency))
        for target in targets:
            chosen = [m for m in runs if _is(m, target, concurrency)]
            rps = median(m.load.rps for m in chosen)
            names = list(chosen[0].cpu_us) if chosen else []
            cpu = {name: median(m.cpu_us[name] for m in chosen) for name in names}
            rows.append(
                Summary(
                    target=target,
                    concurrency=concurrency,
                    requests=sum(m.load.requests for m in chosen),
                    errors=sum(m.load.errors for m in chosen),
                    wrong_owner=sum(m.load.owner_mismatches for m in chosen),
                    rps=rps,
                    p50_ms=median(m.load.p50_ms for m in chosen),
                    p95_ms=median(m.load.p95_ms for m in chosen),
                    p99_ms=median(m.load.p99_ms for m in chosen),
                    server_cpu_us=median(sum(m.cpu_us.values()) for m in chosen),
                    cpu_us=cpu,
                    ratio=rps / echo_rps if echo_rps else math.nan,
                )
            )
    return rows


def _is(run: Measurement, target: str, concurrency: int) -> bool:
    return run.target == target and run.concurrency == concurrency


def _cpu_cell(row: Summary, name: str) -> str:
    value = row.cpu_us.get(name)
    return "n/a" if value is None else f"{value:.0f}"


def markdown(rows: Sequence[Summary], rounds: int) -> str:
    """The summary table."""
    lines = [
        "| target | concurrency | requests | errors | wrong owner | req/s | p50 ms | p95 ms "
        "| p99 ms | server CPU µs/req | A µs/req | B µs/req | x echo req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.target} | {r.concurrency} | {r.requests} | {r.errors} "
        f"| {'n/a' if r.target == 'echo' else r.wrong_owner} | {r.rps:.0f} "
        f"| {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | {r.server_cpu_us:.0f} "
        f"| {_cpu_cell(r, NODE_A)} | {_cpu_cell(r, NODE_B)} | {r.ratio:.2f} |"
        for r in rows
    )
    lines.append(
        "\nserver CPU is the echo server's for echo and A + B for the others "
        "(A idles during direct)."
    )
    if rounds > 1:
        lines.append(f"Median of {rounds} rounds; requests, errors and wrong owners are totals.")
    return "\n".join(lines)


def targets_table(rows: Sequence[Summary]) -> str:
    """The throughput target against what was measured."""
    delegated = [r for r in rows if r.target == "delegated"]
    if not delegated or not any(r.target == "echo" for r in rows):
        return "(needs the echo and delegated targets)"
    row = next(
        (r for r in delegated if r.concurrency == TARGET_CONCURRENCY),
        max(delegated, key=lambda r: r.concurrency),
    )
    met = "yes" if row.ratio >= TARGET_RATIO else "no"
    return (
        "| target | limit | measured | met |\n|---|---:|---:|---|\n"
        f"| delegated req/s as a fraction of echo, c={row.concurrency} "
        f"| >= {TARGET_RATIO} | {row.ratio:.2f} | {met} |"
    )


@dataclass
class Run:
    """A whole invocation: every measurement and what the nodes left behind."""

    load_before: float = math.nan
    runs: list[Measurement] = field(default_factory=list)
    agent_ids: dict[str, str] = field(default_factory=dict)
    cards_after_s: float | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)
    log_problems_run: dict[str, int] = field(default_factory=dict)
    log_problems_shutdown: dict[str, int] = field(default_factory=dict)


def notes(run: Run) -> str:
    """Errors, wrong owners, machine noise and node-log problems worth a look."""
    lines: list[str] = []
    for m in run.runs:
        load = m.load
        if load.errors:
            lines.append(
                f"- {m.target} c={m.concurrency}: {load.errors} errors, e.g. "
                f"{'; '.join(load.error_samples)}"
            )
        if load.owner_mismatches:
            lines.append(
                f"- {m.target} c={m.concurrency}: {load.owner_mismatches} tasks not owned by "
                f"B ({run.agent_ids.get(NODE_B, '?')}), owners seen: "
                f"{', '.join(load.owner_samples)}"
            )
    noisy = [m for m in run.runs if m.other_cpu_pct >= 10.0]
    if noisy:
        worst = max(noisy, key=lambda m: m.other_cpu_pct)
        lines.append(
            f"- the machine was not quiet in {len(noisy)} of {len(run.runs)} runs: other "
            f"processes used up to {worst.other_cpu_pct:.0f}% of a core "
            f"({worst.target} c={worst.concurrency})"
        )
    odd_exits = {name: code for name, code in run.exit_codes.items() if code != 0}
    if odd_exits:
        lines.append(f"- node exit codes after SIGTERM: {odd_exits}")
    for label, problems in (
        ("during the run", run.log_problems_run),
        ("at shutdown", run.log_problems_shutdown),
    ):
        if problems:
            lines.append(f"- node logs {label}: {describe_problems(problems)}")
    return "\n".join(lines) if lines else "- nothing odd: no errors, wrong owners or log warnings"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.delegated_roundtrip", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        help="measured requests per run (default: 1000 at concurrency 1, 3000 above)",
    )
    parser.add_argument("--concurrency", type=int_list(1, "1,16"), default=[1, 16])
    parser.add_argument(
        "--targets",
        type=choice_list(TARGETS),
        default=[*PLAIN_TARGETS, *PROXY_TARGETS],
        help=(
            "which of echo,delegated,direct,proxy-unary,proxy-stream,proxy-stream-trio,"
            "proxy-stream-heap,delegated-secure,direct-secure to run "
            "(default: echo,delegated,direct,proxy-unary,proxy-stream, in that order)"
        ),
    )
    parser.add_argument(
        "--duration-cap",
        type=positive_seconds,
        default=60.0,
        help="seconds per measured run (and per warm-up); stops early (default: 60)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="requests before measuring")
    parser.add_argument("--rounds", type=positive_int, default=1, help="repeat; report the median")
    parser.add_argument(
        "--launch-timeout",
        type=positive_seconds,
        default=60.0,
        help="bound on each node start and on B's card reaching A (default: 60)",
    )
    parser.add_argument(
        "--cluster", action="store_true", help="admission and mutual TLS between the nodes"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help=(
            "also run a pair of nodes with the cluster CA, mutual TLS between them, "
            "api.tls and a token: each praxis target gets a -secure twin right after it"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the node directories and logs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    if args.secure:
        args.targets = with_secure_twins(args.targets, TARGETS)
    return args


def run_benchmark(args: argparse.Namespace, root: Path) -> Run:
    """Start the servers, measure every round, stop every process."""
    result = Run(load_before=os.getloadavg()[0])
    plain_root = root / "plain"
    plain_root.mkdir(parents=True)
    configs = with_certificates(plain_root, NODE_CONFIGS) if args.cluster else NODE_CONFIGS
    clusters = {"": Cluster(plain_root, configs)}
    security = None
    if any(t.endswith(SECURE_SUFFIX) for t in args.targets):
        secure_root = root / "secure"
        secure_root.mkdir(parents=True)
        secure, security = secure_configs(secure_root, NODE_CONFIGS)
        clusters[SECURE_PREFIX] = Cluster(secure_root, secure)
    with contextlib.ExitStack() as stack:
        with interrupts_deferred():
            echo_address, echo_pid = stack.enter_context(echo_server_process())
        progress(f"echo server pid {echo_pid} on {echo_address}")
        servers = {"echo": echo_pid}
        plans = {"echo": Plan(echo_address, {"echo": "echo"})}
        for target in (*PROXY_TARGETS, *FLOOR_VARIANTS):
            if target in args.targets:
                with interrupts_deferred():
                    kind = target.split("-")[1]
                    options = FLOOR_VARIANTS.get(target, ())
                    address, a_pid, b_pid = stack.enter_context(proxy_processes(kind, *options))
                progress(f"{target}: A pid {a_pid} on {address}, B pid {b_pid}")
                servers |= {f"{target}-a": a_pid, f"{target}-b": b_pid}
                plans[target] = Plan(address, {f"{target}-a": NODE_A, f"{target}-b": NODE_B})
        owners: dict[str, str] = {}
        try:
            for prefix, cluster in clusters.items():
                cluster.start(args.launch_timeout)
                a, b = cluster.node(NODE_A), cluster.node(NODE_B)
                result.agent_ids |= {
                    prefix + NODE_A: a.info["agent_id"],
                    prefix + NODE_B: b.info["agent_id"],
                }
                progress(
                    f"{prefix}{NODE_A} pid {a.pid} on {a.grpc}; "
                    f"{prefix}{NODE_B} pid {b.pid} on {b.grpc}"
                )
                credentials = (
                    ClientCredentials(cacert=security.cacert, token=security.token)
                    if prefix and security
                    else None
                )
                took, _ = asyncio.run(
                    wait_for_tool(a.grpc, "echo", [NODE_B], args.launch_timeout, credentials)
                )
                if not prefix:
                    result.cards_after_s = took
                progress(f"{prefix}{NODE_A} lists {NODE_B} with echo after {took:.2f} s")
                servers |= {prefix + NODE_A: a.pid, prefix + NODE_B: b.pid}
                charged = {prefix + NODE_A: NODE_A, prefix + NODE_B: NODE_B}
                suffix = SECURE_SUFFIX if prefix else ""
                plan_security = security if prefix else None
                plans["delegated" + suffix] = Plan(a.grpc, charged, plan_security)
                plans["direct" + suffix] = Plan(b.grpc, charged, plan_security)
                owners["delegated" + suffix] = owners["direct" + suffix] = b.info["agent_id"]
            for round_number in range(1, args.rounds + 1):
                for concurrency in args.concurrency:
                    requests = args.requests or default_requests(concurrency)
                    for target in round_order(args.targets, round_number):
                        run = measure(
                            target,
                            plans[target],
                            servers,
                            concurrency,
                            requests,
                            args,
                            owners.get(target, ""),
                        )
                        progress(f"round {round_number}: {_describe(run)}")
                        result.runs.append(run)
        finally:
            nodes = [node for cluster in clusters.values() for node in cluster.nodes]
            result.log_problems_run = log_problems(nodes)
            for prefix, cluster in clusters.items():
                exits = cluster.stop()
                result.exit_codes |= {prefix + name: code for name, code in exits.items()}
            result.log_problems_shutdown = problems_since(
                result.log_problems_run, log_problems(nodes)
            )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    info = machine()  # before any node starts: the revision they run
    root = Path(tempfile.mkdtemp(prefix="praxis-delegated-bench-"))
    try:
        result = run_benchmark(args, root)
    finally:
        if args.keep:
            progress(f"node directories and logs kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rows = summarize(result.runs, args.concurrency, args.targets)
    command = command_line()
    if args.json:
        document = {
            "command": command,
            "machine": info,
            "node_configs": NODE_CONFIGS,
            "agent_ids": result.agent_ids,
            "target": {"ratio": TARGET_RATIO, "concurrency": TARGET_CONCURRENCY},
            "summary": [dataclasses.asdict(row) for row in rows],
            "runs": [dataclasses.asdict(run) for run in result.runs],
            "exit_codes": result.exit_codes,
            "log_problems_run": result.log_problems_run,
            "log_problems_shutdown": result.log_problems_shutdown,
        }
        print(json.dumps(document, indent=2))
    else:
        print(header(info, command))
        print(
            f"nodes: {NODE_A} (tools: system_info) delegates echo to {NODE_B} (tools: echo) "
            f"over gRPC, found over libp2p; 1-minute load average before the run: "
            f"{result.load_before:.2f}\n"
        )
        print(markdown(rows, args.rounds))
        if args.secure:
            print(
                "\nCost of security (secure: cluster CA with admission and mutual TLS "
                "between the nodes, api.tls, a bearer token):\n"
            )
            print(security_table(rows))
        print("\nTargets:\n")
        print(targets_table(rows))
        print("\nNotes:\n")
        print(notes(result))
    failed = any(row.errors or row.wrong_owner for row in rows)
    return 1 if failed else 0


def _describe(run: Measurement) -> str:
    load = run.load
    cpu = ", ".join(f"{name} {us:.0f}" for name, us in run.cpu_us.items())
    text = (
        f"{run.target} c={load.concurrency}: {load.requests} requests, {load.errors} errors, "
        f"{load.owner_mismatches} wrong owner, {load.rps:.0f} req/s, "
        f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, CPU µs/req {cpu}, "
        f"other processes {run.other_cpu_pct:.0f}% of a core"
    )
    if load.errors:
        text += f"; errors: {list(load.error_samples)}"
    return text


if __name__ == "__main__":
    run_main(main)
