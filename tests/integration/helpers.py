"""Helpers shared by the multi-node integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import struct_pb2

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as peer_pb
from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc
from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc
from praxis_grpc.node import Node


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``predicate()`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def stub(node: Node) -> AsyncIterator[task_service_pb2_grpc.TaskServiceAsyncStub]:
    """A TaskService stub on ``node``'s gRPC endpoint."""
    async with grpc.aio.insecure_channel(node.endpoints.grpc) as channel:
        yield task_service_pb2_grpc.TaskServiceStub(channel)


@contextlib.asynccontextmanager
async def peer_stub(node: Node) -> AsyncIterator[peer_service_pb2_grpc.PeerServiceAsyncStub]:
    """A PeerService stub on ``node``'s gRPC endpoint (as another node calls it)."""
    async with grpc.aio.insecure_channel(node.endpoints.grpc) as channel:
        yield peer_service_pb2_grpc.PeerServiceStub(channel)


def work_dispatch(seconds: float, key: str, **fields: Any) -> peer_pb.DispatchRequest:
    """A dispatch of the RecordingTool ``work``, as a coordinator sends it."""
    arguments = struct_pb2.Struct()
    arguments.update({"seconds": seconds, "key": key})
    return peer_pb.DispatchRequest(
        spec=peer_pb.TaskSpec(tool="work", arguments=arguments), **fields
    )


def work(seconds: float, key: str, **fields: Any) -> pb.SubmitTaskRequest:
    """A submission of the RecordingTool ``work``."""
    arguments = struct_pb2.Struct()
    arguments.update({"seconds": seconds, "key": key})
    return pb.SubmitTaskRequest(tool="work", arguments=arguments, **fields)


@dataclass(kw_only=True)
class NodeGroup:
    """Started nodes by name, stopped when ``stack`` closes."""

    stack: contextlib.AsyncExitStack
    nodes: dict[str, Node] = field(default_factory=dict)

    async def started(self, name: str, node: Node) -> Node:
        """Start ``node`` and keep it under ``name``."""
        await node.start()
        self.nodes[name] = node
        self.stack.push_async_callback(node.aclose, 0)
        return node

    async def converged(self) -> None:
        """Wait until every node lists every node's card."""
        names = set(self.nodes)
        await until(
            lambda: all({c.name for c in n.directory.cards()} >= names for n in self.nodes.values())
        )


def free_addresses(count: int) -> list[str]:
    """Loopback addresses whose ports were free a moment ago (pysyncobj needs fixed ports)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{probe.getsockname()[1]}" for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def tick_until(member: Any, done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Tick a pysyncobj member built with ``autoTick=False`` until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s: {what}")
        member.doTick(0.01)
