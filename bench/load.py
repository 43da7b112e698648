"""The load generator: one ``grpc.aio`` channel, C coroutines, per-request latency.

Run as ``python -m bench.load --target-kind {echo,praxis} --address HOST:PORT ...``
in its own process (:func:`load_process` does that) so it does not share a GIL
with the server it measures. It sends a warm-up, then requests until
``--requests`` are done or ``--duration-cap`` seconds passed, whichever comes
first, and prints one JSON object (see :class:`LoadResult`) on stdout.

Both targets receive the same ``SubmitTaskRequest`` built the same way: praxis
through the generated stub, the echo server as bytes it returns unchanged. The
client-side work is therefore identical and only the server differs. A
``proxy`` target (:mod:`bench.proxy_floor`) is called as the echo server is
and answers a completed ``SubmitTaskResponse``.

``--tool calculator`` sends ``calculator`` tasks (``{"expression": "<i> + 1"}``,
computed in the node's worker processes) instead of ``echo`` ones, to measure
what the worker pool costs.

With ``--expect-owner AGENT_ID`` every completed praxis task must report that
agent as its owner (the agent that executed it); the others are counted in
``owner_mismatches``, not as errors.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench._common import REPO_ROOT, percentile
from bench.echo_server import METHOD
from praxis_grpc._gen.praxis.v1 import task_service_pb2, task_service_pb2_grpc, types_pb2
from praxis_grpc.credentials import ClientCredentials
from praxis_grpc.wire import dict_to_struct

TARGET_KINDS = ("echo", "praxis", "proxy")
TOOLS = ("echo", "calculator")
RPC_TIMEOUT = 30.0
# Load-process start-up (imports, channel) on top of warm-up and measurement.
_STARTUP_ALLOWANCE = 60.0
_MAX_ERROR_SAMPLES = 5

# Sends request ``i``; returns None on success or what was wrong.
Probe = Callable[[int], Awaitable[str | None]]
# A completed praxis task whose owner is not the expected one.
WRONG_OWNER = "wrong owner: "


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured (warm-up excluded)."""

    target: str
    concurrency: int
    warmup_requests: int
    requests: int
    errors: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    error_samples: tuple[str, ...] = ()
    owner_mismatches: int = 0
    owner_samples: tuple[str, ...] = ()
    p95_ms: float = math.nan

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        """Parse the line :func:`main` prints."""
        fields = json.loads(text)
        fields["error_samples"] = tuple(fields["error_samples"])
        fields["owner_samples"] = tuple(fields.get("owner_samples", ()))
        return cls(**fields)


def submit_request(index: int, tool: str = "echo") -> task_service_pb2.SubmitTaskRequest:
    """The request every benchmark call sends."""
    arguments = {"expression": f"{index} + 1"} if tool == "calculator" else {"n": index}
    return task_service_pb2.SubmitTaskRequest(
        tool=tool, arguments=dict_to_struct(arguments), wait=True
    )


def _probe(
    kind: str, channel: grpc.aio.Channel, expect_owner: str = "", tool: str = "echo"
) -> Probe:
    if kind == "echo":
        echo = channel.unary_unary(
            METHOD,
            request_serializer=task_service_pb2.SubmitTaskRequest.SerializeToString,
            response_deserializer=task_service_pb2.SubmitTaskRequest.FromString,
        )

        async def call_echo(index: int) -> str | None:
            request = submit_request(index, tool)
            response = await echo(request, timeout=RPC_TIMEOUT)
            return None if response == request else "echo returned a different message"

        return call_echo

    if kind == "proxy":
        proxy = channel.unary_unary(
            METHOD,
            request_serializer=task_service_pb2.SubmitTaskRequest.SerializeToString,
            response_deserializer=task_service_pb2.SubmitTaskResponse.FromString,
        )

        async def call_proxy(index: int) -> str | None:
            response = await proxy(submit_request(index, tool), timeout=RPC_TIMEOUT)
            completed = response.task.state == types_pb2.TASK_STATE_COMPLETED
            return None if completed else "the proxy returned no completed task"

        return call_proxy

    stub = task_service_pb2_grpc.TaskServiceStub(channel)

    async def call_praxis(index: int) -> str | None:
        response = await stub.SubmitTask(submit_request(index, tool), timeout=RPC_TIMEOUT)
        state = response.task.state
        if state == types_pb2.TASK_STATE_COMPLETED:
            owner = response.task.owner_agent_id
            return WRONG_OWNER + owner if expect_owner and owner != expect_owner else None
        return f"task ended {types_pb2.TaskState.Name(state)}: {response.task.error.message}"

    return call_praxis


async def _drive(
    probe: Probe, concurrency: int, requests: int, cap: float
) -> tuple[list[float], list[str], float]:
    """Run ``requests`` calls on ``concurrency`` coroutines, stopping after ``cap`` s.

    Returns:
        Latencies in seconds, one error description per failed call, elapsed seconds.
    """
    latencies: list[float] = []
    errors: list[str] = []
    indices = itertools.count()
    started = time.perf_counter()
    deadline = started + cap

    async def worker() -> None:
        for index in indices:
            if index >= requests or time.perf_counter() >= deadline:
                return
            sent = time.perf_counter()
            try:
                problem = await probe(index)
            except grpc.aio.AioRpcError as exc:
                problem = f"{exc.code().name}: {exc.details()}"
            latencies.append(time.perf_counter() - sent)
            if problem is not None:
                errors.append(problem)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return latencies, errors, time.perf_counter() - started


async def run_load(
    kind: str,
    address: str,
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    duration_cap: float,
    expect_owner: str = "",
    tool: str = "echo",
    credentials: ClientCredentials | None = None,
) -> LoadResult:
    """Warm up, then measure ``kind`` at ``address`` (over TLS and with a
    token when ``credentials`` say so)."""
    async with (credentials or ClientCredentials()).aio_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        probe = _probe(kind, channel, expect_owner, tool)
        warm, _, _ = await _drive(probe, concurrency, warmup, duration_cap)
        latencies, problems, elapsed = await _drive(probe, concurrency, requests, duration_cap)
    latencies.sort()
    owners = [p.removeprefix(WRONG_OWNER) for p in problems if p.startswith(WRONG_OWNER)]
    errors = [p for p in problems if not p.startswith(WRONG_OWNER)]
    return LoadResult(
        target=kind,
        concurrency=concurrency,
        warmup_requests=len(warm),
        requests=len(latencies),
        errors=len(errors),
        elapsed_s=elapsed,
        rps=(len(latencies) - len(errors)) / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        p95_ms=percentile(latencies, 0.95) * 1000,
        error_samples=tuple(dict.fromkeys(errors))[:_MAX_ERROR_SAMPLES],
        owner_mismatches=len(owners),
        owner_samples=tuple(dict.fromkeys(owners))[:_MAX_ERROR_SAMPLES],
    )


def load_process(
    kind: str,
    address: str,
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    duration_cap: float,
    expect_owner: str = "",
    tool: str = "echo",
    cacert: Path | None = None,
    token: str = "",
) -> LoadResult:
    """Run :func:`run_load` in a fresh process of this module and wait for its result.

    ``cacert`` makes it speak TLS, ``token`` send a bearer token (passed in
    the environment, not on the command line).

    The process is killed if this call is interrupted or it overruns twice
    ``duration_cap`` (warm-up and measurement) plus a start-up allowance.

    Raises:
        RuntimeError: the load process failed or overran its time allowance.
    """
    command = [
        sys.executable,
        "-m",
        "bench.load",
        f"--target-kind={kind}",
        f"--address={address}",
        f"--concurrency={concurrency}",
        f"--requests={requests}",
        f"--warmup={warmup}",
        f"--duration-cap={duration_cap}",
        f"--tool={tool}",
    ]
    if expect_owner:
        command.append(f"--expect-owner={expect_owner}")
    if cacert is not None:
        command.append(f"--cacert={cacert}")
    env = {**os.environ, "PRAXIS_TOKEN": token} if token else None
    allowance = 2 * duration_cap + _STARTUP_ALLOWANCE
    try:
        # run() kills the child on timeout and on any other exception.
        done = subprocess.run(
            command,
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=allowance,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"load process for {address} overran {allowance:g}s") from None
    if done.returncode != 0:
        raise RuntimeError(f"load process for {address} failed:\n{done.stderr}")
    return LoadResult.from_json(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the load process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-kind", choices=TARGET_KINDS, required=True)
    parser.add_argument("--address", required=True, help="host:port")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--duration-cap", type=float, default=60.0)
    parser.add_argument(
        "--expect-owner", default="", help="agent id every praxis task must be owned by"
    )
    parser.add_argument("--tool", choices=TOOLS, default="echo", help="the tool praxis runs")
    parser.add_argument(
        "--cacert", type=Path, help="speak TLS; the node's CA (token: PRAXIS_TOKEN)"
    )
    args = parser.parse_args(argv)
    credentials = ClientCredentials(cacert=args.cacert, token=os.environ.get("PRAXIS_TOKEN", ""))
    result = asyncio.run(
        run_load(
            args.target_kind,
            args.address,
            concurrency=args.concurrency,
            requests=args.requests,
            warmup=args.warmup,
            duration_cap=args.duration_cap,
            expect_owner=args.expect_owner,
            tool=args.tool,
            credentials=credentials,
        )
    )
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main()
