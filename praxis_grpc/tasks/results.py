"""The check a task's result passes before it is stored, and its size.

A result is stored only if every later read of the task can return it: a
stored value that cannot be converted to the proto fails every ``GetTask``,
``ListTasks`` and ``WatchTask`` that includes the task. So a result must be a
JSON object a protobuf ``Struct`` carries both ways
(:func:`~praxis_grpc.tasks.json_values.check_json_object`), its strings must
be valid Unicode, and its size is bounded.

Size is measured as the ``Struct``'s protobuf wire size (what
``Struct.ByteSize()`` reports after conversion, computed here without building
the message), the measure the request path uses for arguments: it is what the
result adds to every message that carries the task. Pure; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Final

from praxis_grpc.errors import InvalidArgument, ToolError
from praxis_grpc.tasks.json_values import CheckedObject, check_json_object
from praxis_grpc.tasks.model import Reason, Task, TaskError, TaskState

__all__ = ["checked_result", "storable", "struct_bytes"]

# A Value holding null, a bool (tag + varint) or a number (tag + 8-byte double).
_SMALL_VALUE: Final = 2
_NUMBER_VALUE: Final = 9
# Longest message quoted from a refusal (its path names client data).
_MAX_MESSAGE: Final = 200
# One encoder and decoder for every result (json.dumps with allow_nan builds
# an encoder per call).
_to_json = json.JSONEncoder(allow_nan=False).encode
_from_json = json.JSONDecoder().decode


def checked_result(result: Any, max_bytes: int, source: str = "tool") -> dict[str, Any]:
    """``result`` as the engine stores it, or the reason it cannot be stored.

    The result goes through JSON once (tuples become lists, keys strings),
    then must pass :func:`check_json_object` and encode to at most
    ``max_bytes`` ``Struct`` wire bytes. It is returned as a
    :class:`~praxis_grpc.tasks.json_values.CheckedObject`, so the response
    that carries it need not check it again.

    Args:
        result: What the tool (or, for a delegated task, its owner) returned.
        max_bytes: ``tasks.max_result_bytes``.
        source: Who produced it, for the message ("tool", "agent X").

    Raises:
        ToolError: reason ``RESULT_INVALID`` (the message names the path of
            the first offending value) or ``RESULT_TOO_LARGE``.
    """
    if not isinstance(result, dict):
        raise _invalid(f"{source} returned {type(result).__name__}, expected a JSON object")
    try:
        normalized: dict[str, Any] = _from_json(_to_json(result))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _invalid(f"{source} returned a result that is not JSON: {exc}") from None
    try:
        check_json_object(normalized, "result")
        size = struct_bytes(normalized)
    except InvalidArgument as exc:
        raise _invalid(f"{source} returned a result that cannot be stored: {exc}") from None
    if size > max_bytes:
        raise ToolError(
            f"{source} returned a result of {size} bytes (as a protobuf Struct); "
            f"the limit is {max_bytes} bytes (tasks.max_result_bytes)",
            reason=Reason.RESULT_TOO_LARGE,
        )
    return CheckedObject(normalized)


def storable(task: Task, max_bytes: int) -> Task:
    """``task``, reported by the agent that owns it, as this node may store
    its record: a result that fails :func:`checked_result` here (the owner
    runs an older version, or allows larger results) makes the record FAILED
    with that reason instead of COMPLETED.

    A result that is a JSON object as it is (a report's result is decoded
    from a ``Struct``) is kept as it is, without :func:`checked_result`'s
    trip through JSON."""
    if task.result is None:
        return task
    try:
        check_json_object(task.result, "result")
        if struct_bytes(task.result) <= max_bytes:
            return task
    except InvalidArgument:
        pass  # checked_result names the reason
    try:
        result = checked_result(task.result, max_bytes, f"agent {task.owner_agent_id}")
    except ToolError as exc:
        error = TaskError(exc.reason, exc.message)
        return replace(task, state=TaskState.FAILED, result=None, error=error)
    return replace(task, result=result)


def struct_bytes(value: dict[str, Any]) -> int:
    """The wire size of ``value`` as a ``google.protobuf.Struct``.

    ``value`` must have passed :func:`check_json_object` (its depth bounds
    the recursion here).

    Raises:
        InvalidArgument: a string or key is not valid Unicode (a lone
            surrogate), so no ``Struct`` can hold it.
    """
    return sum(
        _field(_field(_text_bytes(key)) + _field(_value_bytes(item))) for key, item in value.items()
    )


def _value_bytes(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return _SMALL_VALUE
    if isinstance(value, int | float):
        return _NUMBER_VALUE
    if isinstance(value, str):
        return _field(_text_bytes(value))
    if isinstance(value, dict):
        return _field(struct_bytes(value))
    return _field(sum(_field(_value_bytes(item)) for item in value))


def _text_bytes(text: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(
            "result", "holds a string that is not valid Unicode (a lone surrogate)"
        ) from None


def _field(size: int) -> int:
    """A length-delimited field of ``size`` bytes: tag, length, payload."""
    return 1 + _varint_bytes(size) + size


def _varint_bytes(number: int) -> int:
    return max(1, (number.bit_length() + 6) // 7)


def _invalid(message: str) -> ToolError:
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return ToolError(message, reason=Reason.RESULT_INVALID)
