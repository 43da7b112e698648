"""``PRAXIS_<SECTION>__<KEY>`` environment overrides, parsed by the type of the key they set."""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from praxis_grpc.config._errors import ConfigError, quote

ENV_PREFIX = "PRAXIS_"


def apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], model: type[BaseModel]
) -> dict[tuple[str, ...], str]:
    """Merge ``PRAXIS_A__B=value`` into ``data`` in place.

    A value is parsed as JSON when it parses (numbers, booleans, lists), otherwise
    taken as a string; a key whose type in ``model`` is a string or a path takes the
    value as written unless it is a JSON string (``PRAXIS_AGENT__NAME=007`` names the
    agent "007"), and a list key needs a JSON list.

    Returns:
        The key paths that were overridden, mapped to their variable names.

    Raises:
        ConfigError: a malformed variable name, or a list key whose value is not a
            JSON list; the message names the variable.
    """
    overridden: dict[tuple[str, ...], str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = tuple(k.lower() for k in name[len(ENV_PREFIX) :].split("__"))
        if not all(keys):
            raise ConfigError(f"environment {name}: malformed name (empty key between '__')")
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = _parse(name, raw, _kind(_annotation(model, keys)))
        overridden[keys] = name
    return overridden


def _parse(name: str, raw: str, kind: str) -> Any:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        if kind == "list":
            message = str(exc)[:100]
            raise ConfigError(f"environment {name}: not a JSON list ({message})") from None
        return raw
    if kind == "text" and not isinstance(value, str | None):
        return raw
    if kind == "list" and not isinstance(value, list):
        raise ConfigError(f"environment {name}: expected a JSON list, got {quote(raw)}")
    return value


def _annotation(model: type[BaseModel], keys: tuple[str, ...]) -> Any:
    """The type of the key at ``keys`` in ``model``; None for a key it lacks."""
    for key in keys[:-1]:
        field = model.model_fields.get(key)
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            return None
        model = section
    field = model.model_fields.get(keys[-1])
    return field.annotation if field is not None else None


def _kind(annotation: Any) -> str:
    """ "text", "list" or "json" (numbers, booleans, durations, unknown keys)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        kinds = {_kind(arg) for arg in get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else "json"
    if origin is Literal:
        return "text" if all(isinstance(arg, str) for arg in get_args(annotation)) else "json"
    if origin is list:
        return "list"
    if isinstance(annotation, type) and issubclass(annotation, str | PurePath):
        return "text"
    return "json"
