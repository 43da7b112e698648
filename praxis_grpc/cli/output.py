"""How every ``praxis`` command prints: one convention for text and JSON.

JSON is what grpcurl prints for the same message (protojson): field names in
snake_case as in the protos, default values left out, 64-bit integers as
strings, enums by name. Numbers that are whole print as integers (``21``, not
``21.0``): ``google.protobuf.Struct`` keeps every number as a double, and
grpcurl prints a whole double without a fraction too.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

_EXACT = 2**53


def message_dict(message: Message) -> dict[str, Any]:
    """``message`` as the JSON object grpcurl prints for it."""
    result: dict[str, Any] = whole_numbers(
        json_format.MessageToDict(message, preserving_proto_field_name=True)
    )
    return result


def whole_numbers(value: Any) -> Any:
    """``value`` with every whole float (up to 2**53) replaced by an int."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value


def print_json(document: Any) -> None:
    """Print one JSON document on one line (flushed: scripts read it at once)."""
    print(json.dumps(whole_numbers(document)), flush=True)


def enum_name(message: Message, field: str, prefix: str) -> str:
    """The short lower-case name of an enum field (``AGENT_ROLE_PEER`` -> ``peer``)."""
    enum_type = message.DESCRIPTOR.fields_by_name[field].enum_type
    assert enum_type is not None, field
    name: str = enum_type.values_by_number[getattr(message, field)].name
    return name.removeprefix(prefix).lower().replace("_", "-")


def task_state(task: Message) -> str:
    """A task's state as the CLI prints it (``COMPLETED``)."""
    return enum_name(task, "state", "TASK_STATE_").upper()


def short_id(agent_id: str) -> str:
    """An agent id shortened for a table column."""
    return agent_id[:6] + "…" + agent_id[-6:] if len(agent_id) > 14 else agent_id


def print_task(task: Any, as_json: bool) -> None:
    """One task: its JSON object, or a line of id, state, tool, result or error."""
    if as_json:
        print_json(message_dict(task))
        return
    line = f"{task.task_id}  {task_state(task)}  {task.tool}"
    if task.HasField("result"):
        line += f"  result={json.dumps(message_dict(task.result))}"
    if task.HasField("error"):
        line += f"  error={task.error.reason}: {task.error.message}"
    print(line, flush=True)
