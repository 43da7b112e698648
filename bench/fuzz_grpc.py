"""Fuzz every public gRPC method of a live ``praxis node`` process.

Usage::

    .venv/bin/python -m bench.fuzz_grpc [--seed N] [--count N] [--time-limit SECONDS]
        [--batch N] [--concurrency N] [--json]

Starts one node (every built-in tool, no discovery) and sends ``--count``
generated and mutated requests, spread over praxis.v1 AgentService,
CardService, TaskService, grpc.health.v1.Health and server reflection, as raw
bytes: valid-shaped requests with hostile values (huge strings, deep
Structs, NaN/Inf, odd Durations, bogus page tokens, unknown enum values,
local_only and fencing fields) and malformed ones (random bytes, truncated
and bit-flipped serializations, bad wire types, invalid UTF-8). After every
batch the node must be alive, SERVING and answer GetAgent within 1 s; its
RSS must stay within ``--rss-growth-limit`` MB of the idle figure. Prints
the inputs, crashes, hangs, wrong codes and RSS (idle, peak, after), and the
most frequent findings with examples; ``--json`` prints it all as JSON.
Exit code 1 when there was any crash, hang or wrong code. The memory abuse
scenarios (slow readers, null lists, floods) are in :mod:`bench.abuse_grpc`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    command_line,
    header,
    machine,
    positive_int,
    positive_number,
    positive_seconds,
    progress,
    run_main,
)
from bench._fuzz_node import FUZZ_TOOLS, NodeUnderTest
from bench._fuzz_run import FuzzOptions, FuzzReport, fuzz

NODE_OVERRIDES: dict[str, dict[str, Any]] = {
    "tools": {"builtins": list(FUZZ_TOOLS)},
    "p2p": {"enabled": False},
    "metrics": {"enabled": False},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--count", type=positive_int, default=10_000, help="inputs to send")
    parser.add_argument(
        "--time-limit", type=positive_seconds, default=900.0, help="stop after this long"
    )
    parser.add_argument("--batch", type=positive_int, default=100, help="inputs per check")
    parser.add_argument("--concurrency", type=positive_int, default=16)
    parser.add_argument(
        "--deadline", type=positive_seconds, default=3.0, help="per-call deadline (hang)"
    )
    parser.add_argument(
        "--rss-growth-limit",
        type=positive_number,
        default=300.0,
        help="MB above the idle RSS that counts as unbounded",
    )
    parser.add_argument("--max-restarts", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> FuzzOptions:
    """The run's bounds from the command line."""
    return FuzzOptions(
        seed=args.seed,
        count=args.count,
        time_limit=args.time_limit,
        batch=args.batch,
        concurrency=args.concurrency,
        deadline=args.deadline,
        rss_growth_limit_mb=args.rss_growth_limit,
        max_restarts=args.max_restarts,
    )


def render(report: FuzzReport, top: int = 25) -> str:
    """The human-readable summary."""
    lines = [
        header(machine(), command_line()),
        "",
        f"seed {report.seed}: {report.inputs} inputs in {report.elapsed:.0f}s; "
        f"crashes {report.crashes}, hangs {report.hangs}, wrong codes {report.wrong_codes}, "
        f"restarts {report.restarts}",
        f"RSS MB: idle {report.rss_idle_mb:.0f}, peak {report.rss_peak_mb:.0f}, "
        f"after {report.rss_after_mb:.0f} (limit exceeded after {report.rss_limit_exceeded} "
        "batches)",
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in report.by_outcome.most_common()),
        "",
    ]
    ranked = sorted(report.findings.items(), key=lambda kv: -kv[1].count)
    for key, finding in ranked[:top]:
        lines.append(f"{finding.count:6d}  {key}")
        lines.extend(f"          e.g. {example}" for example in finding.examples)
    if len(ranked) > top:
        lines.append(f"... and {len(ranked) - top} more kinds (see --json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer against a fresh node; 1 if anything was found."""
    args = parse_args(argv)
    options = options_from(args)
    with tempfile.TemporaryDirectory(prefix="praxis-fuzz-") as tmp:
        progress(f"starting a node under {tmp}")
        with NodeUnderTest(Path(tmp), NODE_OVERRIDES) as node:
            report = asyncio.run(fuzz(node, options, progress))
    if args.json:
        print(json.dumps({"command": command_line(), **report.to_json()}, indent=2))
    else:
        print(render(report))
    return 1 if report.crashes or report.hangs or report.wrong_codes else 0


if __name__ == "__main__":
    run_main(main, "node")
