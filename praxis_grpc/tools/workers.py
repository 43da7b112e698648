"""A bounded pool of worker processes for tools whose cost depends on their input.

A tool that may compute for long (the calculator, text analysis, JSON and file
work) runs its computation here, so the node's event loop only waits on a pipe:
health checks, metrics, other tasks and shutdown go on whatever the input.

Contract of :meth:`WorkerPool.call`:
    - ``call("package.module:function", *args)`` runs ``function(*args)`` in a
      worker process and returns its result. The name is chosen by code, never
      by a client. Arguments and result travel as JSON.
    - At most ``size`` calls run at once, one per worker; further calls wait
      for a worker in arrival order (their task's timeout runs meanwhile).
    - A call cancelled while its worker computes (task timeout, CancelTask,
      shutdown) SIGKILLs that worker, and only that one, before the
      cancellation propagates; a fresh worker replaces it on demand.
    - A :class:`~praxis_grpc.errors.ToolError` raised in the worker is raised
      again with its message and reason. A worker that dies fails the call
      with reason ``WORKER_CRASHED``; one that exceeds its address-space
      limit (``memory_limit`` bytes, ``RLIMIT_AS``) fails it with reason
      ``WORKER_OUT_OF_MEMORY``; either worker is replaced. Any other exception
      becomes :class:`WorkerError` (an internal failure).
Workers start lazily, on the first call that finds none idle, run the same
interpreter and code as the node, and get SIGKILL when the node dies. Not
thread-safe: use it from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any, Final

import praxis_grpc
from praxis_grpc.errors import ToolError

# Every message on a worker's pipes: this length prefix, then UTF-8 JSON.
HEADER: Final = struct.Struct(">I")
WORKER_CRASHED: Final = "WORKER_CRASHED"
WORKER_OUT_OF_MEMORY: Final = "WORKER_OUT_OF_MEMORY"
DEFAULT_MEMORY_LIMIT: Final = 1024 * 1024 * 1024
# A reply above this is refused by the worker (a tool error) and, should a
# worker announce one anyway, the worker is killed unread.
MAX_REPLY_BYTES: Final = 64 * 1024 * 1024
# Bounds the wait for a killed worker's exit and pipes.
_REAP_SECONDS: Final = 5.0
_READ_CHUNK: Final = 64 * 1024

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "WORKER_CRASHED",
    "WORKER_OUT_OF_MEMORY",
    "WorkerError",
    "WorkerPool",
]


class WorkerError(Exception):
    """The function raised something other than a ToolError in its worker."""


class _WorkerDied(Exception):
    """The worker's pipe closed (or broke) before its reply was complete."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        if process.stdin is None or process.stdout is None:
            raise RuntimeError("worker started without pipes")
        self._requests = process.stdin
        self._replies = process.stdout

    @property
    def pid(self) -> int:
        return self.process.pid

    async def exchange(self, request: bytes) -> dict[str, Any]:
        try:
            self._requests.write(HEADER.pack(len(request)) + request)
            await self._requests.drain()
            (length,) = HEADER.unpack(await self._replies.readexactly(HEADER.size))
            if length > MAX_REPLY_BYTES:
                raise _WorkerDied(f"announced a {length}-byte reply")
            reply: dict[str, Any] = json.loads(await self._replies.readexactly(length))
        except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError) as exc:
            raise _WorkerDied(str(exc)) from None
        return reply

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def reap(self) -> int | None:
        """Wait (bounded) for the exit; its pipes are drained so wait() can finish."""
        self._requests.close()
        drain = asyncio.ensure_future(_discard(self._replies))
        try:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self.process.wait(), _REAP_SECONDS)
            return self.process.returncode
        finally:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)


class WorkerPool:
    """Runs functions in at most ``size`` worker processes (see the module docstring).

    Args:
        size: Workers that may run at once (``tools.workers``).
        memory_limit: Address-space limit of each worker in bytes
            (``tools.worker_memory_bytes``); 0 leaves it unlimited.

    Raises:
        ValueError: ``size`` is below 1 or ``memory_limit`` is negative.
    """

    def __init__(self, size: int, *, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        if memory_limit < 0:
            raise ValueError(f"memory_limit must not be negative, got {memory_limit}")
        self._size = size
        self._memory_limit = memory_limit
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False
        package_root = str(Path(praxis_grpc.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        self._env = {
            **os.environ,
            "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
        }

    @property
    def size(self) -> int:
        """The most workers that run at once."""
        return self._size

    def pids(self) -> list[int]:
        """Process ids of the live workers, idle and busy (for tests and diagnostics)."""
        return sorted(worker.pid for worker in (*self._idle, *self._busy))

    async def call(self, function: str, *args: Any) -> Any:
        """Run ``function(*args)`` in a worker and return its result.

        Raises:
            ToolError: raised by the function, or reason ``WORKER_CRASHED`` /
                ``WORKER_OUT_OF_MEMORY`` (see the module docstring).
            WorkerError: the function raised another exception.
            RuntimeError: the pool is closed.
            asyncio.CancelledError: after the worker running the call was killed.
        """
        request = json.dumps({"function": function, "args": args}, ensure_ascii=False).encode()
        async with self._slots:
            worker = await self._acquire()
            try:
                reply = await worker.exchange(request)
            except _WorkerDied:
                code = await self._discard(worker)
                raise ToolError(
                    f"the worker process running the tool {_describe(code)}; "
                    "the task was not completed",
                    reason=WORKER_CRASHED,
                ) from None
            except BaseException:
                await self._discard(worker)
                raise
            if "memory_error" in reply:
                await self._discard(worker)
                limit = self._memory_limit // (1024 * 1024)
                raise ToolError(
                    f"the tool ran out of memory (the worker limit is {limit} MiB)",
                    reason=WORKER_OUT_OF_MEMORY,
                )
            self._busy.discard(worker)
            self._idle.append(worker)
        return _outcome(reply)

    async def aclose(self) -> None:
        """Kill every worker and wait for them; later calls raise RuntimeError."""
        self._closed = True
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for worker in workers:
            worker.kill()
        await asyncio.gather(*(worker.reap() for worker in workers))

    async def _acquire(self) -> _Worker:
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                self._busy.add(worker)
                return worker
            await worker.reap()
        spawning = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "praxis_grpc.tools._worker",
                f"--parent={os.getpid()}",
                f"--memory-limit={self._memory_limit}",
                f"--max-reply-bytes={MAX_REPLY_BYTES}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=self._env,
            )
        )
        try:
            # Shielded: a cancel that lands while the process starts must still
            # find it, or it would be left running.
            process = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            with contextlib.suppress(OSError):
                orphan = _Worker(await spawning)
                orphan.kill()
                await orphan.reap()
            raise
        except OSError as exc:
            raise ToolError(
                f"cannot start a worker process: {exc.strerror or exc}", reason=WORKER_CRASHED
            ) from None
        worker = _Worker(process)
        self._busy.add(worker)
        return worker

    async def _discard(self, worker: _Worker) -> int | None:
        """Kill ``worker`` at once (before any await), then reap it."""
        worker.kill()
        self._busy.discard(worker)
        return await worker.reap()


def _outcome(reply: dict[str, Any]) -> Any:
    if "result" in reply:
        return reply["result"]
    if "tool_error" in reply:
        error = reply["tool_error"]
        raise ToolError(str(error["message"]), reason=str(error["reason"]))
    error = reply.get("error", {})
    raise WorkerError(f"{error.get('type', 'Error')}: {error.get('message', '')}")


def _describe(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(_READ_CHUNK):
        pass
