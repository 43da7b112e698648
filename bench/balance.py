"""Load-balance quality: completion times of one heavy-tailed workload under each routing strategy.

Usage::

    .venv/bin/python -m bench.balance [--tasks N] [--workers W] [--slots S]
        [--mean-ms MS] [--sigma SIGMA] [--cap-s SECONDS] [--utilisation U]
        [--strategies p2c,round_robin,random] [--trials T] [--seed S]
        [--max-inflight N] [--heartbeat SECONDS] [--run-timeout SECONDS]
        [--launch-timeout SECONDS] [--keep] [--json]

For each trial and strategy, in one run, a fresh mesh of real ``praxis node``
processes is started (see :mod:`bench._cluster`): an entry node that offers
no ``sleep`` tool and W workers that offer only ``sleep``, each with
``tasks.max_concurrency`` S and a queue large enough never to refuse. Every
node runs ``routing.strategy`` set to the strategy under test. Once the entry
node lists every worker with ``sleep``, a warm-up has made the entry open a
channel to each worker and the workers are idle again, the workload runs
(see :mod:`bench._workload`):

- N ``sleep`` durations drawn from a lognormal distribution with mean
  ``--mean-ms`` before the cap and shape ``--sigma``, capped at ``--cap-s``;
- Poisson arrivals at rate U x W x S / (sample mean duration), so the
  offered load is U of the cluster's execution slots;
- each task is ``SubmitTask(wait=True)`` at the entry node from its own
  coroutine, sent at its arrival time (open loop; at most ``--max-inflight``
  at once, and a late submission is reported); its completion time runs from
  the call to its terminal response.

Afterwards each task's copy at its owner (``GetTask``) splits its queueing
delay (completion minus its own duration) into: client to accepted by the
worker, waiting in the worker's queue, and finished to the client's response.
Each workload is also replayed through an ideal router (exact queue lengths,
no overhead; the median over 31 router seeds), which shows how much of the
tail is the workload itself.

Trial k uses seed S + k - 1 for durations and arrivals, the same for every
strategy, so within a trial the strategies see the identical workload; the
strategy order rotates between trials. Reports per strategy the medians over
trials, and the p99 improvement of p2c over round_robin. Run it by hand;
tests never run it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from bench._balance_results import (
    TARGET_P99_GAIN,
    Outcome,
    StrategyRun,
    describe,
    markdown,
    notes,
    p99_gains,
    phases_table,
    summarize,
    targets_table,
    workers_table,
)
from bench._cluster import Cluster, log_problems, problems_since, wait_for_tool
from bench._common import (
    CpuWindow,
    choice_list,
    command_line,
    header,
    machine,
    positive_int,
    positive_number,
    positive_seconds,
    progress,
    run_main,
)
from bench._workload import Workload, ideal, make_workload
from praxis_grpc._gen.praxis.v1 import (
    card_service_pb2,
    card_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    types_pb2,
)
from praxis_grpc.wire import dict_to_struct

STRATEGIES = ("p2c", "round_robin", "random")
ENTRY = "entry"
_RPC_TIMEOUT = 2.0
_WARMUP_BATCHES = 5
_WARMUP_SECONDS = 0.05
_IDLE_POLL = 0.1
_PHASE_CONCURRENCY = 32
_PHASE_TIMEOUT = 60.0


async def submit_all(
    address: str,
    workload: Workload,
    owners: Mapping[str, str],
    max_inflight: int,
    run_timeout: float,
    result: StrategyRun,
) -> list[Outcome]:
    """Send every task of ``workload`` at its arrival time; wait for all (bounded).

    Args:
        address: The entry node.
        workload: What to send when.
        owners: Agent id to node name.
        max_inflight: Most submissions outstanding at once.
        run_timeout: Bound on the whole run, arrivals included.
        result: Gets ``max_inflight``, ``elapsed_s`` and ``unfinished``.

    Returns:
        One outcome per task that ended within ``run_timeout``.
    """
    outcomes: list[Outcome] = []
    slots = asyncio.Semaphore(max_inflight)
    inflight = 0

    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), _RPC_TIMEOUT)
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        start = time.monotonic()

        async def one(seconds: float, late: float) -> None:
            nonlocal inflight
            inflight += 1
            result.max_inflight = max(result.max_inflight, inflight)
            request = task_service_pb2.SubmitTaskRequest(
                tool="sleep", arguments=dict_to_struct({"seconds": seconds}), wait=True
            )
            sent, sent_wall = time.monotonic(), time.time()
            try:
                response = await tasks.SubmitTask(request, timeout=run_timeout)
            except grpc.aio.AioRpcError as exc:
                error = f"{exc.code().name}: {exc.details()}"
                outcomes.append(Outcome("", seconds, late, time.monotonic() - sent, "", error))
                return
            finally:
                inflight -= 1
                slots.release()
            completion, received = time.monotonic() - sent, time.time()
            task = response.task
            error = ""
            if task.state != types_pb2.TASK_STATE_COMPLETED:
                error = f"{types_pb2.TaskState.Name(task.state)}: {task.error.message}"
            owner = owners.get(task.owner_agent_id, task.owner_agent_id or "?")
            outcomes.append(
                Outcome(task.task_id, seconds, late, completion, owner, error, sent_wall, received)
            )

        try:
            async with asyncio.timeout(run_timeout), asyncio.TaskGroup() as group:
                for seconds, at in zip(workload.durations, workload.arrivals, strict=True):
                    delay = start + at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await slots.acquire()
                    late = max(time.monotonic() - start - at, 0.0)
                    group.create_task(one(seconds, late))
        except TimeoutError:
            progress(f"{result.strategy}: not every task ended within {run_timeout:g}s")
        result.elapsed_s = time.monotonic() - start
    result.unfinished = len(workload.durations) - len(outcomes)
    return outcomes


def _wall(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


async def phases(outcomes: Sequence[Outcome], addresses: Mapping[str, str]) -> list[Outcome]:
    """Each completed task with its phases filled in from its owner's copy (bounded).

    Args:
        outcomes: As :func:`submit_all` returned them.
        addresses: Node name to gRPC address.
    """
    limit = asyncio.Semaphore(_PHASE_CONCURRENCY)
    channels = {name: grpc.aio.insecure_channel(address) for name, address in addresses.items()}
    stubs = {name: task_service_pb2_grpc.TaskServiceStub(ch) for name, ch in channels.items()}

    async def one(outcome: Outcome) -> Outcome:
        stub = stubs.get(outcome.owner)
        if outcome.error or stub is None:
            return outcome
        async with limit:
            try:
                response = await stub.GetTask(
                    task_service_pb2.GetTaskRequest(task_id=outcome.task_id),
                    timeout=_RPC_TIMEOUT,
                )
            except grpc.aio.AioRpcError:
                return outcome
        copy = response.task
        if not (copy.HasField("started_at") and copy.HasField("finished_at")):
            return outcome
        accepted, started = _wall(copy.created_at), _wall(copy.started_at)
        return dataclasses.replace(
            outcome,
            to_worker_s=accepted - outcome.sent,
            worker_queue_s=started - accepted,
            back_s=outcome.received - _wall(copy.finished_at),
        )

    try:
        async with asyncio.timeout(_PHASE_TIMEOUT):
            return list(await asyncio.gather(*(one(o) for o in outcomes)))
    except TimeoutError:
        progress(f"reading the owners' copies took over {_PHASE_TIMEOUT:g}s; phases left out")
        return list(outcomes)
    finally:
        for channel in channels.values():
            await channel.close(grace=None)


async def warm_up(address: str, workers: Sequence[str], owners: Mapping[str, str]) -> None:
    """Send short tasks until each worker ran one (the entry then has a channel to each).

    Raises:
        RuntimeError: some worker got none after a few batches.
    """
    seen: set[str] = set()
    async with grpc.aio.insecure_channel(address) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.SubmitTaskRequest(
            tool="sleep", arguments=dict_to_struct({"seconds": _WARMUP_SECONDS}), wait=True
        )
        for _ in range(_WARMUP_BATCHES):
            responses = await asyncio.gather(
                *(tasks.SubmitTask(request, timeout=30) for _ in range(4 * len(workers)))
            )
            seen.update(owners.get(r.task.owner_agent_id, "?") for r in responses)
            if seen >= set(workers):
                return
    raise RuntimeError(f"warm-up reached only {sorted(seen)} of {sorted(workers)}")


async def wait_idle(address: str, workers: Sequence[str], within: float) -> float:
    """Poll the entry's ``ListCards`` until no worker's card shows a task; seconds taken.

    Raises:
        TimeoutError: not within ``within`` seconds.
    """
    start = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        cards = card_service_pb2_grpc.CardServiceStub(channel)
        while True:
            response = await cards.ListCards(
                card_service_pb2.ListCardsRequest(), timeout=_RPC_TIMEOUT
            )
            busy = [
                c.name
                for c in response.cards
                if c.name in workers and c.load.in_flight + c.load.queued > 0
            ]
            elapsed = time.monotonic() - start
            if not busy:
                return elapsed
            if elapsed >= within:
                raise TimeoutError(f"workers still busy after {within:g}s: {busy}")
            await asyncio.sleep(_IDLE_POLL)


def node_configs(args: argparse.Namespace, strategy: str) -> dict[str, dict[str, Any]]:
    """The entry node first (the others bootstrap from it), then the workers."""
    common: dict[str, Any] = {
        "metrics": {"enabled": True},
        "cards": {"heartbeat": args.heartbeat, "ttl": max(10.0, 5 * args.heartbeat)},
        "routing": {"strategy": strategy},
    }
    configs = {
        ENTRY: {
            **common,
            "tools": {"builtins": ["system_info"]},
            "tasks": {"max_concurrency": 64, "queue_limit": 1_000},
        }
    }
    for index in range(1, args.workers + 1):
        configs[f"worker{index}"] = {
            **common,
            "tools": {"builtins": ["sleep"]},
            "tasks": {"max_concurrency": args.slots, "queue_limit": 1_000},
        }
    return configs


def run_strategy(
    args: argparse.Namespace, root: Path, workload: Workload, strategy: str, trial: int
) -> StrategyRun:
    """Start a fresh mesh for ``strategy``, run the workload, stop every node."""
    result = StrategyRun(strategy, trial, workload.seed)
    model = ideal(workload, strategy, args.workers, args.slots)
    result.model_p99_ms, result.model_wait_p99_ms = model.p99_ms, model.wait_p99_ms
    result.model_p99_spread_ms = model.p99_spread_ms
    configs = node_configs(args, strategy)
    workers = [name for name in configs if name != ENTRY]
    cluster = Cluster(root / f"trial{trial}-{strategy}", configs)
    try:
        cluster.start(args.launch_timeout)
        entry = cluster.node(ENTRY)
        owners = {node.info["agent_id"]: node.name for node in cluster.nodes}
        listed, _ = asyncio.run(wait_for_tool(entry.grpc, "sleep", workers, args.launch_timeout))
        asyncio.run(warm_up(entry.grpc, workers, owners))
        idle = asyncio.run(wait_idle(entry.grpc, workers, 5 * args.heartbeat + 5))
        progress(
            f"trial {trial} {strategy}: {len(cluster.nodes)} nodes up, workers listed after "
            f"{listed:.2f} s, idle after warm-up in {idle:.2f} s; "
            f"running {len(workload.durations)} tasks"
        )
        window = CpuWindow({node.name: node.pid for node in cluster.nodes})
        outcomes = asyncio.run(
            submit_all(entry.grpc, workload, owners, args.max_inflight, args.run_timeout, result)
        )
        used, result.other_cpu_pct = window.finish()
        addresses = {name: cluster.node(name).grpc for name in workers}
        result.fill(asyncio.run(phases(outcomes, addresses)), workers)
        if outcomes:
            result.entry_cpu_us_per_task = 1e6 * used[ENTRY] / len(outcomes)
            result.worker_cpu_us_per_task = 1e6 * sum(used[w] for w in workers) / len(outcomes)
        progress(f"trial {trial} {strategy}: {describe(result)}")
    except (OSError, RuntimeError, grpc.RpcError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        progress(f"trial {trial} {strategy}: {result.error}")
    finally:
        result.log_problems_run = log_problems(cluster.nodes)
        result.exit_codes = cluster.stop()
        result.log_problems_shutdown = problems_since(
            result.log_problems_run, log_problems(cluster.nodes)
        )
    return result


def _fraction(text: str) -> float:
    value = positive_number(text, "a fraction")
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be below 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.balance", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tasks", type=positive_int, default=500, help="tasks per run")
    parser.add_argument("--workers", type=positive_int, default=3, help="worker nodes")
    parser.add_argument(
        "--slots", type=positive_int, default=2, help="tasks.max_concurrency of each worker"
    )
    parser.add_argument(
        "--mean-ms", type=positive_number, default=50.0, help="mean task duration before the cap"
    )
    parser.add_argument(
        "--sigma", type=positive_number, default=1.5, help="lognormal shape (default: 1.5)"
    )
    parser.add_argument(
        "--cap-s", type=positive_seconds, default=2.0, help="longest task duration (default: 2)"
    )
    parser.add_argument(
        "--utilisation", type=_fraction, default=0.75, help="offered load per slot (default: 0.75)"
    )
    parser.add_argument(
        "--strategies",
        type=choice_list(STRATEGIES),
        default=list(STRATEGIES),
        help="routing strategies to compare, in order (default: p2c,round_robin,random)",
    )
    parser.add_argument("--trials", type=positive_int, default=1, help="repeat; report medians")
    parser.add_argument("--seed", type=int, default=1, help="seed of trial 1 (default: 1)")
    parser.add_argument(
        "--max-inflight", type=positive_int, default=400, help="bound on concurrent submissions"
    )
    parser.add_argument(
        "--heartbeat", type=positive_seconds, default=1.0, help="cards.heartbeat of every node"
    )
    parser.add_argument(
        "--run-timeout",
        type=positive_seconds,
        default=120.0,
        help="bound on one strategy's workload, arrivals included (default: 120)",
    )
    parser.add_argument(
        "--launch-timeout",
        type=positive_seconds,
        default=60.0,
        help="bound on each node start and on the workers' cards reaching the entry",
    )
    parser.add_argument("--keep", action="store_true", help="keep the node directories and logs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    info = machine()  # before any node starts: the revision they run
    slots = args.workers * args.slots
    workloads = [
        make_workload(
            tasks=args.tasks,
            mean_s=args.mean_ms / 1000,
            sigma=args.sigma,
            cap_s=args.cap_s,
            utilisation=args.utilisation,
            slots=slots,
            seed=args.seed + trial,
        )
        for trial in range(args.trials)
    ]
    for trial, workload in enumerate(workloads, 1):
        progress(f"trial {trial}: {_workload_line(workload, args)}")
    root = Path(tempfile.mkdtemp(prefix="praxis-balance-bench-"))
    runs: list[StrategyRun] = []
    try:
        for trial, workload in enumerate(workloads, 1):
            shift = (trial - 1) % len(args.strategies)
            for strategy in args.strategies[shift:] + args.strategies[:shift]:
                runs.append(run_strategy(args, root, workload, strategy, trial))
    finally:
        if args.keep:
            progress(f"node directories and logs kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rows = summarize(runs, args.strategies)
    command = command_line()
    if args.json:
        document = {
            "command": command,
            "machine": info,
            "node_configs": node_configs(args, "<strategy>"),
            "workloads": [
                {"seed": w.seed, "rate_per_s": w.rate, "offered": w.offered(slots), **w.stats()}
                for w in workloads
            ],
            "target": {"p99_gain_over_round_robin": TARGET_P99_GAIN},
            "p2c_gain_over_round_robin": {
                metric: p99_gains(runs, metric)
                for metric in ("p99_ms", "wait_p99_ms", "model_p99_ms", "model_wait_p99_ms")
            },
            "summary": [dataclasses.asdict(row) for row in rows],
            "runs": [dataclasses.asdict(run) for run in runs],
        }
        print(json.dumps(document, indent=2))
        return _exit_code(runs)
    print(header(info, command))
    print(
        f"cluster: 1 entry node without sleep, {args.workers} workers with sleep and "
        f"tasks.max_concurrency {args.slots} ({slots} slots); cards.heartbeat "
        f"{args.heartbeat:g} s; a fresh mesh per strategy and trial"
    )
    for trial, workload in enumerate(workloads, 1):
        print(f"workload, trial {trial}: {_workload_line(workload, args)}")
    print()
    print(markdown(rows))
    print(
        "\nCompletion: from SubmitTask(wait=True) to its response. Queueing: completion minus "
        "the task's own duration. Ideal router: the same workload and strategy with exact "
        "queue lengths and no overhead, median over 31 router seeds, 10th-90th percentile "
        "in brackets (bench/_workload.py). Busiest worker / even: the "
        f"largest share of sleep seconds any worker got, times {args.workers} (1.00 is even). "
        "Medians over trials; tasks and errors are totals.\n\nWhere the queueing went, "
        "from each task's copy at its owner:\n"
    )
    print(phases_table(rows))
    print()
    print(workers_table(runs))
    print("\nTargets:\n")
    print(targets_table(runs))
    print("\nNotes:\n")
    # Later than half a mean task: the schedule is no longer quite open-loop.
    print(notes(runs, args.max_inflight, args.run_timeout, args.mean_ms / 2))
    return _exit_code(runs)


def _exit_code(runs: Sequence[StrategyRun]) -> int:
    return 1 if any(r.error is not None or r.errors or r.unfinished for r in runs) else 0


def _workload_line(workload: Workload, args: argparse.Namespace) -> str:
    s = workload.stats()
    return (
        f"{len(workload.durations)} sleep tasks, lognormal sigma {args.sigma:g} capped at "
        f"{args.cap_s:g} s, seed {workload.seed}: mean {s['mean_ms']:.1f} ms, "
        f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms; "
        f"Poisson arrivals at {workload.rate:.1f}/s over {s['span_s']:.1f} s (target "
        f"utilisation {args.utilisation:.0%}, offered "
        f"{workload.offered(args.workers * args.slots):.0%})"
    )


if __name__ == "__main__":
    run_main(main, "node")
