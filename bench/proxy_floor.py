"""The floor under a delegated task: bare ``grpc.aio`` proxies with no praxis work.

Run as ``python -m bench.proxy_floor --role ROLE [--upstream HOST:PORT]
[--trio-rate HZ] [--trio-work-us US] [--praxis-heap]``; like
:mod:`bench.echo_server` it binds 127.0.0.1 on an ephemeral port, prints the
port and serves until SIGTERM or until its stdin closes. Roles:

- ``unary-b``: answers every unary call at once with :data:`RESPONSE`;
- ``unary-a``: forwards each unary call's request bytes as one unary call,
  over one channel opened at start, to the ``unary-b`` at ``--upstream``, and
  returns its answer;
- ``stream-b``: serves one bidirectional stream per caller; answers every
  call on it at once, on the same stream;
- ``stream-a``: forwards each unary call over ONE long-lived bidirectional
  stream to the ``stream-b`` at ``--upstream``, multiplexed by a call id:
  one writer sends every call queued meanwhile in one message, one reader
  hands each answer to its call (the transport of praxis' peer session,
  ``praxis_grpc/peers/session.py``, without its work).

Every message is bytes, serialized by nobody: the client's
``SubmitTaskRequest`` (as :mod:`bench.load` builds it) travels unchanged
from the client to B, and B answers with :data:`RESPONSE`, a real
``SubmitTaskResponse`` with the fields praxis returns for a finished
delegated ``echo`` task (a UUID, both agents' ids, four timestamps, the
arguments and result), so the sizes on both hops are praxis'. A stream
message is a run of entries, each an 8-byte call id, a 4-byte length and
that many bytes.

Two variants (issue 11, wt19-q19: what makes grpc/asyncio work dearer in a
praxis node), both off by default: ``--trio-rate HZ`` runs a trio thread
beside the event loop, as praxis' libp2p thread does, waking HZ times a
second and doing ``--trio-work-us`` µs of Python work (holding the GIL) each
time; ``--praxis-heap`` imports praxis' node modules (libp2p, pydantic, the
protobuf descriptors, ...), so the process carries a praxis node's heap
(~124 000 objects tracked by the collector, a node ~129 000; the floor
~36 000) and its garbage collections walk it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from bench.echo_server import METHOD, SERVICE, echo_server_process, serve
from praxis_grpc._gen.praxis.v1 import task_service_pb2, types_pb2
from praxis_grpc.wire import dict_to_struct

ROLES = ("unary-a", "unary-b", "stream-a", "stream-b")
# What a node process imports beyond the floor (``--praxis-heap``).
PRAXIS_MODULES = (
    "praxis_grpc.cli",
    "praxis_grpc.node",
    "praxis_grpc.node_process",
    "praxis_grpc.assembly",
    "praxis_grpc.serving",
    "praxis_grpc.discovery.libp2p",
)
STREAM_METHOD = f"/{SERVICE}/Stream"
_ENTRY = struct.Struct(">QI")
# A libp2p agent id, as praxis' agents have.
_AGENT = "12D3KooWKb6NrSUqQ3cRc3C4dVmtixqRvzuhcYpBqTUaJ2zgrVMa"


def _response() -> bytes:
    now = timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=123_456_789)
    arguments = dict_to_struct({"n": 12345})
    task = types_pb2.Task(
        task_id=str(uuid.uuid4()),
        tool="echo",
        arguments=arguments,
        state=types_pb2.TASK_STATE_COMPLETED,
        result=dict_to_struct({"echo": {"n": 12345}}),
        owner_agent_id=_AGENT,
        timeout=duration_pb2.Duration(seconds=60),
        created_at=now,
        updated_at=now,
        started_at=now,
        finished_at=now,
        attempt=1,
        origin_agent_id=_AGENT[:-1] + "b",
    )
    return task_service_pb2.SubmitTaskResponse(task=task).SerializeToString()


RESPONSE = _response()


def pack(entries: Iterator[tuple[int, bytes]]) -> bytes:
    """One stream message of ``(call id, payload)`` entries."""
    return b"".join(_ENTRY.pack(call_id, len(data)) + data for call_id, data in entries)


def unpack(message: bytes) -> Iterator[tuple[int, bytes]]:
    """The entries of one stream message."""
    offset = 0
    while offset < len(message):
        call_id, size = _ENTRY.unpack_from(message, offset)
        offset += _ENTRY.size
        yield call_id, message[offset : offset + size]
        offset += size


async def _answer(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return RESPONSE


async def _answer_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    async for message in requests:
        yield pack((call_id, RESPONSE) for call_id, _ in unpack(message))


class UnaryForwarder:
    """Forwards each call as one unary call on one channel."""

    def __init__(self, upstream: str) -> None:
        self._channel = grpc.aio.insecure_channel(upstream)
        # No (de)serializers: the bytes go out as they are.
        calls: Any = self._channel
        self._call = calls.unary_unary(METHOD)

    async def forward(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        response: bytes = await self._call(request, timeout=30.0)
        return response

    async def close(self) -> None:
        await self._channel.close(grace=None)


class StreamForwarder:
    """Forwards each call on one bidirectional stream, multiplexed by call id."""

    def __init__(self, upstream: str) -> None:
        self._channel = grpc.aio.insecure_channel(upstream)
        calls: Any = self._channel
        self._stream = calls.stream_stream(STREAM_METHOD)()
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._queue: deque[tuple[int, bytes]] = deque()
        self._wake = asyncio.Event()
        self._next_id = 0
        self._tasks = [
            asyncio.get_running_loop().create_task(coroutine)
            for coroutine in (self._write(), self._read())
        ]

    async def forward(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self._next_id += 1
        call_id = self._next_id
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = answer
        self._queue.append((call_id, request))
        self._wake.set()
        try:
            return await answer
        finally:
            del self._waiting[call_id]

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            entries = list(self._queue)
            self._queue.clear()
            await self._stream.write(pack(iter(entries)))

    async def _read(self) -> None:
        async for message in self._stream:
            for call_id, data in unpack(message):
                answer = self._waiting.get(call_id)
                if answer is not None and not answer.done():
                    answer.set_result(data)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._stream.cancel()
        await self._channel.close(grace=None)


def start_trio_thread(rate: float, work_us: float) -> threading.Thread:
    """A daemon thread running trio, waking ``rate`` times a second and
    spending ``work_us`` µs in Python code at each wake-up (what praxis'
    libp2p thread does: SWIM probes, gossip, DHT, ~130 wake-ups a second
    under the delegated load, ~100 µs of steps each)."""
    import trio

    period, work_s = 1.0 / rate, work_us / 1e6

    async def tick() -> None:
        while True:
            await trio.sleep(period)
            until = time.perf_counter() + work_s
            scratch: dict[int, int] = {}
            while time.perf_counter() < until:
                scratch[len(scratch) % 64] = len(scratch)

    thread = threading.Thread(target=trio.run, args=(tick,), name="floor-trio", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def proxy_processes(kind: str, *options: str) -> Iterator[tuple[str, int, int]]:
    """Run B, then A forwarding to it (``kind``: unary or stream), each in
    its own process with the command line ``options`` (the variants), for
    the duration of the block.

    Yields:
        A's ``host:port``, A's pid and B's pid.
    """
    with (
        echo_server_process(60.0, __name__, f"--role={kind}-b", *options) as (b_address, b_pid),
        echo_server_process(
            60.0, __name__, f"--role={kind}-a", f"--upstream={b_address}", *options
        ) as (a_address, a_pid),
    ):
        yield a_address, a_pid, b_pid


async def _serve(role: str, upstream: str) -> None:
    if role == "unary-b":
        await serve({"Echo": grpc.unary_unary_rpc_method_handler(_answer)})
        return
    if role == "stream-b":
        await serve({"Stream": grpc.stream_stream_rpc_method_handler(_answer_stream)})
        return
    forwarder = UnaryForwarder(upstream) if role == "unary-a" else StreamForwarder(upstream)
    try:
        await serve({"Echo": grpc.unary_unary_rpc_method_handler(forwarder.forward)})
    finally:
        await forwarder.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of one proxy process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--upstream", default="", help="B's host:port (for A)")
    parser.add_argument("--trio-rate", type=float, default=0.0, help="trio thread wake-ups/s")
    parser.add_argument("--trio-work-us", type=float, default=100.0, help="µs per wake-up")
    parser.add_argument("--praxis-heap", action="store_true", help="import praxis' node modules")
    args = parser.parse_args(argv)
    if args.role.endswith("-a") and not args.upstream:
        parser.error("--upstream is required for A")
    if args.praxis_heap:
        for module in PRAXIS_MODULES:
            importlib.import_module(module)
    if args.trio_rate > 0:
        start_trio_thread(args.trio_rate, args.trio_work_us)
    asyncio.run(_serve(args.role, args.upstream))


if __name__ == "__main__":
    main()
