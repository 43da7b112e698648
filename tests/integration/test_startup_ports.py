"""A node that fails to start frees its ports (grpc.aio keeps the port of a
server bound but never started until the process exits)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from praxis_grpc.consensus.base import Consensus, ConsensusError
from praxis_grpc.node import Node
from praxis_grpc.node_parts import StartupError
from praxis_grpc.testing import make_config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_node_whose_consensus_cannot_be_built_frees_its_api_port(
    tmp_path: Path,
) -> None:
    def broken(agent_id: str, grpc_address: str) -> Consensus:
        raise ConsensusError("no consensus here")

    port = _free_port()
    config = make_config(
        tmp_path,
        api={"port": port},
        metrics={"enabled": False},
        ha={
            "mode": "active-passive",
            "consensus": {"backend": "raft", "raft": {"address": "127.0.0.1:1", "secret": "x"}},
        },
    )
    with pytest.raises(StartupError, match="no consensus here"):
        async with Node(config, consensus=broken):
            pass
    assert _bindable(port), f"port {port} still held after a failed start"
