"""The Consensus contract (praxis_grpc.testing.consensus_contract), one suite
run against the in-memory fake, embedded raft and etcd (the session's cluster,
under a prefix of each test's own). What is particular to one backend stays in
test_memory_consensus.py, test_consensus_raft.py and test_consensus_etcd.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from praxis_grpc.consensus.base import Consensus, Suspecting
from praxis_grpc.testing.consensus_contract import (
    CHECKS,
    ConsensusHarness,
    ContractCheck,
    MemoryHarness,
    wait_agreed,
)
from tests.integration.conftest import EtcdNamespace
from tests.integration.test_consensus_etcd import etcd_group
from tests.integration.test_consensus_raft import raft_group


class RaftHarness:
    backend = "raft"

    def __init__(self, root: Path) -> None:
        self._root = root
        self._groups = 0

    def address(self, index: int) -> str:
        return f"127.0.0.1:{7000 + index}"

    @contextlib.asynccontextmanager
    async def group(self, size: int) -> AsyncIterator[list[Consensus]]:
        self._groups += 1
        async with raft_group(self._root / f"group-{self._groups}", size) as members:
            yield list(members)

    async def leader(self, members: Sequence[Consensus], above: int = 0) -> Consensus:
        return await wait_agreed(members, above)


class EtcdHarness:
    backend = "etcd"

    def __init__(self, etcd: EtcdNamespace) -> None:
        self._etcd = etcd
        self._groups = 0

    def address(self, index: int) -> str:
        return f"127.0.0.1:{7000 + index}"

    @contextlib.asynccontextmanager
    async def group(self, size: int) -> AsyncIterator[list[Consensus]]:
        self._groups += 1
        prefix = f"{self._etcd.prefix}{self._groups}/"
        async with etcd_group(self._etcd.endpoints, size, prefix=prefix) as members:
            yield list(members)

    async def leader(self, members: Sequence[Consensus], above: int = 0) -> Consensus:
        return await wait_agreed(members, above)


@pytest.fixture(params=["memory", "raft", "etcd"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> ConsensusHarness:
    if request.param == "memory":
        return MemoryHarness()
    if request.param == "raft":
        return RaftHarness(tmp_path)
    return EtcdHarness(request.getfixturevalue("etcd"))


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_contract(check: ContractCheck, harness: ConsensusHarness) -> None:
    await check(harness)


async def test_every_backend_here_can_suspect(harness: ConsensusHarness) -> None:
    # Suspecting is optional; the three backends here all have it.
    async with harness.group(1) as (member,):
        assert isinstance(member, Suspecting)
