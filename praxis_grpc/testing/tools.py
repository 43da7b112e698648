"""Tool fakes: one that records every execution, to count runs across a mesh, and
one that returns whatever a test asks for; and a worker pool for the tools that
compute in one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from praxis_grpc.tools.base import JSON, ToolSpec
from praxis_grpc.tools.workers import WorkerPool


@contextlib.asynccontextmanager
async def worker_pool(size: int = 1, **options: Any) -> AsyncIterator[WorkerPool]:
    """A :class:`WorkerPool` whose workers are killed and reaped on exit."""
    pool = WorkerPool(size, **options)
    try:
        yield pool
    finally:
        await pool.aclose()


@dataclass
class Execution:
    """One run of a :class:`RecordingTool`."""

    agent: str
    arguments: dict[str, Any]
    outcome: str = "running"  # running | completed | canceled


@dataclass
class ExecutionLog:
    """Executions shared by every :class:`RecordingTool` of a test."""

    runs: list[Execution] = field(default_factory=list)

    def count(self, key: str, outcome: str | None = None) -> int:
        """Runs whose arguments carry ``key``, optionally with ``outcome``."""
        return sum(
            1
            for run in self.runs
            if run.arguments.get("key") == key and (outcome is None or run.outcome == outcome)
        )

    def agents(self, key: str) -> list[str]:
        """Agents that started a run with ``key``, in order."""
        return [run.agent for run in self.runs if run.arguments.get("key") == key]


class RecordingTool:
    """``work``: sleeps ``seconds`` and returns ``{"agent", "key"}``; logs each run.

    Args:
        agent: Label recorded with each run (the node's name).
        log: Where runs are recorded; share one between nodes.
        idempotent: What the tool advertises.
        name: Tool name.
    """

    def __init__(
        self, agent: str, log: ExecutionLog, *, idempotent: bool = True, name: str = "work"
    ) -> None:
        self._agent = agent
        self._log = log
        self._spec = ToolSpec(
            name=name,
            description="Sleep, then report which agent ran it (test fake).",
            input_schema={
                "type": "object",
                "properties": {
                    "seconds": {"type": "number", "minimum": 0, "maximum": 600},
                    "key": {"type": "string"},
                },
                "required": ["seconds"],
                "additionalProperties": False,
            },
            idempotent=idempotent,
        )

    @property
    def spec(self) -> ToolSpec:
        """The tool's spec."""
        return self._spec

    async def run(self, arguments: JSON) -> JSON:
        """Sleep (cancellable), then return which agent ran it."""
        execution = Execution(self._agent, dict(arguments))
        self._log.runs.append(execution)
        try:
            await asyncio.sleep(float(arguments["seconds"]))
        except asyncio.CancelledError:
            execution.outcome = "canceled"
            raise
        execution.outcome = "completed"
        return {"agent": self._agent, "key": arguments.get("key", "")}


class ReturningTool:
    """``returns`` (by default): returns what ``make`` makes of the arguments,
    unchecked, so tests can hand the engine results that break the result
    contract (too large, too deep, numbers no double holds).

    Args:
        make: Builds the result from the arguments.
        name: Tool name.
    """

    def __init__(self, make: Callable[[JSON], Any], *, name: str = "returns") -> None:
        self._make = make
        self._spec = ToolSpec(
            name=name,
            description="Return what the test asks for (test fake).",
            input_schema={"type": "object"},
            idempotent=True,
        )

    @property
    def spec(self) -> ToolSpec:
        """The tool's spec."""
        return self._spec

    async def run(self, arguments: JSON) -> JSON:
        """Return ``make(arguments)``."""
        return self._make(arguments)  # type: ignore[no-any-return]
