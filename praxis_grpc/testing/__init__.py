"""Public test helpers and fakes: in-memory store, in-process and subprocess nodes."""

from praxis_grpc.testing.memory_consensus import MemoryConsensus, MemoryConsensusGroup
from praxis_grpc.testing.memory_store import MemoryTaskStore
from praxis_grpc.testing.nodes import TEST_BUILTINS, make_config, node_process, running_node
from praxis_grpc.testing.tools import (
    Execution,
    ExecutionLog,
    RecordingTool,
    ReturningTool,
    worker_pool,
)
from praxis_grpc.testing.wait import eventually

__all__ = [
    "TEST_BUILTINS",
    "Execution",
    "ExecutionLog",
    "MemoryConsensus",
    "MemoryConsensusGroup",
    "MemoryTaskStore",
    "RecordingTool",
    "ReturningTool",
    "eventually",
    "make_config",
    "node_process",
    "running_node",
    "worker_pool",
]
