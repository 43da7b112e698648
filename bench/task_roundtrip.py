"""SubmitTask(wait=True) round trips on one praxis node against a raw gRPC echo ceiling.

Usage::

    .venv/bin/python -m bench.task_roundtrip [--requests N] [--concurrency 1,16]
        [--duration-cap SECONDS] [--warmup N] [--rounds R] [--json]

Starts, in separate processes, a raw ``grpc.aio`` echo server
(:mod:`bench.echo_server`) and one ``praxis node`` with the ``echo`` tool and
metrics enabled, then for each round and concurrency drives echo and praxis
alternately from a fresh load process (:mod:`bench.load`). Reports the median
over rounds and praxis throughput as a fraction of echo at the same
concurrency. Server CPU per request (user + system time of the server
process across warm-up and measurement) is reported too: unlike req/s it barely
moves when other work shares the machine. Run it by hand; tests never run it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import psutil

from bench.echo_server import echo_server_process
from bench.load import LoadResult
from praxis_grpc.testing import node_process

# As in production (metrics on), with room for every client coroutine.
NODE_OVERRIDES: dict[str, dict[str, Any]] = {
    "metrics": {"enabled": True},
    "tasks": {"max_concurrency": 64, "queue_limit": 100_000},
}
TARGETS = ("echo", "praxis")
_REPO_ROOT = Path(__file__).resolve().parents[1]
# Load-process start-up (imports, channel) on top of warm-up and measurement.
_LOAD_STARTUP_ALLOWANCE = 60.0


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
) -> Measurement:
    """Run :mod:`bench.load` in a fresh process against ``server``.

    Raises:
        RuntimeError: the load process failed or overran its time allowance.
    """
    command = [
        sys.executable,
        "-m",
        "bench.load",
        f"--target-kind={target}",
        f"--address={address}",
        f"--concurrency={concurrency}",
        f"--requests={requests}",
        f"--warmup={args.warmup}",
        f"--duration-cap={args.duration_cap}",
    ]
    allowance = 2 * args.duration_cap + _LOAD_STARTUP_ALLOWANCE
    cpu_before = _cpu_seconds(server)
    try:
        # run() kills the child on timeout and on any other exception.
        done = subprocess.run(
            command,
            check=False,
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=allowance,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"load process for {target} overran {allowance:g}s") from None
    if done.returncode != 0:
        raise RuntimeError(f"load process for {target} failed:\n{done.stderr}")
    cpu = _cpu_seconds(server) - cpu_before
    load = LoadResult.from_json(done.stdout.strip().splitlines()[-1])
    served = load.warmup_requests + load.requests
    return Measurement(load, cpu / served * 1e6 if served else float("nan"))


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def summarize(runs: Sequence[Measurement], concurrencies: Sequence[int]) -> list[Summary]:
    """Medians per target and concurrency; requests and errors are summed."""
    rows: list[Summary] = []
    for concurrency in concurrencies:
        echo_rps = _median(m.load.rps for m in runs if _is(m, "echo", concurrency))
        for target in TARGETS:
            loads = [m.load for m in runs if _is(m, target, concurrency)]
            rps = _median(r.rps for r in loads)
            rows.append(
                Summary(
                    target=target,
                    concurrency=concurrency,
                    requests=sum(r.requests for r in loads),
                    errors=sum(r.errors for r in loads),
                    rps=rps,
                    p50_ms=_median(r.p50_ms for r in loads),
                    p99_ms=_median(r.p99_ms for r in loads),
                    server_cpu_us=_median(
                        m.server_cpu_us for m in runs if _is(m, target, concurrency)
                    ),
                    ratio=rps / echo_rps if echo_rps else float("nan"),
                )
            )
    return rows


def _median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else float("nan")


def _is(run: Measurement, target: str, concurrency: int) -> bool:
    return run.target == target and run.concurrency == concurrency


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }


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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _concurrencies(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,16, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.task_roundtrip", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--requests",
        type=_positive,
        help="measured requests per run (default: 1000 at concurrency 1, 3000 above)",
    )
    parser.add_argument("--concurrency", type=_concurrencies, default=[1, 16])
    parser.add_argument(
        "--duration-cap",
        type=float,
        default=60.0,
        help="seconds per measured run (and per warm-up); stops early (default: 60)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="requests before measuring")
    parser.add_argument("--rounds", type=_positive, default=1, help="repeat; report the median")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    return parser.parse_args(argv)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind through the finally blocks so every child process is stopped.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    runs: list[Measurement] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="praxis-bench-")))
        echo_address, echo_pid = stack.enter_context(echo_server_process())
        node = stack.enter_context(node_process(scratch, overrides=NODE_OVERRIDES))
        _progress(f"echo server pid {echo_pid} on {echo_address}")
        _progress(f"praxis node pid {node.pid} on {node.grpc} (metrics {node.metrics})")
        servers = {
            "echo": (echo_address, psutil.Process(echo_pid)),
            "praxis": (node.grpc, psutil.Process(node.pid)),
        }
        for round_number in range(1, args.rounds + 1):
            for concurrency in args.concurrency:
                requests = args.requests or default_requests(concurrency)
                for target in TARGETS:
                    address, server = servers[target]
                    run = measure(target, address, server, concurrency, requests, args)
                    _progress(f"round {round_number}: {_describe(run)}")
                    runs.append(run)
    rows = summarize(runs, args.concurrency)
    command = shlex.join(sys.orig_argv)
    if args.json:
        document = {
            "command": command,
            "machine": machine(),
            "summary": [dataclasses.asdict(row) for row in rows],
            "runs": [dataclasses.asdict(run) for run in runs],
        }
        print(json.dumps(document, indent=2))
    else:
        info = machine()
        print(f"command: `{command}`")
        print(
            f"machine: nproc={info['nproc']}, python {info['python']}, "
            f"grpcio {info['grpcio']}, {info['platform']}\n"
        )
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


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        _progress("interrupted; every process this run started has been stopped")
        sys.exit(130)
