"""Fixtures for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from praxis_grpc.testing.netns import NatLab, nat_lab, require_netns


@pytest.fixture
def lab() -> Iterator[NatLab]:
    """A public namespace and two private ones, each behind its own NAT with
    endpoint-independent mapping (see :mod:`praxis_grpc.testing.netns`).
    Skips without root or ``ip netns`` (fails under CI=true)."""
    require_netns()
    with nat_lab() as built:
        yield built


@pytest.fixture(params=["endpoint-independent", "symmetric"])
def any_lab(request: pytest.FixtureRequest) -> Iterator[NatLab]:
    """:func:`lab` once with each kind of NAT."""
    require_netns()
    with nat_lab(symmetric=request.param == "symmetric") as built:
        yield built


@pytest.fixture
def symmetric_lab() -> Iterator[NatLab]:
    """:func:`lab` with symmetric NATs (a random port per connection)."""
    require_netns()
    with nat_lab(symmetric=True) as built:
        yield built
