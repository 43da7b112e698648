"""Tools: the executable capabilities a node offers, and the registry that holds them."""

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
