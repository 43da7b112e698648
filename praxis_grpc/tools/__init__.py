"""Tools: the executable capabilities a node offers, and the registry that holds them.

The names below are loaded on first use (PEP 562): every tool worker process
(:mod:`praxis_grpc.tools._worker`) imports this package to reach the one
module it runs, and importing all of it (jsonschema, pydantic, psutil) cost
each spawn about 0.25 s of CPU.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from praxis_grpc.tools.base import JSON, InstantTool, Tool, ToolSpec
    from praxis_grpc.tools.calculator import Calculator
    from praxis_grpc.tools.contract import (
        Contract,
        ContractError,
        ContractTool,
        load_contract,
        load_contracts,
    )
    from praxis_grpc.tools.files import FileMerger, JsonFormatter, Sandbox
    from praxis_grpc.tools.registry import BUILTIN_TOOLS, ToolFactory, ToolRegistry, build_registry
    from praxis_grpc.tools.system import Echo, Sleep, SystemInfo
    from praxis_grpc.tools.text import TextAnalyzer
    from praxis_grpc.tools.validation import ArgumentValidator
    from praxis_grpc.tools.workers import WorkerError, WorkerPool

_WHERE = {
    "ArgumentValidator": "validation",
    "BUILTIN_TOOLS": "registry",
    "Calculator": "calculator",
    "Contract": "contract",
    "ContractError": "contract",
    "ContractTool": "contract",
    "Echo": "system",
    "FileMerger": "files",
    "InstantTool": "base",
    "JSON": "base",
    "JsonFormatter": "files",
    "Sandbox": "files",
    "Sleep": "system",
    "SystemInfo": "system",
    "TextAnalyzer": "text",
    "Tool": "base",
    "ToolFactory": "registry",
    "ToolRegistry": "registry",
    "ToolSpec": "base",
    "WorkerError": "workers",
    "WorkerPool": "workers",
    "build_registry": "registry",
    "load_contract": "contract",
    "load_contracts": "contract",
}

__all__ = [
    "BUILTIN_TOOLS",
    "JSON",
    "ArgumentValidator",
    "Calculator",
    "Contract",
    "ContractError",
    "ContractTool",
    "Echo",
    "FileMerger",
    "InstantTool",
    "JsonFormatter",
    "Sandbox",
    "Sleep",
    "SystemInfo",
    "TextAnalyzer",
    "Tool",
    "ToolFactory",
    "ToolRegistry",
    "ToolSpec",
    "WorkerError",
    "WorkerPool",
    "build_registry",
    "load_contract",
    "load_contracts",
]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
