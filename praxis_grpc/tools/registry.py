"""The tools a node offers: lookup by name and argument validation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from praxis_grpc.errors import NotFound, quote
from praxis_grpc.tools.base import JSON, Tool, ToolSpec
from praxis_grpc.tools.calculator import Calculator
from praxis_grpc.tools.contract import load_contracts
from praxis_grpc.tools.files import FileMerger, JsonFormatter, Sandbox
from praxis_grpc.tools.system import Echo, Sleep, SystemInfo
from praxis_grpc.tools.text import TextAnalyzer
from praxis_grpc.tools.validation import ArgumentValidator
from praxis_grpc.tools.workers import WorkerPool

ToolFactory = Callable[[Sandbox, WorkerPool], Tool]
"""Builds a built-in tool. Tools whose cost depends on their input compute in
the worker pool; file tools also use the sandbox; constant-cost tools run inline."""

BUILTIN_TOOLS: Final[Mapping[str, ToolFactory]] = {
    "calculator": lambda _sandbox, workers: Calculator(workers),
    "text_analyzer": lambda _sandbox, workers: TextAnalyzer(workers),
    "json_formatter": JsonFormatter,
    "file_merger": FileMerger,
    "system_info": lambda _sandbox, _workers: SystemInfo(),
    "echo": lambda _sandbox, _workers: Echo(),
    "sleep": lambda _sandbox, _workers: Sleep(),
}


class ToolRegistry:
    """An immutable set of tools with unique names. Safe to share between tasks."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        """Index ``tools`` by name and compile their input schemas.

        Raises:
            ValueError: two tools share a name, or a schema is invalid.
        """
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, ArgumentValidator] = {}
        for tool in tools:
            spec = tool.spec
            if spec.name in self._tools:
                raise ValueError(f"duplicate tool name {spec.name!r}")
            self._validators[spec.name] = ArgumentValidator(spec.name, spec.input_schema)
            self._tools[spec.name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        """Tool names, sorted."""
        return sorted(self._tools)

    def specs(self) -> list[ToolSpec]:
        """Tool specs, sorted by name."""
        return [self._tools[name].spec for name in self.names()]

    def get(self, name: str) -> Tool:
        """The tool called ``name``.

        Raises:
            NotFound: no such tool; the message lists the tools offered.
        """
        tool = self._tools.get(name)
        if tool is None:
            offered = ", ".join(self.names()) or "no tools"
            raise NotFound(f"unknown tool {quote(name)}; this node offers: {offered}")
        return tool

    def validate(self, name: str, arguments: JSON) -> Tool:
        """Check ``arguments`` against the tool's schema and return the tool.

        Raises:
            NotFound: no such tool.
            InvalidArgument: the arguments violate the schema; ``field`` is the
                dotted path such as ``arguments.expression``.
        """
        tool = self.get(name)
        self._validators[name].validate(arguments)
        return tool


def build_registry(
    builtins: Sequence[str], contracts_dir: Path | None, sandbox_root: Path, workers: WorkerPool
) -> ToolRegistry:
    """Instantiate the named built-in tools and load the contract tools.

    ``workers`` is the pool the input-dependent tools compute in; its owner
    (the node) closes it after the last task ran.

    Raises:
        ValueError: an unknown built-in (the message lists the known ones) or
            a duplicate tool name.
        ContractError: a contract in ``contracts_dir`` is invalid.
    """
    unknown = [name for name in builtins if name not in BUILTIN_TOOLS]
    if unknown:
        known = ", ".join(sorted(BUILTIN_TOOLS))
        raise ValueError(f"unknown builtin tool(s) {', '.join(unknown)}; known: {known}")
    sandbox = Sandbox(sandbox_root)
    tools: list[Tool] = [BUILTIN_TOOLS[name](sandbox, workers) for name in builtins]
    if contracts_dir is not None:
        tools.extend(load_contracts(contracts_dir))
    return ToolRegistry(tools)
