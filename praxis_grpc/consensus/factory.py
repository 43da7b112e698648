"""Build the consensus backend a config names."""

from __future__ import annotations

from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Consensus, ConsensusError

__all__ = ["build_consensus"]


def build_consensus(config: Config, *, agent_id: str, grpc_address: str) -> Consensus:
    """The backend of ``ha.consensus.backend`` for this node (not started).

    Raises:
        ConsensusError: the backend is ``none``.
    """
    settings = config.ha.consensus
    if settings.backend == "raft":
        from praxis_grpc.consensus.raft import RaftConsensus

        return RaftConsensus(
            settings.raft,
            agent_id=agent_id,
            grpc_address=grpc_address,
            data_dir=config.resolved_data_dir,
        )
    if settings.backend == "etcd":
        from praxis_grpc.consensus.etcd import EtcdConsensus

        return EtcdConsensus(settings.etcd, agent_id=agent_id, grpc_address=grpc_address)
    raise ConsensusError("ha.consensus.backend: none has no consensus member")
