"""Introspection and test tools: ``system_info``, ``echo`` and ``sleep``."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
from typing import Final

import psutil

from praxis_grpc import __version__
from praxis_grpc.errors import ToolError
from praxis_grpc.tools.base import JSON, ToolSpec

MAX_SLEEP_SECONDS: Final = 3600


def snapshot() -> JSON:
    """Describe this host and process. Reads ``/proc`` and may block briefly.

    Returns:
        ``hostname``, ``platform``, ``python_version``, ``cpu_count``,
        ``load_average`` (1, 5 and 15 minutes, or ``None`` where the OS has
        none), ``memory`` (``total`` and ``available`` bytes),
        ``process_rss`` (bytes) and ``praxis_version``.
    """
    try:
        load: list[float] | None = list(os.getloadavg())
    except OSError:
        load = None
    memory = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "memory": {"total": memory.total, "available": memory.available},
        "process_rss": psutil.Process().memory_info().rss,
        "praxis_version": __version__,
    }


class SystemInfo:
    """Reports host and process facts; gathered in a worker thread."""

    _SPEC: Final = ToolSpec(
        name="system_info",
        description="Report hostname, platform, CPU, load, memory and praxis version.",
        input_schema={"type": "object", "properties": {}, "additionalProperties": False},
        idempotent=True,
    )

    @property
    def spec(self) -> ToolSpec:
        """The ``system_info`` tool spec."""
        return self._SPEC

    async def run(self, arguments: JSON) -> JSON:
        """Return :func:`snapshot`."""
        return await asyncio.to_thread(snapshot)


class Echo:
    """Returns its arguments unchanged; the cheapest possible tool, for benchmarks."""

    _SPEC: Final = ToolSpec(
        name="echo",
        description="Return the arguments unchanged.",
        input_schema={"type": "object"},
        idempotent=True,
    )

    @property
    def spec(self) -> ToolSpec:
        """The ``echo`` tool spec."""
        return self._SPEC

    async def run(self, arguments: JSON) -> JSON:
        """Return ``{"echo": arguments}``."""
        return self.run_now(arguments)

    def run_now(self, arguments: JSON) -> JSON:
        """Return ``{"echo": arguments}`` at once (an instant tool)."""
        return {"echo": arguments}


class Sleep:
    """Waits, then succeeds or fails on request; exercises timeouts, cancel and concurrency."""

    _SPEC: Final = ToolSpec(
        name="sleep",
        description="Wait for a number of seconds, then succeed or (with fail) fail.",
        input_schema={
            "type": "object",
            "properties": {
                "seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECONDS},
                "fail": {"type": "boolean", "default": False},
            },
            "required": ["seconds"],
            "additionalProperties": False,
        },
        idempotent=True,
    )

    @property
    def spec(self) -> ToolSpec:
        """The ``sleep`` tool spec."""
        return self._SPEC

    async def run(self, arguments: JSON) -> JSON:
        """Sleep (cancellable at any moment) and return ``{"slept": seconds}``.

        Raises:
            ToolError: ``fail`` is true; raised after the sleep.
        """
        seconds = arguments["seconds"]
        await asyncio.sleep(float(seconds))
        if arguments.get("fail", False):
            raise ToolError(f"sleep failed after {seconds} seconds, as requested")
        return {"slept": seconds}
