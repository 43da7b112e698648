"""Send fuzz inputs to a live node in batches, classify every answer, check the node.

An answer is *ok* (status OK), *documented* (a status the method documents;
for praxis services a status the node chose must carry the ``praxis-error``
trailer), a *wrong code* (anything else: UNKNOWN, INTERNAL, a missing
trailer...) or a *hang* (no answer within the deadline; for SubmitTask, which
may wait for its task until the deadline, only the node probe counts). After
every batch the node must be alive (else a *crash*), SERVING on the health
service and answer GetAgent within the probe timeout (else a *hang*), and its
RSS is recorded. A crashed or hung node is restarted from a fresh data
directory, up to a bound.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench._fuzz_inputs import METHODS, FuzzInput, Method, generate
from praxis_grpc._gen.praxis.v1 import agent_service_pb2, agent_service_pb2_grpc

__all__ = ["FuzzOptions", "FuzzReport", "Target", "fuzz"]

_ERROR_KEY = "praxis-error"
_MIB = 1024 * 1024
_CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * _MIB),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_metadata_size", 16 * _MIB),
]


class Target(Protocol):
    """The node under test."""

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        ...

    def rss(self) -> int:
        """Resident set size in bytes (0 when unknown)."""
        ...

    def alive(self) -> bool:
        """False once the process is gone."""
        ...

    def restart(self) -> None:
        """Replace the node by a fresh one (new data directory)."""
        ...


@dataclass(frozen=True)
class FuzzOptions:
    """Bounds and knobs of one run."""

    seed: int = 1
    count: int = 10_000
    time_limit: float = 900.0
    batch: int = 100
    concurrency: int = 16
    deadline: float = 3.0
    probe_timeout: float = 1.0
    rss_growth_limit_mb: float = 300.0
    max_restarts: int = 5
    max_message_bytes: int = 4 * _MIB
    settle: float = 10.0


@dataclass
class Finding:
    """How often one kind of problem occurred, with a few examples."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, keep: int = 2) -> None:
        self.count += 1
        if len(self.examples) < keep:
            self.examples.append(example)


@dataclass
class FuzzReport:
    """What one run saw."""

    seed: int
    inputs: int = 0
    by_outcome: collections.Counter[str] = field(default_factory=collections.Counter)
    by_method_code: collections.Counter[str] = field(default_factory=collections.Counter)
    crashes: int = 0
    hangs: int = 0
    wrong_codes: int = 0
    restarts: int = 0
    rss_limit_exceeded: int = 0
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    elapsed: float = 0.0
    findings: dict[str, Finding] = field(default_factory=dict)

    def note(self, category: str, key: str, example: str, keep: int = 2) -> None:
        """Record a problem of ``category`` (node, hang, wrong code, rss)."""
        self.findings.setdefault(f"{category}: {key}", Finding()).add(example, keep)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "seed": self.seed,
            "inputs": self.inputs,
            "crashes": self.crashes,
            "hangs": self.hangs,
            "wrong_codes": self.wrong_codes,
            "restarts": self.restarts,
            "rss_limit_exceeded": self.rss_limit_exceeded,
            "rss_mb": {
                "idle": round(self.rss_idle_mb, 1),
                "peak": round(self.rss_peak_mb, 1),
                "after": round(self.rss_after_mb, 1),
            },
            "elapsed_s": round(self.elapsed, 1),
            "by_outcome": dict(self.by_outcome),
            "by_method_code": dict(sorted(self.by_method_code.items())),
            "findings": {
                key: {"count": f.count, "examples": f.examples}
                for key, f in sorted(self.findings.items(), key=lambda kv: -kv[1].count)
            },
        }


def _trailers(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    metadata: Any = exc.trailing_metadata() or ()
    return {str(key): str(value) for key, value in metadata}


def classify(
    method: Method, payload_size: int, exc: grpc.aio.AioRpcError | None, max_message_bytes: int
) -> tuple[str, str]:
    """The outcome (ok, documented, wrong code, hang) and why."""
    if exc is None:
        return "ok", "OK"
    code, chosen = exc.code(), _ERROR_KEY in _trailers(exc)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and not chosen:
        if method.path.endswith("/SubmitTask"):
            return "documented", "DEADLINE_EXCEEDED (waited until the deadline)"
        return "hang", "no answer within the deadline"
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and payload_size > max_message_bytes:
        return "documented", "RESOURCE_EXHAUSTED (request above max_message_bytes)"
    if code not in method.documented:
        return "wrong code", f"undocumented {code.name}"
    if method.praxis and not chosen:
        return "wrong code", f"{code.name} without a praxis-error trailer"
    return "documented", code.name


async def _send(channel: grpc.aio.Channel, item: FuzzInput, deadline: float) -> None:
    """Send one input; return on OK (or a first stream message), raise AioRpcError."""
    method = item.method
    # No (de)serializers: the request goes out as the raw bytes it is.
    calls: Any = channel
    if method.kind == "unary":
        await calls.unary_unary(method.path)(item.payload, timeout=deadline)
        return
    if method.kind == "stream":
        call = calls.unary_stream(method.path)(item.payload, timeout=deadline)
    else:
        call = calls.stream_stream(method.path)(timeout=deadline)
        await call.write(item.payload)
        await call.done_writing()
    try:
        await call.read()  # a first message (or EOF after OK) is an answer
    finally:
        call.cancel()


async def probe(address: str, within: float) -> str | None:
    """None if the node is SERVING and answers GetAgent within ``within`` s; else why not."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            agent = agent_service_pb2_grpc.AgentServiceStub(channel)
            # A fuzzed Drain may have left the node draining (NOT_SERVING): resume first.
            await agent.Drain(agent_service_pb2.DrainRequest(resume=True), timeout=within)
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=within
            )
            if health.status != health_pb2.HealthCheckResponse.SERVING:
                return f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}"
            await agent.GetAgent(agent_service_pb2.GetAgentRequest(), timeout=within)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {(exc.details() or '')[:100]}"
    return None


def _example(item: FuzzInput, detail: str) -> str:
    return f"{item.describe()} -> {detail[:160]}"


async def _batch(
    channel: grpc.aio.Channel, items: list[FuzzInput], options: FuzzOptions
) -> list[tuple[FuzzInput, grpc.aio.AioRpcError | None]]:
    limit = asyncio.Semaphore(options.concurrency)

    async def one(item: FuzzInput) -> tuple[FuzzInput, grpc.aio.AioRpcError | None]:
        async with limit:
            try:
                await _send(channel, item, options.deadline)
            except grpc.aio.AioRpcError as exc:
                return item, exc
            return item, None

    return await asyncio.gather(*(one(item) for item in items))


def _tally(
    results: list[tuple[FuzzInput, grpc.aio.AioRpcError | None]],
    options: FuzzOptions,
    report: FuzzReport,
    node_problem: str | None,
) -> None:
    """Count every answer; with a node problem, inputs left unanswered are its suspects
    (submissions first: a task may run after its call was answered)."""
    if node_problem is not None:
        results = sorted(results, key=lambda r: not r[0].method.path.endswith("/SubmitTask"))
    for item, error in results:
        outcome, why = classify(item.method, len(item.payload), error, options.max_message_bytes)
        code = "OK" if error is None else error.code().name
        report.inputs += 1
        report.by_outcome[outcome] += 1
        report.by_method_code[f"{item.method.name} {code}"] += 1
        detail = "" if error is None else error.details() or ""
        if node_problem is not None and code in ("DEADLINE_EXCEEDED", "UNAVAILABLE"):
            report.note("node", node_problem, f"suspect: {_example(item, detail)}", keep=5)
        elif outcome == "hang":
            report.hangs += 1
            report.note(outcome, f"{item.method.name} {why}", _example(item, detail))
        elif outcome == "wrong code":
            report.wrong_codes += 1
            report.note(outcome, f"{item.method.name} {why}", _example(item, detail))


async def fuzz(
    target: Target, options: FuzzOptions, progress: Callable[[str], None] = lambda _: None
) -> FuzzReport:
    """Run ``options.count`` inputs (or until ``options.time_limit``) against ``target``."""
    rng = random.Random(options.seed)
    report = FuzzReport(seed=options.seed)
    start = time.monotonic()
    idle = target.rss()
    report.rss_idle_mb = report.rss_peak_mb = idle / _MIB
    channel = grpc.aio.insecure_channel(target.address, options=_CLIENT_OPTIONS)
    try:
        while report.inputs < options.count and time.monotonic() - start < options.time_limit:
            size = min(options.batch, options.count - report.inputs)
            items = [generate(rng, rng.choice(METHODS)) for _ in range(size)]
            results = await _batch(channel, items, options)
            problem = await _check(target, options, report, idle)
            _tally(results, options, report, problem)
            if problem is not None:
                if report.restarts >= options.max_restarts:
                    progress(f"node {problem}; restart limit reached, stopping")
                    break
                progress(f"node {problem}; restarting it (fresh data directory)")
                await channel.close(None)
                await asyncio.to_thread(target.restart)
                report.restarts += 1
                idle = target.rss()
                channel = grpc.aio.insecure_channel(target.address, options=_CLIENT_OPTIONS)
            if report.inputs % 1000 < options.batch:
                progress(
                    f"{report.inputs} inputs: {report.crashes} crashes, {report.hangs} hangs, "
                    f"{report.wrong_codes} wrong codes, rss {target.rss() / _MIB:.0f} MB"
                )
    finally:
        await channel.close(None)
    report.rss_after_mb = await _settled_rss(target, idle, options.settle)
    report.elapsed = time.monotonic() - start
    return report


async def _check(target: Target, options: FuzzOptions, report: FuzzReport, idle: int) -> str | None:
    """None if the node is fine after a batch, else how it crashed or hung."""
    if not target.alive():
        report.crashes += 1
        return "crashed (process exited)"
    problem = await probe(target.address, options.probe_timeout)
    if problem is not None:
        if not target.alive():
            report.crashes += 1
            return "crashed (process exited)"
        report.hangs += 1
        return f"hung: not answering within {options.probe_timeout:g}s ({problem})"
    rss = target.rss()
    report.rss_peak_mb = max(report.rss_peak_mb, rss / _MIB)
    if (rss - idle) / _MIB > options.rss_growth_limit_mb:
        report.rss_limit_exceeded += 1
        limit = f"above idle + {options.rss_growth_limit_mb:g} MB"
        report.note("rss", limit, f"{rss / _MIB:.0f} MB")
    return None


async def _settled_rss(target: Target, idle: int, settle: float) -> float:
    """RSS once it is back within 50 MB of ``idle``, or after ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while True:
        rss = target.rss()
        if rss - idle <= 50 * _MIB or time.monotonic() >= deadline or not target.alive():
            return rss / _MIB
        await asyncio.sleep(0.5)
