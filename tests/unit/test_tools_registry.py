"""The registry finds tools by name and rejects bad arguments naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import praxis_grpc.tools
from praxis_grpc.errors import InvalidArgument, NotFound
from praxis_grpc.tools import (
    BUILTIN_TOOLS,
    ArgumentValidator,
    ContractError,
    Tool,
    ToolRegistry,
    ToolSpec,
    build_registry,
)
from praxis_grpc.tools.base import JSON
from praxis_grpc.tools.workers import WorkerPool

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"


class Fixed:
    """A tool with a given spec that returns nothing."""

    def __init__(self, name: str, schema: dict[str, Any] | None = None) -> None:
        self._spec = ToolSpec(name=name, description=name, input_schema=schema or {})

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def run(self, arguments: JSON) -> JSON:
        return {}


@pytest.fixture
def registry(tmp_path: Path) -> ToolRegistry:
    return build_registry(sorted(BUILTIN_TOOLS), None, tmp_path, WorkerPool(1))


def invalid(registry: ToolRegistry, name: str, arguments: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        registry.validate(name, arguments)
    return caught.value


def test_lists_tools_sorted(registry: ToolRegistry) -> None:
    assert registry.names() == sorted(BUILTIN_TOOLS)
    assert [spec.name for spec in registry.specs()] == registry.names()
    assert "calculator" in registry
    assert len(registry) == len(BUILTIN_TOOLS)


def test_every_builtin_satisfies_the_tool_protocol(registry: ToolRegistry) -> None:
    for name in registry.names():
        assert isinstance(registry.get(name), Tool)


def test_unknown_tool_lists_what_is_offered(tmp_path: Path) -> None:
    registry = build_registry(["echo", "calculator"], None, tmp_path, WorkerPool(1))

    with pytest.raises(NotFound, match="unknown tool 'nope'; this node offers: calculator, echo"):
        registry.get("nope")
    with pytest.raises(NotFound):
        registry.validate("nope", {})


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate tool name 'x'"):
        ToolRegistry([Fixed("x"), Fixed("x")])


def test_invalid_schema_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="tool 'x': invalid input_schema"):
        ToolRegistry([Fixed("x", {"type": "nonsense"})])


def test_validate_returns_the_tool(registry: ToolRegistry) -> None:
    assert registry.validate("calculator", {"expression": "1"}) is registry.get("calculator")


def test_missing_required_property_is_named(registry: ToolRegistry) -> None:
    error = invalid(registry, "calculator", {})

    assert error.field == "arguments.expression"
    assert error.message == "arguments.expression: required property is missing"


def test_unexpected_property_is_named(registry: ToolRegistry) -> None:
    error = invalid(registry, "calculator", {"expression": "1", "precision": 3})

    assert error.field == "arguments.precision"
    assert "unexpected property; allowed: expression" in error.message


def test_wrong_type_is_reported_at_its_path(registry: ToolRegistry) -> None:
    error = invalid(registry, "calculator", {"expression": 42})

    assert error.field == "arguments.expression"
    assert error.message.endswith("must be of type string")


def test_array_items_are_indexed(registry: ToolRegistry) -> None:
    error = invalid(registry, "file_merger", {"paths": ["a", 3], "output": "o"})

    assert error.field == "arguments.paths[1]"


def test_bounds_are_reported_without_quoting_the_value(registry: ToolRegistry) -> None:
    huge = "x" * 2_000_000

    text_error = invalid(registry, "text_analyzer", {"text": huge})
    sleep_error = invalid(registry, "sleep", {"seconds": 7200})
    merge_error = invalid(registry, "file_merger", {"paths": [], "output": "o"})

    assert text_error.message == "arguments.text: must be at most 250000 characters long"
    assert sleep_error.message == "arguments.seconds: must be <= 3600"
    assert merge_error.message == "arguments.paths: must have at least 1 item(s)"


def test_one_of_alternatives_are_explained(registry: ToolRegistry) -> None:
    neither = invalid(registry, "json_formatter", {})
    both = invalid(registry, "json_formatter", {"data": 1, "path": "x"})

    assert neither.field == "arguments"
    assert neither.message == "arguments: exactly one of data, path must be given"
    assert both.message == neither.message


def test_arguments_must_be_an_object(registry: ToolRegistry) -> None:
    error = invalid(registry, "echo", [1, 2])

    assert error.field == "arguments"


def test_enum_messages_list_the_options() -> None:
    validator = ArgumentValidator(
        "t", {"type": "object", "properties": {"mode": {"enum": ["fast", "safe"]}}}
    )

    with pytest.raises(InvalidArgument, match='must be one of "fast", "safe"'):
        validator.validate({"mode": "other"})


def test_unknown_builtin_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown builtin tool.*nope; known: calculator"):
        build_registry(["calculator", "nope"], None, tmp_path, WorkerPool(1))


def test_build_registry_loads_contracts(tmp_path: Path) -> None:
    registry = build_registry(["calculator"], TOOLS_DIR, tmp_path, WorkerPool(1))

    assert "data_stats" in registry.names()
    assert registry.get("data_stats").spec.idempotent is True


def test_build_registry_reports_a_bad_contract_directory(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="does not exist"):
        build_registry([], tmp_path / "missing", tmp_path, WorkerPool(1))


def test_exported_members_are_public_and_complete() -> None:
    exported = set(praxis_grpc.tools.__all__)

    assert exported == {
        name for name in dir(praxis_grpc.tools) if not name.startswith("_") and name.isidentifier()
    } - {
        "base",
        "calculator",
        "contract",
        "files",
        "registry",
        "system",
        "text",
        "validation",
        "workers",
    }
