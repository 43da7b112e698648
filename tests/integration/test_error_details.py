"""Errors as a generated client in any language reads them: the
``google.rpc.ErrorInfo`` and ``RetryInfo`` details of the rich status of a
real grpc.aio call (``grpc-status-details-bin``), next to the plain
``praxis-error`` trailer grpcurl users read."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import _async as rpc_status_aio  # rpc_status.aio, which the stubs lack

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc, types_pb2
from praxis_grpc.api.errors import error_from_rpc, status_for
from praxis_grpc.consensus.base import ConsensusError
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.node import Node
from praxis_grpc.tasks.store import Write, WriteResult
from praxis_grpc.testing import MemoryConsensusGroup, MemoryTaskStore, make_config, running_node
from praxis_grpc.testing.memory_mesh import MemoryMesh
from tests.integration.helpers import NodeGroup, stub, until

from .conftest import Stubs


def sleep(seconds: float) -> pb.SubmitTaskRequest:
    arguments = struct_pb2.Struct()
    arguments.update({"seconds": seconds})
    return pb.SubmitTaskRequest(tool="sleep", arguments=arguments)


async def failed(call: Any) -> tuple[grpc.StatusCode, status_pb2.Status, dict[str, Any]]:
    """The code, rich status and plain trailers of a call that fails; checks
    that a node relaying the error (``error_from_rpc``) recovers the same one."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = await rpc_status_aio.from_call(call)
    assert status is not None, "no rich status in the trailers"
    trailers = dict(await call.trailing_metadata())
    relayed = error_from_rpc(raised.value, "node2")
    info, retry = details(status)
    assert (relayed.reason, relayed.metadata(), relayed.retry_after) == (
        info.reason,
        dict(info.metadata),
        retry,
    )
    assert status_for(relayed)[0] == await call.code()
    return await call.code(), status, trailers


def details(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo, float | None]:
    """The ErrorInfo of ``status`` and its RetryInfo delay in seconds (if any)."""
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    found_info = found_retry = False
    for detail in status.details:
        found_info = found_info or detail.Unpack(info)
        found_retry = found_retry or detail.Unpack(retry)
    assert found_info, f"no ErrorInfo in {status}"
    assert info.domain == "praxis.dev"
    return info, (retry.retry_delay.ToMilliseconds() / 1000 if found_retry else None)


async def test_invalid_argument_names_the_field(stubs: Stubs) -> None:
    code, status, trailers = await failed(stubs.tasks.ListTasks(pb.ListTasksRequest(page_size=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    info, retry = details(status)
    assert (info.reason, dict(info.metadata)) == ("FIELD_INVALID", {"field": "page_size"})
    assert retry is None
    assert trailers["praxis-error"] == "invalid_argument"


async def test_unspecified_state_filter_is_an_invalid_argument(stubs: Stubs) -> None:
    # types.proto documents this (it used to say UNSPECIFIED "matches nothing").
    request = pb.ListTasksRequest(
        states=[types_pb2.TASK_STATE_SUBMITTED, types_pb2.TASK_STATE_UNSPECIFIED]
    )
    code, status, _ = await failed(stubs.tasks.ListTasks(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    info, _ = details(status)
    assert info.metadata["field"] == "states[1]"
    proto = Path(__file__).parents[2] / "protos/praxis/v1/types.proto"
    comment = proto.read_text().split("TASK_STATE_UNSPECIFIED = 0")[0].rsplit("{", 1)[1]
    assert "INVALID_ARGUMENT" in comment


async def test_resource_exhausted_carries_a_retry_delay(stubs: Stubs) -> None:
    # The node fixture: max_concurrency 2 + queue_limit 4, so the seventh is refused.
    for _ in range(6):
        await stubs.tasks.SubmitTask(sleep(30))
    code, status, trailers = await failed(stubs.tasks.SubmitTask(sleep(1)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, retry = details(status)
    assert info.reason == "OVERLOADED"
    assert retry is not None
    assert retry > 0
    assert int(info.metadata["retry_after_ms"]) == int(trailers["retry-after-ms"])
    assert trailers["praxis-error"] == "resource_exhausted"


@contextlib.asynccontextmanager
async def coordinator(
    tmp_path: Path, group: MemoryConsensusGroup
) -> AsyncIterator[task_service_pb2_grpc.TaskServiceAsyncStub]:
    """Two active-passive nodes on the memory consensus and mesh; yields a
    stub of ``a``, elected coordinator (``b`` runs the tasks)."""
    mesh = MemoryMesh()
    async with contextlib.AsyncExitStack() as stack:
        nodes = NodeGroup(stack=stack)
        for name in ("a", "b"):
            config = make_config(
                tmp_path / name,
                name=name,
                agent={"name": name},
                metrics={"enabled": False},
                cards={"heartbeat": "200ms", "ttl": "3s"},
                ha={
                    "mode": "active-passive",
                    "consensus": {
                        "backend": "raft",
                        "raft": {"address": "127.0.0.1:1", "secret": "x"},
                    },
                },
            )
            identity = load_or_create_identity(config.key_file)
            node = Node(
                config,
                identity=identity,
                discovery=mesh.member(identity.agent_id),
                consensus=group.member,
            )
            await nodes.started(name, node)
        await nodes.converged()
        a = nodes.nodes["a"]
        group.elect(a.agent_id)
        await until(lambda: a.role == "coordinator", timeout=10)
        yield await stack.enter_async_context(stub(a))


async def test_a_consensus_failure_is_unavailable_with_a_retry_hint(tmp_path: Path) -> None:
    group = MemoryConsensusGroup()
    async with coordinator(tmp_path, group) as tasks:
        group.fail(ConsensusError("commit timed out after 2s"))
        code, status, trailers = await failed(tasks.SubmitTask(sleep(0)))
        assert code == grpc.StatusCode.UNAVAILABLE, status.message
        info, retry = details(status)
        assert info.reason == "CONSENSUS_UNAVAILABLE"
        assert retry is not None
        assert retry > 0
        assert trailers["praxis-error"] == "unavailable"
        group.fail(None)
        await tasks.SubmitTask(sleep(0))  # healed


class FailingStore(MemoryTaskStore):
    """A store whose writes fail while ``broken`` (a full or failing disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def apply(self, writes: Sequence[Write]) -> list[WriteResult]:
        if self.broken:
            raise sqlite3.OperationalError("disk I/O error")
        return super().apply(writes)


async def test_a_store_failure_is_unavailable_with_a_retry_hint(tmp_path: Path) -> None:
    store = FailingStore()
    config = make_config(tmp_path / "node", metrics={"enabled": False})
    async with (
        running_node(config, store=store) as node,
        grpc.aio.insecure_channel(node.endpoints.grpc) as channel,
    ):
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        store.broken = True
        code, status, trailers = await failed(tasks.SubmitTask(sleep(0)))
        assert code == grpc.StatusCode.UNAVAILABLE, status.message
        info, retry = details(status)
        assert info.reason == "STORE_UNAVAILABLE"
        assert retry is not None
        assert retry > 0
        assert trailers["praxis-error"] == "unavailable"
        store.broken = False
        await tasks.SubmitTask(sleep(0))
