"""The ceiling: a raw ``grpc.aio`` unary echo server with no protobuf and no interceptors.

Run as ``python -m bench.echo_server``: it binds 127.0.0.1 on an ephemeral port,
prints the port on stdout, and serves until SIGTERM or until its stdin closes
(so it never outlives a parent that died without cleaning up).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
HOST = "127.0.0.1"
# The same server options as a praxis node, so only the request path differs.
_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]
_REPO_ROOT = Path(__file__).resolve().parents[1]


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def serve(handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] | None = None) -> None:
    """Serve ``handlers`` of :data:`SERVICE` (default: ``Echo``) until SIGTERM
    or EOF on stdin; print the bound port once serving."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    server = grpc.aio.server(options=_SERVER_OPTIONS)
    # No serializers: the handler sees and returns the raw request bytes.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, handlers or {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(port, flush=True)
    await stop.wait()
    await server.stop(grace=0)


@contextlib.contextmanager
def echo_server_process(
    timeout: float = 30.0, module: str = "bench.echo_server", *args: str
) -> Iterator[tuple[str, int]]:
    """Run the echo server (or ``module`` with ``args``, which serves as
    :func:`serve` does) in its own process for the duration of the block.

    Yields:
        The ``host:port`` it serves on and its pid.

    Raises:
        RuntimeError: it exited or printed no port within ``timeout`` seconds.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=_REPO_ROOT,
    )
    try:
        yield f"{HOST}:{_read_port(process, timeout)}", process.pid
    finally:
        _stop(process)


def _read_port(process: subprocess.Popen[bytes], timeout: float) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"echo server printed no port within {timeout:g}s")
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if readable:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"echo server exited with code {process.wait()}")
            return int(line)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


if __name__ == "__main__":
    asyncio.run(serve())
