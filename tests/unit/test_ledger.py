"""The task ledger on its own: writes, dedup, notifications, foreign records; no tool runs."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from praxis_grpc.errors import AlreadyExists, NotFound
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.ledger import Ledger
from praxis_grpc.tasks.model import Reason, Task, TaskState
from praxis_grpc.tasks.store import TaskStoreError, Write, WriteResult
from praxis_grpc.testing import MemoryTaskStore
from tests.unit.test_engine import CountingStore, foreign, new_id, until


class FailingStore(MemoryTaskStore):
    """Fails every transaction while ``failing`` is set."""

    failing = False

    def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        if self.failing:
            raise OSError("disk full")
        return super().apply(writes)


def local(task_id: str = "", **fields: object) -> Task:
    """A new task of agent-a's own."""
    now = datetime.now(UTC)
    task = Task(
        task_id=task_id or new_id(),
        tool="gate",
        arguments={"x": 1},
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
        owner_agent_id="agent-a",
        origin_agent_id="agent-a",
        timeout=5.0,
    )
    return replace(task, **fields)  # type: ignore[arg-type]


def make_ledger(store: MemoryTaskStore | None = None) -> tuple[Ledger, MemoryTaskStore, Metrics]:
    store = store or MemoryTaskStore()
    metrics = Metrics()
    return Ledger(store=store, metrics=metrics, agent_id="agent-a"), store, metrics


async def test_an_inserted_task_is_shown_once_committed() -> None:
    ledger, store, metrics = make_ledger()
    task = local()
    written = ledger.insert(task)
    with pytest.raises(NotFound):
        ledger.get(task.task_id)
    assert ledger.inserted(task, await written) == (task, False)
    assert store.get(task.task_id) == task
    assert ledger.get(task.task_id) is task
    assert metrics.tasks_total.labels("gate", "SUBMITTED")._value.get() == 1


async def test_a_repeated_request_gets_the_first_task_and_a_different_one_is_refused() -> None:
    ledger, _, _ = make_ledger()
    first = local(idempotency_key="k", request_fingerprint="f")
    await ledger.insert(first)

    same_id = local(first.task_id, request_fingerprint="f")
    assert ledger.inserted(same_id, await ledger.insert(same_id)) == (first, True)
    other_id = local(first.task_id, request_fingerprint="g")
    with pytest.raises(AlreadyExists, match="task_id"):
        ledger.inserted(other_id, await ledger.insert(other_id))

    same_key = local(idempotency_key="k", request_fingerprint="f")
    assert ledger.inserted(same_key, await ledger.insert(same_key)) == (first, True)
    assert ledger.duplicate_of("k", None, "agent-a", "f") == first
    with pytest.raises(AlreadyExists, match="idempotency_key 'k'"):
        ledger.duplicate_of("k", None, "agent-a", "g")
    assert ledger.duplicate_of("k", None, "agent-z", "f") is None


async def test_a_state_is_told_to_watchers_and_waiters_only_once_committed() -> None:
    ledger, store, _ = make_ledger()
    task = local()
    await ledger.insert(task)
    stored_when_seen: list[tuple[TaskState, TaskState | None]] = []

    async def watch() -> None:
        async for seen in ledger.watch(task.task_id):
            stored = store.get(task.task_id)
            stored_when_seen.append((seen.state, stored.state if stored else None))

    watcher = asyncio.create_task(watch())
    waiter = asyncio.create_task(ledger.wait(task.task_id))
    await until(lambda: stored_when_seen)
    working = await ledger.persist(task.start(datetime.now(UTC)))
    done = await ledger.persist(working.complete({"ok": True}, datetime.now(UTC)))

    assert await asyncio.wait_for(waiter, 5) == done
    await asyncio.wait_for(watcher, 5)
    assert stored_when_seen == [
        (TaskState.SUBMITTED, TaskState.SUBMITTED),
        (TaskState.WORKING, TaskState.WORKING),
        (TaskState.COMPLETED, TaskState.COMPLETED),
    ]
    assert ledger.get(task.task_id) == done  # from the store now: no longer live


async def test_a_write_that_fails_is_told_to_nobody() -> None:
    ledger, store, _ = make_ledger(FailingStore())
    task = local()
    await ledger.insert(task)
    seen: list[Task] = []

    async def watch() -> None:
        async for state in ledger.watch(task.task_id):
            seen.append(state)

    watcher = asyncio.create_task(watch())
    await until(lambda: seen)
    assert isinstance(store, FailingStore)
    store.failing = True
    with pytest.raises(TaskStoreError, match="disk full"):
        await ledger.persist(task.start(datetime.now(UTC)))
    assert ledger.get(task.task_id) == task
    assert seen == [task]
    watcher.cancel()


async def test_a_state_change_outlives_the_cancellation_of_its_writer() -> None:
    ledger, store, _ = make_ledger()
    task = local()
    await ledger.insert(task)
    working = task.start(datetime.now(UTC))
    writer = asyncio.create_task(ledger.persist(working))
    await asyncio.sleep(0)  # the writer now awaits the commit
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert store.get(task.task_id) == working
    assert ledger.get(task.task_id) == working


async def test_update_nowait_shows_a_state_before_it_commits() -> None:
    ledger, store, _ = make_ledger()
    task = local()
    await ledger.insert(task)
    working = task.start(datetime.now(UTC))
    ledger.update_nowait(working)
    assert ledger.get(task.task_id) == working
    assert store.get(task.task_id) == task
    ledger.journal.flush()
    assert store.get(task.task_id) == working


async def test_adopt_takes_a_foreign_record_over_without_running_it() -> None:
    ledger, store, _ = make_ledger()
    record = await ledger.record(foreign(timeout=0.0))
    assert ledger.foreign_unfinished() == [record]

    adopted = await ledger.adopt(record, default_timeout=7.0)

    assert (adopted.owner_agent_id, adopted.state, adopted.timeout) == ("agent-a", record.state, 7)
    assert ledger.owns(adopted)
    assert store.get(record.task_id) == adopted
    assert ledger.foreign_unfinished() == []
    with pytest.raises(ValueError, match="owned by this agent"):
        await ledger.adopt(adopted, default_timeout=7.0)
    with pytest.raises(ValueError, match="is a local task"):
        await ledger.adopt(replace(adopted, owner_agent_id="agent-b"), default_timeout=7.0)


async def test_recover_fails_damaged_tasks_and_keeps_foreign_records_live() -> None:
    store = CountingStore()
    mine = local()
    theirs = foreign(state=TaskState.SUBMITTED)
    damaged_mine = local(unreadable=("arguments: not JSON",))
    damaged_theirs = foreign(unreadable=("result: not JSON",))
    for task in (mine, theirs, damaged_mine, damaged_theirs):
        store.insert(task)
    ledger, _, _ = make_ledger(store)

    unfinished, failed = ledger.recover()

    assert unfinished == [mine]
    assert failed == [damaged_mine.task_id, damaged_theirs.task_id]
    for task_id in failed:
        damaged = store.get(task_id)
        assert damaged is not None
        assert damaged.error is not None
        assert (damaged.state, damaged.error.reason) == (
            TaskState.FAILED,
            Reason.STORED_VALUE_UNREADABLE,
        )
    store.gets = 0
    assert ledger.get(theirs.task_id) == theirs
    assert ledger.get(mine.task_id) == mine
    assert store.gets == 0  # both served from memory
    assert ledger.foreign_unfinished() == [theirs]
