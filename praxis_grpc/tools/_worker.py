"""The worker process of :class:`praxis_grpc.tools.workers.WorkerPool`.

Run as ``python -m praxis_grpc.tools._worker --parent PID --memory-limit BYTES
--max-reply-bytes BYTES``. It caps its own address space, dies with its parent,
then answers requests from stdin on stdout, one at a time, until stdin closes.
Each message is a 4-byte big-endian length and that many bytes of UTF-8 JSON.

A request is ``{"function": "package.module:name", "args": [...]}``; the reply
is one of ``{"result": value}``, ``{"tool_error": {"message", "reason"}}``,
``{"memory_error": true}`` or ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final

from praxis_grpc.errors import ToolError
from praxis_grpc.tools.workers import HEADER

_PR_SET_PDEATHSIG: Final = 1
_MAX_ERROR_MESSAGE: Final = 1000


def main(argv: Sequence[str] | None = None) -> None:
    """Serve requests until stdin reaches its end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--memory-limit", type=int, required=True)
    parser.add_argument("--max-reply-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    if args.memory_limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_limit, args.memory_limit))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    serve(sys.stdin.buffer, sys.stdout.buffer, args.max_reply_bytes)


def serve(requests: BinaryIO, replies: BinaryIO, max_reply_bytes: int) -> None:
    """Answer framed requests until ``requests`` ends."""
    functions: dict[str, Callable[..., Any]] = {}
    while True:
        header = requests.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        (length,) = HEADER.unpack(header)
        payload = requests.read(length)
        if len(payload) < length:
            return
        reply = _encode(answer(payload, functions), max_reply_bytes)
        replies.write(HEADER.pack(len(reply)) + reply)
        replies.flush()


def answer(payload: bytes, functions: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    """Run one request; every outcome, failures included, becomes a reply."""
    try:
        request = json.loads(payload)
        function = _resolve(str(request["function"]), functions)
        return {"result": function(*request["args"])}
    except ToolError as exc:
        return {"tool_error": {"message": exc.message, "reason": exc.reason}}
    except MemoryError:
        return {"memory_error": True}
    except RecursionError:
        return {"error": {"type": "RecursionError", "message": "nested too deeply"}}
    except Exception as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)[:_MAX_ERROR_MESSAGE]}}


def _resolve(name: str, functions: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    function = functions.get(name)
    if function is None:
        module, _, attribute = name.partition(":")
        function = getattr(importlib.import_module(module), attribute)
        if not callable(function):
            raise TypeError(f"{name} is not callable")
        functions[name] = function
    return function


def _encode(reply: dict[str, Any], max_reply_bytes: int) -> bytes:
    try:
        data = json.dumps(reply, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        error = {"type": type(exc).__name__, "message": f"result is not JSON: {exc}"[:1000]}
        return json.dumps({"error": error}).encode("utf-8")
    except MemoryError:
        return b'{"memory_error": true}'
    if len(data) > max_reply_bytes:
        message = f"the result is larger than the {max_reply_bytes}-byte limit of a tool result"
        return json.dumps({"tool_error": {"message": message, "reason": "TOOL_ERROR"}}).encode()
    return data


def _die_with_parent(parent: int) -> None:
    """Get SIGKILL when the node dies, so no computation outlives it (Linux)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(0)


if __name__ == "__main__":
    main()
