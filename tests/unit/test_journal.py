"""GroupCommit: batching, coalescing of a task's updates, and uncancellable commits."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from praxis_grpc.tasks.journal import GroupCommit
from praxis_grpc.tasks.model import Task, TaskState
from praxis_grpc.tasks.store import DuplicateTask, UnknownTask, Write, WriteResult
from praxis_grpc.testing import MemoryTaskStore


class RecordingStore(MemoryTaskStore):
    """Remembers every batch it was asked to apply."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, str, TaskState]]] = []

    def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        self.batches.append([(w.kind, w.task.task_id, w.task.state) for w in writes])
        return super().apply(writes)


def task(task_id: str) -> Task:
    now = datetime.now(UTC)
    return Task(task_id, "echo", {}, TaskState.SUBMITTED, now, now, owner_agent_id="agent-a")


async def test_writes_of_one_iteration_share_one_commit() -> None:
    store = RecordingStore()
    journal = GroupCommit(store)
    first, second = task("t-1"), task("t-2")
    results = list(await asyncio.gather(journal.insert(first), journal.insert(second)))
    assert results == [first, second]
    assert store.batches == [
        [("insert", "t-1", TaskState.SUBMITTED), ("insert", "t-2", TaskState.SUBMITTED)]
    ]


async def test_writes_arriving_in_consecutive_iterations_share_one_commit() -> None:
    # Under load a node queues about one write per event-loop iteration: the
    # batch waits while writes keep arriving (up to max_wait_iterations).
    store = RecordingStore()
    journal = GroupCommit(store)  # max_wait_iterations=4
    writes = []
    for name in ("t-1", "t-2", "t-3"):
        writes.append(journal.insert(task(name)))
        await asyncio.sleep(0)  # one event-loop iteration
    await asyncio.gather(*writes)
    assert [[w[1] for w in batch] for batch in store.batches] == [["t-1", "t-2", "t-3"]]


async def test_a_batch_waits_at_most_max_wait_iterations() -> None:
    store = RecordingStore()
    journal = GroupCommit(store, max_wait_iterations=2)
    writes = []
    for name in ("t-1", "t-2", "t-3", "t-4"):
        writes.append(journal.insert(task(name)))
        await asyncio.sleep(0)
    await asyncio.gather(*writes)
    assert [[w[1] for w in batch] for batch in store.batches] == [["t-1", "t-2"], ["t-3", "t-4"]]


async def test_an_update_replaces_the_pending_update_of_its_task() -> None:
    store = RecordingStore()
    journal = GroupCommit(store)
    submitted = task("t-1")
    await journal.insert(submitted)
    now = datetime.now(UTC)
    working = submitted.start(now)
    completed = working.complete({"ok": True}, now)
    other = task("t-2")
    results = list(
        await asyncio.gather(
            journal.update(working), journal.insert(other), journal.update(completed)
        )
    )
    assert results == [None, other, None]
    assert store.batches[1] == [
        ("update", "t-1", TaskState.COMPLETED),
        ("insert", "t-2", TaskState.SUBMITTED),
    ]
    assert store.get("t-1") == completed


async def test_updates_are_not_merged_across_another_write_of_their_task() -> None:
    store = RecordingStore()
    journal = GroupCommit(store)
    submitted = task("t-1")
    working = submitted.start(datetime.now(UTC))
    results = list(
        await asyncio.gather(
            journal.insert(submitted),
            journal.update(working),
            journal.delete(working),
            journal.update(working),
        )
    )
    assert results[:3] == [submitted, None, None]
    assert isinstance(results[3], UnknownTask)
    # The first update is folded into the insert; the last one follows the delete.
    assert store.batches == [
        [
            ("insert", "t-1", TaskState.WORKING),
            ("delete", "t-1", TaskState.WORKING),
            ("update", "t-1", TaskState.WORKING),
        ]
    ]


async def test_an_update_of_a_pending_insert_is_folded_into_it() -> None:
    store = RecordingStore()
    journal = GroupCommit(store)
    submitted = task("t-1")
    now = datetime.now(UTC)
    working = submitted.start(now)
    completed = working.complete({"ok": True}, now)
    results = list(
        await asyncio.gather(
            journal.insert(submitted), journal.update(working), journal.update(completed)
        )
    )
    assert results[0] is submitted  # as if inserted as first queued
    assert results[1:] == [None, None]
    assert store.batches == [[("insert", "t-1", TaskState.COMPLETED)]]
    assert store.get("t-1") == completed


async def test_an_update_folded_into_a_duplicate_insert_is_applied_after_it() -> None:
    store = RecordingStore()
    journal = GroupCommit(store)
    stored = task("t-1")
    await journal.insert(stored)
    working = task("t-1").start(datetime.now(UTC))
    results = list(await asyncio.gather(journal.insert(task("t-1")), journal.update(working)))
    assert isinstance(results[0], DuplicateTask)
    assert results[1] is None  # applied to the stored task, as without folding
    assert store.batches[1:] == [
        [("insert", "t-1", TaskState.WORKING)],
        [("update", "t-1", TaskState.WORKING)],
    ]
    current = store.get("t-1")
    assert current is not None
    assert current.state is TaskState.WORKING


async def test_a_cancelled_waiter_sees_the_cancellation_after_the_commit() -> None:
    store = RecordingStore()
    journal = GroupCommit(store)
    new = task("t-1")
    writes: list[asyncio.Future[WriteResult]] = []
    observed: list[object] = []

    async def waiter() -> None:
        write = journal.insert(new)
        writes.append(write)
        try:
            await write
        except asyncio.CancelledError:
            observed.append(await write)
            raise

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter queued its write and awaits the commit
    assert not writes[0].done()
    waiting.cancel()
    assert not writes[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert observed == [new]
    assert store.get("t-1") == new


async def test_only_a_pending_insert_can_be_folded_into() -> None:
    journal = GroupCommit(RecordingStore())
    submitted = task("t-1")
    with pytest.raises(ValueError, match="no pending insert"):
        journal.fold(submitted.start(datetime.now(UTC)))
    inserted = journal.insert(submitted)
    journal.fold(submitted.start(datetime.now(UTC)))
    assert await inserted is submitted
    update = journal.update(submitted)
    with pytest.raises(ValueError, match="no pending insert"):
        journal.fold(submitted)
    assert await update is None


async def test_inserting_is_true_only_while_a_tasks_latest_pending_write_is_its_insert() -> None:
    journal = GroupCommit(RecordingStore())
    submitted = task("t-1")
    assert not journal.inserting("t-1")
    inserted = journal.insert(submitted)
    assert journal.inserting("t-1")
    journal.update(submitted.start(datetime.now(UTC)))  # folds: still the insert
    assert journal.inserting("t-1")
    journal.flush()  # committed, though its callbacks have not run yet
    assert not journal.inserting("t-1")
    update = journal.update(submitted)
    assert not journal.inserting("t-1")
    assert await inserted is submitted
    assert await update is None


async def test_then_callbacks_run_when_the_batch_commits_before_any_waiter_resumes() -> None:
    # then() runs in the commit itself (no event-loop round, unlike a done
    # callback), in order, and a callback's error goes to the loop's handler.
    loop = asyncio.get_running_loop()
    reported: list[object] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    journal = GroupCommit(RecordingStore())
    seen: list[str] = []
    written = journal.insert(task("t-1"))
    written.add_done_callback(lambda _: seen.append("done callback"))

    def failing(_: object) -> None:
        raise RuntimeError("callback failed")

    written.then(lambda future: seen.append(f"then 1, done: {future.done()}"))
    written.then(failing)
    written.then(lambda _: seen.append("then 2"))

    async def waiter() -> None:
        await written
        seen.append("waiter")

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    journal.flush()
    assert seen == ["then 1, done: True", "then 2"]
    await waiting
    assert seen == ["then 1, done: True", "then 2", "done callback", "waiter"]
    assert [str(exc) for exc in reported] == ["callback failed"]


async def test_then_callbacks_see_a_failed_commit() -> None:
    class FailingStore(RecordingStore):
        def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
            raise OSError("disk full")

    journal = GroupCommit(FailingStore())
    written = journal.insert(task("t-1"))
    outcomes: list[BaseException | None] = []
    written.then(lambda future: outcomes.append(future.exception()))
    journal.flush()
    assert [type(exc).__name__ for exc in outcomes] == ["StoreUnavailable"]
    with pytest.raises(Exception, match="disk full"):
        await written


async def test_a_then_callback_added_after_the_commit_runs_at_once() -> None:
    journal = GroupCommit(RecordingStore())
    written = journal.insert(task("t-1"))
    journal.flush()
    seen: list[bool] = []
    written.then(lambda future: seen.append(future.done()))
    assert seen == [True]
