"""Delegated round trip to a worker reached over gRPC and to one reached over
libp2p through a circuit relay, in the same run.

Usage::

    .venv/bin/python -m bench.relay_roundtrip [--requests N] [--warmup N]

Three in-process nodes on loopback (one event loop, one libp2p trio thread
each): an entry node that is also the relay (``p2p.relay_service``), a worker
it reaches over gRPC, and a worker that advertises an unreachable gRPC
address and keeps a reservation on the relay, so the entry reaches it over
``/praxis/peer/1.0.0`` (on loopback the entry is connected to it directly:
this measures the libp2p peer-call path, not relaying through a third host).
Both workers offer ``echo``; each ``SubmitTask(echo, wait=True)`` at the entry
names its worker as ``preferred_agent`` and counts only when that worker ran
it. Sequential calls (concurrency 1); prints p50/p95 per path. Run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from praxis_grpc._gen.praxis.v1 import task_service_pb2, task_service_pb2_grpc, types_pb2
from praxis_grpc.config import Config
from praxis_grpc.node import Node
from praxis_grpc.testing import make_config, running_node


def _config(
    root: Path, name: str, tool: str, p2p: dict[str, Any], api: dict[str, Any] | None = None
) -> Config:
    return make_config(
        root / name,
        name=name,
        api=api or {},
        metrics={"enabled": False},
        tasks={"max_concurrency": 16},
        tools={"builtins": [tool]},
        p2p={"enabled": True, "rendezvous": "", **p2p},
    )


async def _measure(
    stub: task_service_pb2_grpc.TaskServiceAsyncStub, worker: Node, requests: int
) -> list[float]:
    latencies = []
    for index in range(requests):
        request = task_service_pb2.SubmitTaskRequest(
            tool="echo", wait=True, preferred_agent=worker.agent_id
        )
        request.arguments.update({"n": index})
        started = time.perf_counter()
        response = await stub.SubmitTask(request, timeout=30)
        elapsed = time.perf_counter() - started
        task = response.task
        if task.state == types_pb2.TASK_STATE_COMPLETED and task.owner_agent_id == worker.agent_id:
            latencies.append(elapsed)
    return latencies


async def _run(requests: int, warmup: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            entry = await stack.enter_async_context(
                running_node(_config(root, "entry", "system_info", {"relay_service": True}))
            )
            seed = entry.p2p_addrs[:1]
            direct = await stack.enter_async_context(
                running_node(_config(root, "direct", "echo", {"bootstrap_nodes": seed}))
            )
            natted = await stack.enter_async_context(
                running_node(
                    _config(
                        root,
                        "natted",
                        "echo",
                        # on loopback a dial-back would find it public
                        {"bootstrap_nodes": seed, "relays": seed, "reachability": "private"},
                        api={"advertise_host": "127.0.0.2"},
                    )
                )
            )

            def ready() -> bool:
                direct_card = entry.directory.get(direct.agent_id)
                natted_card = entry.directory.get(natted.agent_id)
                return (
                    direct_card is not None
                    and natted_card is not None
                    and natted_card.peer_address.startswith("/")
                )

            for _ in range(600):
                if ready():
                    break
                await asyncio.sleep(0.1)
            else:
                raise TimeoutError("the entry did not learn both workers' cards in 60 s")
            async with grpc.aio.insecure_channel(entry.endpoints.grpc) as channel:
                stub = task_service_pb2_grpc.TaskServiceStub(channel)
                print(f"requests={requests} warmup={warmup} concurrency=1")
                print(f"{'path':<8} {'ok':>6} {'p50 ms':>8} {'p95 ms':>8}")
                for name, worker in (("grpc", direct), ("libp2p", natted)):
                    await _measure(stub, worker, warmup)
                    latencies = await _measure(stub, worker, requests)
                    ms = sorted(1000 * value for value in latencies)
                    p95 = ms[int(0.95 * (len(ms) - 1))] if ms else float("nan")
                    p50 = statistics.median(ms) if ms else float("nan")
                    print(f"{name:<8} {len(ms):>6} {p50:>8.2f} {p95:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(_run(args.requests, args.warmup))


if __name__ == "__main__":
    main()
