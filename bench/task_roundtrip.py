"""SubmitTask(wait=True) round trips on one praxis node against a raw gRPC echo ceiling.

Usage::

    .venv/bin/python -m bench.task_roundtrip [--requests N] [--concurrency 1,16]
        [--duration-cap SECONDS] [--warmup N] [--rounds R] [--json] [--json-out PATH]
        [--tool {echo,calculator}] [--secure]

Starts, in separate processes, a raw ``grpc.aio`` echo server
(:mod:`bench.echo_server`) and one ``praxis node`` with the ``echo`` tool and
metrics enabled, then for each round and concurrency drives echo and praxis
alternately from a fresh load process (:mod:`bench.load`). Reports the median
over rounds and praxis throughput as a fraction of echo at the same
concurrency. Server CPU per request (user + system time of the server
process across warm-up and measurement) is reported too: unlike req/s it barely
moves when other work shares the machine. With ``--tool calculator`` praxis
runs the ``calculator`` (computed in the node's worker processes, so the
result shows what the worker pool costs over ``echo``, which runs inline).
With ``--secure`` a second node serves the same calls over TLS with a bearer
token (``api.tls``, ``api.auth``; target ``praxis-secure``), measured in the
same rounds, so the cost of security is read off one run.
Run it by hand; tests never run it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench._common import (
    add_json_out,
    command_line,
    cpu_seconds,
    header,
    int_list,
    interrupts_deferred,
    machine,
    median,
    positive_int,
    progress,
    run_main,
    write_json,
)
from bench.echo_server import echo_server_process
from bench.load import TOOLS, LoadResult, load_process
from praxis_grpc.testing import node_process

# As in production (metrics on), with room for every client coroutine.
NODE_OVERRIDES: dict[str, dict[str, Any]] = {
    "metrics": {"enabled": True},
    "tasks": {"max_concurrency": 64, "queue_limit": 1_000},
}
TARGETS = ("echo", "praxis", "praxis-secure")


@dataclass(frozen=True)
class Measurement:
    """One load run and the server CPU time it cost."""

    load: LoadResult
    server_cpu_us: float

    @property
    def target(self) -> str:
        """echo or praxis."""
        return self.load.target

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
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float
    ratio: float


def default_requests(concurrency: int) -> int:
    """Requests measured per run when ``--requests`` is not given."""
    return 1000 if concurrency == 1 else 3000


def measure(
    target: str,
    address: str,
    server: psutil.Process,
    concurrency: int,
    requests: int,
    args: argparse.Namespace,
    security: Security | None = None,
) -> Measurement:
    """Run :mod:`bench.load` in a fresh process against ``server``
    (over TLS with a token with ``security``).

    Raises:
        RuntimeError: the load process failed or overran its time allowance.
    """
    cpu_before = cpu_seconds([server.pid])
    load = load_process(
        "echo" if target == "echo" else "praxis",
        address,
        concurrency=concurrency,
        requests=requests,
        warmup=args.warmup,
        duration_cap=args.duration_cap,
        tool=args.tool,
        cacert=security.cacert if security else None,
        token=security.token if security else "",
    )
    load = dataclasses.replace(load, target=target)
    cpu = cpu_seconds([server.pid]) - cpu_before
    served = load.warmup_requests + load.requests
    return Measurement(load, cpu / served * 1e6 if served else float("nan"))


def summarize(runs: Sequence[Measurement], concurrencies: Sequence[int]) -> list[Summary]:
    """Medians per target and concurrency; requests and errors are summed."""
    rows: list[Summary] = []
    for concurrency in concurrencies:
        echo_rps = median(m.load.rps for m in runs if _is(m, "echo", concurrency))
        for target in TARGETS:
            loads = [m.load for m in runs if _is(m, target, concurrency)]
            if not loads:
                continue
            rps = median(r.rps for r in loads)
            rows.append(
                Summary(
                    target=target,
                    concurrency=concurrency,
                    requests=sum(r.requests for r in loads),
                    errors=sum(r.errors for r in loads),
                    rps=rps,
                    p50_ms=median(r.p50_ms for r in loads),
                    p99_ms=median(r.p99_ms for r in loads),
                    server_cpu_us=median(
                        m.server_cpu_us for m in runs if _is(m, target, concurrency)
                    ),
                    ratio=rps / echo_rps if echo_rps else float("nan"),
                )
            )
    return rows


def _is(run: Measurement, target: str, concurrency: int) -> bool:
    return run.target == target and run.concurrency == concurrency


def markdown(rows: Sequence[Summary], rounds: int) -> str:
    """The summary table."""
    lines = [
        "| target | concurrency | requests | errors | req/s | p50 ms | p99 ms "
        "| server CPU µs/req | x echo req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.target} | {r.concurrency} | {r.requests} | {r.errors} | {r.rps:.0f} "
        f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.server_cpu_us:.0f} | {r.ratio:.2f} |"
        for r in rows
    )
    if rounds > 1:
        lines.append(f"\nMedian of {rounds} rounds; requests and errors are totals.")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.task_roundtrip", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        help="measured requests per run (default: 1000 at concurrency 1, 3000 above)",
    )
    parser.add_argument("--concurrency", type=int_list(1, "1,16"), default=[1, 16])
    parser.add_argument(
        "--duration-cap",
        type=float,
        default=60.0,
        help="seconds per measured run (and per warm-up); stops early (default: 60)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="requests before measuring")
    parser.add_argument("--rounds", type=positive_int, default=1, help="repeat; report the median")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    add_json_out(parser)
    parser.add_argument(
        "--tool", choices=TOOLS, default="echo", help="the tool praxis runs (default: echo)"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="also measure a node with TLS and a bearer token (target praxis-secure)",
    )
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Security:
    """What a client of the secure node presents."""

    cacert: Path
    token: str


def secure_overrides(scratch: Path) -> tuple[dict[str, dict[str, Any]], Security]:
    """The node overrides of TLS and tokens (a CA, a node certificate and an
    admin token made in ``scratch``), and what a client presents."""
    from praxis_grpc.api.tokens import Role, add_token
    from praxis_grpc.certs import init_ca, issue

    pki = scratch / "pki"
    init_ca(pki)
    issue(pki, "node", pki, hosts=["127.0.0.1", "localhost"])
    tokens = scratch / "tokens.yaml"
    token = add_token(tokens, "bench", Role.ADMIN)
    overrides = {
        **NODE_OVERRIDES,
        "api": {
            "tls": {"cert": str(pki / "node.crt"), "key": str(pki / "node.key")},
            "auth": {"tokens_file": str(tokens)},
        },
    }
    return overrides, Security(pki / "ca.crt", token)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    info = machine()  # before the node starts: the revision it runs
    runs: list[Measurement] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="praxis-bench-")))
        with interrupts_deferred():
            echo_address, echo_pid = stack.enter_context(echo_server_process())
        with interrupts_deferred():
            node = stack.enter_context(node_process(scratch, overrides=NODE_OVERRIDES))
        progress(f"echo server pid {echo_pid} on {echo_address}")
        progress(f"praxis node pid {node.pid} on {node.grpc} (metrics {node.metrics})")
        servers = {
            "echo": (echo_address, psutil.Process(echo_pid)),
            "praxis": (node.grpc, psutil.Process(node.pid)),
        }
        security = None
        if args.secure:
            overrides, security = secure_overrides(scratch)
            with interrupts_deferred():
                secure = stack.enter_context(
                    node_process(scratch, name="secure", overrides=overrides)
                )
            progress(f"secure praxis node pid {secure.pid} on {secure.grpc} (TLS, token)")
            servers["praxis-secure"] = (secure.grpc, psutil.Process(secure.pid))
        for round_number in range(1, args.rounds + 1):
            for concurrency in args.concurrency:
                requests = args.requests or default_requests(concurrency)
                for target in [t for t in TARGETS if t in servers]:
                    address, server = servers[target]
                    run = measure(
                        target,
                        address,
                        server,
                        concurrency,
                        requests,
                        args,
                        security if target == "praxis-secure" else None,
                    )
                    progress(f"round {round_number}: {_describe(run)}")
                    runs.append(run)
    rows = summarize(runs, args.concurrency)
    command = command_line()
    document = {
        "command": command,
        "machine": info,
        "summary": [dataclasses.asdict(row) for row in rows],
        "runs": [dataclasses.asdict(run) for run in runs],
    }
    write_json(args.json_out, document)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(header(info, command) + "\n")
        print(markdown(rows, args.rounds))
    return 1 if any(row.errors for row in rows) else 0


def _describe(run: Measurement) -> str:
    load = run.load
    text = (
        f"{load.target} c={load.concurrency}: {load.requests} requests, {load.errors} errors, "
        f"{load.rps:.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
        f"server CPU {run.server_cpu_us:.0f} µs/req"
    )
    if load.errors:
        text += f"; errors: {list(load.error_samples)}"
    return text


if __name__ == "__main__":
    run_main(main)
