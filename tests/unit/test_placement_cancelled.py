"""A placement whose caller goes away while the coordinator records the task
(the client's deadline passed, or the standby relaying it abandoned the relay
when leadership moved) still delivers the task: the committed record is
followed and sent to its owner, so the acknowledgement a retry then gets
(deduplicated by the key) is kept. Likewise in active-active mode, where the
entry node's record is its own store's. In-memory peers and consensus."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from praxis_grpc.tasks.journal import Commit
from praxis_grpc.tasks.model import Submission, Task, TaskState
from praxis_grpc.testing import ExecutionLog, RecordingTool
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.peer_nodes import PeerCluster, PeerNode
from tests.integration.helpers import until


async def test_a_record_committed_for_a_cancelled_placement_is_still_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group, cluster, log = MemoryConsensusGroup(), PeerCluster(), ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        for name in ("a", "b", "c"):
            node = PeerNode(
                cluster.network,
                name,
                [RecordingTool(name, log, idempotent=False)],
                consensus=group,
                data_dir=tmp_path / name,
            )
            await cluster.add(node)
        a = cluster.nodes["a"]
        group.elect("a")
        await until(lambda: a.ha is not None and a.ha.leading)
        cluster.share_cards()
        # The coordinator's record is committed and stored, but the step
        # returns late (a slow commit under load): the client is gone by then.
        records = a.delegations.records
        record, late = records.record, asyncio.Event()

        async def slow(task: Task, *, durable: bool = True) -> Task:
            stored = await record(task, durable=durable)
            await late.wait()
            return stored

        monkeypatch.setattr(records, "record", slow)
        submission = Submission("work", {"seconds": 0, "key": "k"}, idempotency_key="k")
        call = asyncio.get_running_loop().create_task(a.dispatcher.submit(submission))
        await until(lambda: bool(a.engine.list(tool="work")[0]))
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        late.set()
        # The client's retry is acknowledged with that task ...
        acked, deduplicated = await a.dispatcher.submit(submission)
        assert deduplicated
        # ... which runs, once.
        done = await asyncio.wait_for(a.engine.wait(acked.task_id), 10)
        assert done.state is TaskState.COMPLETED
        assert log.count("k") == 1


async def test_an_entry_record_committed_for_a_cancelled_placement_is_still_delivered(
    cluster: PeerCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = ExecutionLog()
    entry = await cluster.add(PeerNode(cluster.network, "entry", []))
    worker = RecordingTool("worker", log, idempotent=False)
    await cluster.add(PeerNode(cluster.network, "worker", [worker]))
    # The entry node's record commits only once the client is gone.
    journal = entry.engine.ledger.journal
    insert, held = journal.insert, list[tuple[Task, Commit]]()

    def held_insert(task: Task) -> Commit:
        late = Commit(loop=asyncio.get_running_loop())
        held.append((task, late))
        return late

    monkeypatch.setattr(journal, "insert", held_insert)
    submission = Submission("work", {"seconds": 0, "key": "k"})
    call = asyncio.get_running_loop().create_task(entry.dispatcher.submit(submission, wait=True))
    await until(lambda: bool(held))
    call.cancel()
    monkeypatch.setattr(journal, "insert", insert)
    record, late = held[0]
    insert(record).add_done_callback(lambda written: late.set_result(written.result()))
    with pytest.raises(asyncio.CancelledError):
        await call
    # The record was followed and its task sent to the worker: it runs, once.
    done = await asyncio.wait_for(entry.engine.wait(record.task_id), 10)
    assert done.state is TaskState.COMPLETED
    assert done.owner_agent_id == "worker"
    assert log.count("k") == 1
