"""The node's HTTP port (/metrics, the A2A card): serving and closing."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from praxis_grpc.http_endpoints import HttpEndpoints


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serves_until_closed_then_frees_its_port_and_thread() -> None:
    registry = CollectorRegistry()
    Counter("praxis_test_total", "a counter", registry=registry).inc()
    endpoints = HttpEndpoints(registry, lambda: {"name": "node1"})
    endpoints.start("127.0.0.1", 0)
    port = endpoints.port
    for _ in range(3):  # one request after another: the loop keeps serving
        status, body = _get(port, "/metrics")
        assert status == 200
        assert b"praxis_test_total 1.0" in body
    status, body = _get(port, "/.well-known/agent-card.json")
    assert (status, json.loads(body)) == (200, {"name": "node1"})
    assert _get(port, "/nothing")[0] == 404

    endpoints.close()
    assert not [t for t in threading.enumerate() if t.name == "praxis-http"]
    with pytest.raises(RuntimeError, match="not started"):
        _ = endpoints.port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    endpoints.close()  # idempotent
