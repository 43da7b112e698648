"""What a task's arguments and results may hold: JSON values that a protobuf
``Struct`` carries both ways.

A value that breaks this contract must be refused before it is stored: once
stored, every read of the task (``GetTask``, ``ListTasks``, ``WatchTask``)
would fail to convert it. Pure; no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final

from praxis_grpc.errors import InvalidArgument

# protobuf refuses to parse messages nested deeper than 100 levels; one level
# of JSON nesting costs up to three (map entry, Value, Struct), and a task
# travels inside two or three envelopes (response, Task, peer messages).
MAX_JSON_DEPTH: Final = 20
# The largest magnitude a double represents; a Struct number is a double.
_MAX_DOUBLE: Final = 1.7976931348623157e308


class CheckedObject(dict[str, Any]):
    """A JSON object that passed :func:`check_json_object`, made by the code
    that checked it (a tool's result, see
    :func:`~praxis_grpc.tasks.results.checked_result`), so a reader of the
    same process need not check it again. Never changed after it was made.
    What comes back from a store or another node is a plain dict, checked
    where it is read."""

    __slots__ = ()


def check_json_object(value: Any, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Accept ``value`` if it is a JSON object a ``Struct`` can carry.

    That is: dicts with string keys, lists, strings, booleans, ``None``, finite
    floats and integers within the range of a double, nested at most
    ``max_depth`` containers deep (the object itself is level 1). Iterative, so
    a deep value cannot exhaust the interpreter's stack.

    Raises:
        InvalidArgument: ``field`` (with the path below it, such as
            ``result.rows[3].name``) names the first offending value.
    """
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object, not {type(value).__name__}")
    pending: list[tuple[Any, str, int]] = [(value, field, 1)]
    while pending:
        item, path, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidArgument(path, f"is nested more than {max_depth} levels deep")
            pending.extend(_children(item, path, depth + 1))
        else:
            _check_scalar(item, path)


def _children(container: dict[Any, Any] | list[Any], path: str, depth: int) -> list[Any]:
    if isinstance(container, list):
        return [(child, f"{path}[{index}]", depth) for index, child in enumerate(container)]
    for key in container:
        if not isinstance(key, str):
            raise InvalidArgument(path, "object keys must be strings")
    return [(child, f"{path}.{_clip(key)}", depth) for key, child in container.items()]


def _check_scalar(item: Any, path: str) -> None:
    if isinstance(item, bool) or item is None or isinstance(item, str):
        return
    if isinstance(item, int):
        if abs(item) > _MAX_DOUBLE:
            raise InvalidArgument(path, "integer is too large for a JSON number (a double)")
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise InvalidArgument(path, f"{item} is not a finite number")
    else:
        raise InvalidArgument(path, f"{type(item).__name__} is not a JSON value")


def _clip(key: str, limit: int = 40) -> str:
    return key if len(key) <= limit else key[: limit - 1] + "…"


def compact_json(*, sort_keys: bool = False) -> Callable[[Any], str]:
    """``json.JSONEncoder(separators=(",", ":"), sort_keys=sort_keys).encode``
    (the same text) for values that hold no reference cycle, such as JSON
    decoded or checked before: the C encoder is made once instead of at every
    call, and the cycle check is left out (a cycle ends in RecursionError)."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # no C accelerator: the plain encoder
        return json.JSONEncoder(separators=(",", ":"), sort_keys=sort_keys).encode
    encode = make(
        None,  # markers: no cycle check
        json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ":",
        ",",
        sort_keys,
        False,  # skipkeys
        True,  # allow_nan, as JSONEncoder
    )

    def compact(value: Any) -> str:
        return "".join(encode(value, 0))

    return compact
