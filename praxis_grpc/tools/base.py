"""The tool plug point: what a tool is and what the engine expects of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

JSON = dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """What an agent advertises about a tool in its card.

    Attributes:
        name: Unique name within the agent (``[a-z][a-z0-9_]*``).
        description: One line for humans.
        input_schema: JSON Schema (draft 2020-12) of the arguments object.
        idempotent: Running twice with the same arguments has the effect of
            running once. Only idempotent tasks are re-run after a crash.
        default_timeout: Seconds a task may run when it sets no timeout;
            ``None`` uses the node's ``tasks.default_timeout``.
    """

    name: str
    description: str
    input_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    idempotent: bool = True
    default_timeout: float | None = None


@runtime_checkable
class Tool(Protocol):
    """A unit of executable capability.

    Contract:
        - ``run`` is called only with arguments already validated against
          ``spec.input_schema``.
        - ``run`` may be called concurrently for different tasks.
        - ``run`` must not block the event loop for more than a millisecond or
          so: work whose cost depends on the input goes to a process that a
          cancellation can kill (the node's
          :class:`~praxis_grpc.tools.workers.WorkerPool`, or a subprocess of
          its own); constant-cost blocking calls may use a thread.
        - ``run`` may be cancelled at any await (task canceled, deadline): it
          must release what it holds, and a subprocess it started must be
          killed before the cancellation propagates.
        - Failures the client should see are raised as
          :class:`praxis_grpc.errors.ToolError`; any other exception is
          recorded as an internal tool failure.
        - The returned mapping must be JSON-serialisable.
    """

    @property
    def spec(self) -> ToolSpec:
        """The tool's advertised description."""
        ...

    async def run(self, arguments: JSON) -> JSON:
        """Execute with ``arguments`` and return the result object."""
        ...


@runtime_checkable
class InstantTool(Tool, Protocol):
    """A tool whose work is constant-cost and done without awaiting anything:
    the executor may call :meth:`run_now` in the submitting call instead of
    running ``run`` in a task of its own (a task and three event-loop
    callbacks fewer per task).

    Contract: ``run_now(arguments)`` returns or raises what ``await
    run(arguments)`` would, and blocks the event loop no longer than the
    :class:`Tool` contract allows.
    """

    def run_now(self, arguments: JSON) -> JSON:
        """Execute with ``arguments`` at once and return the result object."""
        ...
