"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from praxis_grpc.testing.peer_nodes import PeerCluster


@pytest.fixture
async def cluster() -> AsyncIterator[PeerCluster]:
    """Nodes on one in-memory peer network (no sockets), closed after the test."""
    cluster = PeerCluster()
    try:
        yield cluster
    finally:
        await cluster.aclose()
