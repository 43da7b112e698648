"""Argument validation against a tool's input schema, with messages that name the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from praxis_grpc.errors import InvalidArgument, clip

ROOT_FIELD: Final = "arguments"
_MAX_MESSAGE: Final = 200
_MAX_KEY_SHOWN: Final = 40  # characters of a client's property name shown in a field path
# Keywords that constrain nothing, next to "type".
_ANNOTATIONS: Final = frozenset(
    {"type", "$schema", "$id", "$comment", "title", "description", "examples", "default"}
)

_BOUNDS: Final[Mapping[str, str]] = {
    "minimum": "must be >= {}",
    "maximum": "must be <= {}",
    "exclusiveMinimum": "must be > {}",
    "exclusiveMaximum": "must be < {}",
    "minLength": "must be at least {} characters long",
    "maxLength": "must be at most {} characters long",
    "minItems": "must have at least {} item(s)",
    "maxItems": "must have at most {} item(s)",
    "minProperties": "must have at least {} properties",
    "maxProperties": "must have at most {} properties",
    "multipleOf": "must be a multiple of {}",
    "pattern": "must match the pattern {!r}",
    "format": "must be a valid {}",
}


class ArgumentValidator:
    """Checks arguments objects against one tool's input schema. Pure and thread-safe."""

    def __init__(self, tool_name: str, schema: Mapping[str, Any]) -> None:
        """Compile ``schema``.

        Raises:
            ValueError: ``schema`` is not a valid draft 2020-12 JSON Schema.
        """
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"tool {tool_name!r}: invalid input_schema: {exc.message}") from None
        self._validator = Draft202012Validator(schema)
        # {"type": "object"} (annotations aside) accepts every object: skip
        # jsonschema's per-call machinery, which costs more than the rest of
        # a cheap tool's request.
        self._any_object = schema.get("type") == "object" and set(schema) <= _ANNOTATIONS

    def validate(self, arguments: object) -> None:
        """Accept ``arguments`` or raise for its most relevant violation.

        Raises:
            InvalidArgument: ``field`` is the dotted path of the offending value
                below ``arguments`` (``arguments.expression``,
                ``arguments.paths[2]``); a missing or unexpected property is
                named itself.
        """
        if not isinstance(arguments, dict):
            raise InvalidArgument(ROOT_FIELD, "must be a JSON object")
        if self._any_object:
            return
        error = best_match(self._validator.iter_errors(arguments))
        if error is not None:
            field, message = describe(error)
            raise InvalidArgument(field, message)


def field_path(parts: Iterable[str | int]) -> str:
    """``["paths", 2]`` -> ``arguments.paths[2]``."""
    field = ROOT_FIELD
    for part in parts:
        field += f"[{part}]" if isinstance(part, int) else f".{clip(part, _MAX_KEY_SHOWN)}"
    return field


def describe(error: ValidationError) -> tuple[str, str]:
    """The field and a message for one schema violation, never quoting large values."""
    path: list[str | int] = list(error.absolute_path)
    named = _property_violation(error)
    if named is not None:
        name, message = named
        return field_path([*path, name]), message
    return field_path(path), _message(error)


def _property_violation(error: ValidationError) -> tuple[str, str] | None:
    """A missing or unexpected property, named, or ``None`` for other violations."""
    instance = error.instance
    if not isinstance(instance, dict):
        return None
    expected: Any = error.validator_value
    if error.validator == "required":
        missing = [name for name in expected if name not in instance]
        if missing:
            return str(missing[0]), "required property is missing"
    if error.validator == "additionalProperties":
        extras = _unexpected_properties(instance, error.schema)
        if extras:
            allowed = sorted(_schema_mapping(error.schema, "properties"))
            hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
            return extras[0], f"unexpected property{hint}"
    return None


def _message(error: ValidationError) -> str:
    keyword = str(error.validator)
    expected: Any = error.validator_value
    message = _clip(error.message)
    if keyword in ("oneOf", "anyOf"):
        names = _alternative_requirements(expected)
        if names:
            quantity = "exactly one" if keyword == "oneOf" else "at least one"
            message = f"{quantity} of {', '.join(names)} must be given"
    elif keyword == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        message = f"must be of type {' or '.join(map(str, kinds))}"
    elif keyword in ("enum", "const"):
        options = expected if keyword == "enum" else [expected]
        message = f"must be one of {_clip(', '.join(map(json.dumps, options)))}"
    elif keyword == "minLength" and expected == 1:
        message = "must not be empty"
    elif keyword in _BOUNDS:
        message = _BOUNDS[keyword].format(expected)
    return message


def _unexpected_properties(instance: dict[str, Any], schema: Any) -> list[str]:
    known = _schema_mapping(schema, "properties")
    patterns = list(_schema_mapping(schema, "patternProperties"))
    return sorted(
        key
        for key in instance
        if key not in known and not any(re.search(pattern, key) for pattern in patterns)
    )


def _schema_mapping(schema: Any, keyword: str) -> Mapping[str, Any]:
    value = schema.get(keyword) if isinstance(schema, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _alternative_requirements(branches: Any) -> list[str]:
    """Property names when every branch is just ``{"required": [...]}``, else ``[]``."""
    if not isinstance(branches, list) or not branches:
        return []
    names: list[str] = []
    for branch in branches:
        if not isinstance(branch, Mapping) or set(branch) != {"required"}:
            return []
        names.extend(str(name) for name in branch["required"])
    return sorted(set(names))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
