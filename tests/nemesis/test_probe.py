"""The nemesis harness's probe (issue 10): it keeps the message of every
failed call, not only its code, and the report sums up the distinct ones
(three trials whose coordinator answered FAILED_PRECONDITION for 60 s could
not be diagnosed from the output); and it sends on a connection of its own,
not on the workload's (which, to a node just healed from a cut, waits for
TCP's backed-off retransmission of what the clients sent during the cut)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from bench._nemesis_report import NemesisRun, notes
from bench._nemesis_trial import TrialResult
from bench._nemesis_workload import Channels, error_code, probe, request, tally
from praxis_grpc._gen.praxis.v1 import task_service_pb2
from praxis_grpc.testing.counting import RunLog

REFUSAL = "no other agent offers tool 'nonidem'"


async def refuse(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    PEERS.append(context.peer())
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, REFUSAL)


PEERS: list[str] = []
"""The client address of every call ``refuse`` answered."""


@pytest.fixture
async def refusing() -> AsyncIterator[str]:
    PEERS.clear()
    server = grpc.aio.server()
    service = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
    handler = grpc.unary_unary_rpc_method_handler(refuse)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service, {"SubmitTask": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_a_refused_probe_keeps_the_message(refusing: str, tmp_path: Path) -> None:
    submission = await probe(
        lambda: [("node1", refusing)],
        "",
        RunLog(tmp_path / "runs.log"),
        "k1",
        task_seconds=0,
        rpc_timeout=5,
        give_up=0.2,
    )
    assert not submission.task_id
    assert submission.errors
    assert {error_code(error) for error in submission.errors} == {"FAILED_PRECONDITION"}
    assert f"node1: FAILED_PRECONDITION: {REFUSAL}" in submission.errors

    trial = TrialResult("partition-coordinator", 1, 8.0)
    trial.failed_messages.update(tally(submission.errors))
    summary = notes([NemesisRun("etcd", "partition-coordinator", trials=[trial])])
    count = len(submission.errors)
    assert f"failed calls: node1: FAILED_PRECONDITION: {REFUSAL} (x{count})" in summary


async def test_the_probe_does_not_share_the_workloads_connection(
    refusing: str, tmp_path: Path
) -> None:
    workload = Channels()
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await workload.tasks(refusing).SubmitTask(
                request("k1", RunLog(tmp_path / "runs.log"), 0), timeout=5
            )
        await probe(
            lambda: [("node1", refusing)],
            "",
            RunLog(tmp_path / "runs.log"),
            "k2",
            task_seconds=0,
            rpc_timeout=5,
            give_up=0.1,
        )
    finally:
        await workload.close()
    assert len(PEERS) >= 2
    assert PEERS[0] not in PEERS[1:]  # before: every call came from one client port
