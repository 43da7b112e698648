"""The A2A agent card a node serves at /.well-known/agent-card.json.

Validated against the A2A 0.3 AgentCard of the protocol's own Python SDK
(``a2a-sdk``, whose types are generated from the protocol's JSON schema,
specification/json/a2a.json): its JSON Schema with jsonschema, and a
round trip through the SDK's model, which would drop any key the protocol
does not define.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from a2a.types import AgentCard as A2aAgentCard

from praxis_grpc.a2a import TOOL_SCHEMAS_EXTENSION, WELL_KNOWN_PATH
from praxis_grpc.node import Node
from praxis_grpc.testing import make_config, running_node


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def served_card(node: Node) -> dict[str, Any]:
    status, content_type, body = await asyncio.to_thread(
        fetch, f"http://{node.endpoints.metrics}{WELL_KNOWN_PATH}"
    )
    assert status == 200
    assert content_type == "application/json"
    card: dict[str, Any] = json.loads(body)
    return card


async def test_the_card_is_a_valid_a2a_agent_card(tmp_path: Path) -> None:
    config = make_config(tmp_path / "n", agent={"name": "analytics", "tags": ["data"]})
    async with running_node(config) as node:
        card = await served_card(node)
    schema = A2aAgentCard.model_json_schema(by_alias=True)
    jsonschema.Draft202012Validator(schema).validate(card)
    parsed = A2aAgentCard.model_validate(card)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_none=True) == card
    assert card["url"] == node.endpoints.grpc
    assert card["preferredTransport"] == "GRPC"
    assert card["name"] == "analytics"


async def test_the_card_reflects_the_node_tools_and_their_schemas(tmp_path: Path) -> None:
    config = make_config(tmp_path / "n", tools={"builtins": ["echo", "calculator"]})
    async with running_node(config) as node:
        card = await served_card(node)
        specs = {tool.name: tool for tool in node.directory.local.tools}
    # The builtins asked for, plus any contract tools found in ./tools.
    assert {skill["id"] for skill in card["skills"]} == set(specs) >= {"echo", "calculator"}
    assert "sleep" not in specs
    for skill in card["skills"]:
        assert skill["description"] == specs[skill["id"]].description
    (extension,) = card["capabilities"]["extensions"]
    assert extension["uri"] == TOOL_SCHEMAS_EXTENSION
    assert extension["params"] == {name: spec.input_schema for name, spec in specs.items()}
    assert extension["params"]["calculator"]["type"] == "object"


async def test_metrics_and_other_paths_share_the_port(tmp_path: Path) -> None:
    async with running_node(make_config(tmp_path / "n")) as node:
        base = f"http://{node.endpoints.metrics}"
        status, content_type, body = await asyncio.to_thread(fetch, f"{base}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain")
        assert b"praxis_tasks_in_flight" in body
        status, _, _ = await asyncio.to_thread(fetch, f"{base}/nothing-here")
        assert status == 404


@pytest.mark.parametrize("accept", ["application/openmetrics-text; version=1.0.0"])
async def test_metrics_negotiates_openmetrics(tmp_path: Path, accept: str) -> None:
    async with running_node(make_config(tmp_path / "n")) as node:
        request = urllib.request.Request(
            f"http://{node.endpoints.metrics}/metrics", headers={"Accept": accept}
        )

        def get() -> tuple[str, bytes]:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers["Content-Type"], response.read()

        content_type, body = await asyncio.to_thread(get)
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
