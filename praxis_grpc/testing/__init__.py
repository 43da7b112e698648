"""Public test helpers and fakes: in-memory store, in-process and subprocess nodes."""

from praxis_grpc.testing.memory_store import MemoryTaskStore
from praxis_grpc.testing.nodes import TEST_BUILTINS, make_config, node_process, running_node

__all__ = ["TEST_BUILTINS", "MemoryTaskStore", "make_config", "node_process", "running_node"]
