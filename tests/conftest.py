"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from praxis_grpc.testing import worker_pool
from praxis_grpc.tools.workers import WorkerPool

pytest_plugins = ["tests._socket_origins"]


@pytest.fixture
async def workers() -> AsyncIterator[WorkerPool]:
    """A one-worker pool for tools built in a test; its worker is killed afterwards."""
    async with worker_pool() as pool:
        yield pool
