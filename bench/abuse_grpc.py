"""Memory abuse of a live ``praxis node``: slow readers, null lists, connection floods.

Usage::

    .venv/bin/python -m bench.abuse_grpc [--scenarios slow-readers,null-lists,flood]
        [--connections 200] [--hold SECONDS] [--settle SECONDS] [--json]
        [--set api.max_connection_age=10s ...]

Starts a fresh node (echo tool, arguments up to 3 MiB) for each scenario,
reading its RSS from /proc before (idle), during (peak) and
after it (once back within 50 MB of idle, or after ``--settle`` seconds):

- ``slow-readers``: ``--connections`` raw HTTP/2 connections announce a zero
  flow-control window, then GetTask a task of about 2 MB, and keep answering
  pings for ``--hold`` seconds before closing (issue 9: 185 MB -> 1.36 GB,
  held minutes after the sockets closed). Also counts connections the node
  closed itself.
- ``null-lists``: 30 SubmitTask(echo) requests whose arguments are a 3.8 MB
  list of nulls, 10 at a time (issue 9: 136 MB -> 1.8 GB, kept).
- ``flood``: ``--connections`` x 5 raw connections, each opening 20
  Health/Watch streams and never reading, held for ``--hold`` seconds.

The node passes when every scenario's RSS after is within 50 MB of its idle
figure and the node still answers. Exit code 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

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
from bench._fuzz_node import NodeUnderTest
from bench._fuzz_run import probe
from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc
from praxis_grpc.testing.slow_reader import SlowReader
from praxis_grpc.testing.wire import varint

SCENARIOS = ("slow-readers", "null-lists", "flood")
_MIB = 1024 * 1024
_BACK_WITHIN_MB = 50.0
_NULLS = 950_000  # x 4 bytes each: a 3.8 MB request
NODE_OVERRIDES: dict[str, dict[str, Any]] = {
    "tools": {"builtins": ["echo", "system_info"]},
    # Room for a ~2 MB stored task (its echo result fails RESULT_TOO_LARGE: the
    # arguments are what GetTask sends).
    "tasks": {"max_argument_bytes": 3 * _MIB, "max_result_bytes": _MIB // 2},
    "p2p": {"enabled": False},
    "metrics": {"enabled": False},
}


@dataclass
class ScenarioResult:
    """RSS around one scenario, in MB, and what the node did."""

    scenario: str
    idle_mb: float
    peak_mb: float
    after_mb: float
    settled_in_s: float | None
    answering: bool
    note: str

    @property
    def passed(self) -> bool:
        """Back within 50 MB of idle, still answering."""
        return self.answering and self.after_mb - self.idle_mb <= _BACK_WITHIN_MB


class _Sampler:
    """Samples the node's RSS in the background; keeps the peak."""

    def __init__(self, node: NodeUnderTest) -> None:
        self._node = node
        self.peak = node.rss()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self._node.rss())
            await asyncio.sleep(0.2)

    def __enter__(self) -> _Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def _big_task(address: str) -> str:
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 * _MIB)]
    ) as channel:
        request = pb.SubmitTaskRequest(tool="echo", wait=True)
        request.arguments.update({"data": "x" * 1_000_000})
        response = await task_service_pb2_grpc.TaskServiceStub(channel).SubmitTask(
            request, timeout=30
        )
    return response.task.task_id


async def slow_readers(node: NodeUnderTest, args: argparse.Namespace) -> str:
    """Zero-window connections each asking for a ~2 MB task; held, then dropped."""
    task_id = await _big_task(node.address)
    request = pb.GetTaskRequest(task_id=task_id).SerializeToString()
    host, port = _split(node.address)
    readers = [SlowReader(host, port) for _ in range(args.connections)]
    for reader in readers:
        await reader.connect(window=0)
        await reader.call("/praxis.v1.TaskService/GetTask", request)
    await asyncio.sleep(args.hold)
    closed = sum(reader.closed_by_server for reader in readers)
    goaway = sum(reader.goaway for reader in readers)
    await asyncio.gather(*(reader.close() for reader in readers))
    return f"{args.connections} connections; node sent GOAWAY on {goaway}, closed {closed}"


async def null_lists(node: NodeUnderTest, args: argparse.Namespace) -> str:
    """30 SubmitTask(echo) with a 3.8 MB list of nulls each, 10 at a time."""
    values = b"\x0a\x02\x08\x00" * _NULLS  # ListValue.values: Value{null_value: 0}
    value = b"\x32" + varint(len(values)) + values  # Value.list_value
    entry = b"\x0a\x01a\x12" + varint(len(value)) + value  # Struct.fields entry "a"
    struct = b"\x0a" + varint(len(entry)) + entry
    message = b"\x0a\x04echo\x12" + varint(len(struct)) + struct
    codes: dict[str, int] = {}
    limit = asyncio.Semaphore(10)
    options = [("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(node.address, options=options) as channel:
        calls: Any = channel  # no serializer: the request is sent as the raw bytes it is
        submit = calls.unary_unary("/praxis.v1.TaskService/SubmitTask")

        async def one() -> None:
            async with limit:
                try:
                    await submit(message, timeout=120)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
            codes[code] = codes.get(code, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(30)))
    took = time.monotonic() - started
    return f"30 x {len(message) / 1e6:.1f} MB in {took:.1f}s: {codes}"


async def flood(node: NodeUnderTest, args: argparse.Namespace) -> str:
    """Many connections with many idle Health/Watch streams each."""
    host, port = _split(node.address)
    readers = [SlowReader(host, port) for _ in range(args.connections * 5)]
    refused = 0
    for reader in readers:
        try:
            await reader.connect(window=0)
            for _ in range(20):
                await reader.call("/grpc.health.v1.Health/Watch", b"")
        except OSError:
            refused += 1
    await asyncio.sleep(args.hold)
    closed = sum(reader.closed_by_server for reader in readers)
    await asyncio.gather(*(reader.close() for reader in readers))
    return f"{len(readers)} connections x 20 streams; refused {refused}, node closed {closed}"


_RUNS: dict[str, Callable[[NodeUnderTest, argparse.Namespace], Awaitable[str]]] = {
    "slow-readers": slow_readers,
    "null-lists": null_lists,
    "flood": flood,
}


async def run(node: NodeUnderTest, name: str, args: argparse.Namespace) -> ScenarioResult:
    """One scenario with RSS before, during and after."""
    idle = node.rss()
    with _Sampler(node) as sampler:
        note = await _RUNS[name](node, args)
        started = time.monotonic()
        settled: float | None = None
        while time.monotonic() - started < args.settle:
            if node.rss() - idle <= _BACK_WITHIN_MB * _MIB:
                settled = time.monotonic() - started
                break
            await asyncio.sleep(0.5)
    answering = await probe(node.address, 1.0) is None
    return ScenarioResult(
        name, idle / _MIB, sampler.peak / _MIB, node.rss() / _MIB, settled, answering, note
    )


def _override(text: str) -> tuple[str, str, Any]:
    key, sep, value = text.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot:
        raise argparse.ArgumentTypeError(f"expected section.key=value, got {text!r}")
    return section, name, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, each against a fresh node; 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=choice_list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--connections", type=positive_int, default=200)
    parser.add_argument("--hold", type=positive_seconds, default=15.0)
    parser.add_argument("--settle", type=positive_seconds, default=60.0)
    parser.add_argument("--set", type=_override, action="append", default=[], dest="overrides")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    overrides = {section: dict(values) for section, values in NODE_OVERRIDES.items()}
    for section, name, value in args.overrides:
        overrides.setdefault(section, {})[name] = value
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="praxis-abuse-") as tmp,
        NodeUnderTest(Path(tmp), overrides) as node,
    ):
        for index, name in enumerate(args.scenarios):
            if index:
                node.restart()  # every scenario starts from a fresh node's idle RSS
            progress(f"{name}...")
            results.append(asyncio.run(run(node, name, args)))
    if args.json:
        rows = [{**asdict(r), "passed": r.passed} for r in results]
        print(json.dumps({"command": command_line(), "results": rows}, indent=2))
    else:
        print(header(machine(), command_line()) + "\n")
        for r in results:
            settled = "not within --settle" if r.settled_in_s is None else f"{r.settled_in_s:.1f}s"
            print(
                f"{r.scenario}: RSS MB idle {r.idle_mb:.0f}, peak {r.peak_mb:.0f}, "
                f"after {r.after_mb:.0f} (back within 50 MB: {settled}); answering "
                f"{r.answering}; {'PASS' if r.passed else 'FAIL'}\n    {r.note}"
            )
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    run_main(main, "node")
