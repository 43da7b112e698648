"""Accepted tasks per second: SubmitTask(wait=False) from C coroutines, spread over nodes.

Run as ``python -m bench._accept_load --address A [--address B ...]`` in its
own process (:func:`accept_load_process` does that), so the load does not
share a GIL with the benchmark driver. Call ``i`` goes to address ``i mod N``
over one channel per address. Every call is ``SubmitTask(tool="echo",
arguments={"n": i}, wait=False)`` and counts as accepted when it returns a
task id; the warm-up is ``--warmup`` seconds, then calls are measured for
``--duration`` seconds. Prints one JSON object (see :class:`AcceptLoad`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from bench._common import REPO_ROOT, percentile
from praxis_grpc._gen.praxis.v1 import task_service_pb2, task_service_pb2_grpc
from praxis_grpc.wire import dict_to_struct

RPC_TIMEOUT = 10.0
_STARTUP_ALLOWANCE = 60.0
_MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True)
class AcceptLoad:
    """One measured load run (warm-up excluded)."""

    addresses: tuple[str, ...]
    concurrency: int
    requests: int
    accepted: int
    errors: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    error_samples: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, text: str) -> AcceptLoad:
        """Parse the line :func:`main` prints."""
        fields = json.loads(text)
        fields["addresses"] = tuple(fields["addresses"])
        fields["error_samples"] = tuple(fields["error_samples"])
        return cls(**fields)


async def _drive(
    stubs: Sequence[task_service_pb2_grpc.TaskServiceAsyncStub], concurrency: int, seconds: float
) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    indices = itertools.count()
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        for index in indices:
            if time.perf_counter() >= deadline:
                return
            request = task_service_pb2.SubmitTaskRequest(
                tool="echo", arguments=dict_to_struct({"n": index}), wait=False
            )
            sent = time.perf_counter()
            try:
                response = await stubs[index % len(stubs)].SubmitTask(request, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
            else:
                if not response.task.task_id:
                    errors.append("no task id")
            latencies.append(time.perf_counter() - sent)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return latencies, errors, time.perf_counter() - started


async def run_load(
    addresses: Sequence[str], concurrency: int, seconds: float, warmup: float
) -> AcceptLoad:
    """Warm up, then measure."""
    channels = [grpc.aio.insecure_channel(address) for address in addresses]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        stubs = [task_service_pb2_grpc.TaskServiceStub(channel) for channel in channels]
        await _drive(stubs, concurrency, warmup)
        latencies, errors, elapsed = await _drive(stubs, concurrency, seconds)
    finally:
        for channel in channels:
            await channel.close(None)
    latencies.sort()
    accepted = len(latencies) - len(errors)
    counted = collections.Counter(errors)
    return AcceptLoad(
        addresses=tuple(addresses),
        concurrency=concurrency,
        requests=len(latencies),
        accepted=accepted,
        errors=len(errors),
        elapsed_s=elapsed,
        rps=accepted / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        error_samples=tuple(f"{n} x {e}" for e, n in counted.most_common(_MAX_ERROR_SAMPLES)),
    )


def accept_load_process(
    addresses: Sequence[str], concurrency: int, seconds: float, warmup: float
) -> AcceptLoad:
    """Run :func:`run_load` in a fresh process of this module and return its result.

    The process is killed if this call is interrupted or overruns its time.

    Raises:
        RuntimeError: the load process failed or overran.
    """
    command = [
        sys.executable,
        "-m",
        "bench._accept_load",
        *(f"--address={address}" for address in addresses),
        f"--concurrency={concurrency}",
        f"--duration={seconds}",
        f"--warmup={warmup}",
    ]
    allowance = seconds + warmup + 2 * RPC_TIMEOUT + _STARTUP_ALLOWANCE
    try:
        # run() kills the child on timeout and on any other exception.
        done = subprocess.run(
            command,
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=allowance,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"load process overran {allowance:g}s") from None
    if done.returncode != 0:
        raise RuntimeError(f"load process failed:\n{done.stderr}")
    return AcceptLoad.from_json(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the load process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", action="append", required=True, help="host:port")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    args = parser.parse_args(argv)
    result = asyncio.run(run_load(args.address, args.concurrency, args.duration, args.warmup))
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main()
