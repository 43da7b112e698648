"""A node's card in the A2A protocol's agent-card JSON (A2A 0.3.0).

Pure conversion, no I/O: :func:`a2a_agent_card` turns a praxis
:class:`~praxis_grpc.cards.AgentCard` into the document served at
``/.well-known/agent-card.json`` (see :mod:`praxis_grpc.http_endpoints`), so
A2A discovery tooling finds a node and reads what it offers.

Mapping: each tool is a skill (``id`` and ``name`` the tool's name); the
card's ``url`` is the node's gRPC endpoint with ``preferredTransport``
``GRPC``. A2A skills carry no input schema, so the tools' JSON Schemas travel
in the capability extension :data:`TOOL_SCHEMAS_EXTENSION` (``params`` maps
tool name to schema). The endpoint serves praxis's own gRPC services
(``praxis.v1.TaskService`` and friends), not A2A's ``A2AService``: an A2A
client can discover a node and its skills, and calls it with praxis's protos.
"""

from __future__ import annotations

from typing import Any

from praxis_grpc.cards import AgentCard

PROTOCOL_VERSION = "0.3.0"
"""The A2A protocol version whose agent-card format this module writes."""

TOOL_SCHEMAS_EXTENSION = "urn:praxis:a2a:tool-input-schemas:v1"
"""Extension URI under which the tools' input JSON Schemas are published."""

WELL_KNOWN_PATH = "/.well-known/agent-card.json"
"""Where A2A clients look for an agent's card (A2A 0.3, RFC 8615)."""

_JSON = "application/json"


def a2a_agent_card(card: AgentCard) -> dict[str, Any]:
    """The A2A agent card (JSON-ready, camelCase keys) describing ``card``."""
    url = card.grpc_address
    tags = ", ".join(card.tags)
    description = f"praxis agent {card.name} ({card.role})" + (f"; tags: {tags}" if tags else "")
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "name": card.name,
        "description": description,
        "url": url,
        "preferredTransport": "GRPC",
        "additionalInterfaces": [{"url": url, "transport": "GRPC"}],
        "version": card.praxis_version,
        "capabilities": {
            "streaming": True,
            "pushNotifications": False,
            "stateTransitionHistory": False,
            "extensions": [
                {
                    "uri": TOOL_SCHEMAS_EXTENSION,
                    "description": "Input JSON Schema of each skill (praxis tool), by skill id.",
                    "required": False,
                    "params": {tool.name: tool.input_schema for tool in card.tools},
                }
            ],
        },
        "defaultInputModes": [_JSON],
        "defaultOutputModes": [_JSON],
        "skills": [
            {
                "id": tool.name,
                "name": tool.name,
                "description": tool.description or tool.name,
                "tags": [*card.tags, "idempotent" if tool.idempotent else "non-idempotent"],
                "inputModes": [_JSON],
                "outputModes": [_JSON],
            }
            for tool in card.tools
        ],
    }
