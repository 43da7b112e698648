"""The local executor on its own, over a ledger and the in-memory store."""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from praxis_grpc.errors import ToolError
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.executor import EngineLimits, LocalExecutor
from praxis_grpc.tasks.ledger import Ledger
from praxis_grpc.tasks.model import Reason, Submission, TaskState
from praxis_grpc.tasks.store import TaskStoreError, Write, WriteResult
from praxis_grpc.testing import MemoryTaskStore
from praxis_grpc.tools.registry import ToolRegistry
from tests.unit.test_engine import GateTool, _stored, until


class RefusingStore(MemoryTaskStore):
    """Fails the transaction that holds a final state of ``doomed``."""

    doomed = ""

    def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        if any(w.task.task_id == self.doomed and w.task.terminal for w in writes):
            raise OSError("disk full")
        return super().apply(writes)


def make_executor(
    store: MemoryTaskStore, *tools: GateTool, **limits: Any
) -> tuple[LocalExecutor, Ledger]:
    once = GateTool(name="once", idempotent=False)
    once.release.set()
    metrics = Metrics()
    ledger = Ledger(store=store, metrics=metrics, agent_id="agent-a")
    executor = LocalExecutor(
        ledger=ledger,
        tools=ToolRegistry([*tools, once]),
        limits=EngineLimits(**limits),
        metrics=metrics,
    )
    return executor, ledger


def runners() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task.get_name().startswith("task-")}


async def test_runners_are_owned_by_the_executor_and_end_with_it() -> None:
    gate = GateTool()
    executor, _ = make_executor(MemoryTaskStore(), gate, max_concurrency=2)
    executor.start()
    for _ in range(3):
        await executor.submit(Submission("gate"))
    await until(lambda: gate.started == 2)
    assert len(runners()) == 2
    assert executor.load().queued == 1

    await executor.aclose(grace=0)

    assert runners() == set()
    assert all(task.get_name() != "local-executor" for task in asyncio.all_tasks())
    assert executor.load().in_flight == 0


async def test_a_task_whose_outcome_cannot_be_stored_stops_no_other_task() -> None:
    store = RefusingStore()
    gate, other_gate = GateTool(), GateTool(name="other")
    executor, ledger = make_executor(store, gate, other_gate, max_concurrency=2)
    executor.start()
    doomed, _ = await executor.submit(Submission("gate"))
    other, _ = await executor.submit(Submission("other"))
    store.doomed = doomed.task_id
    await until(lambda: gate.started == other_gate.started == 1)

    gate.release.set()  # the doomed task ends first, alone in its commit
    await until(lambda: executor.load().in_flight == 1)
    other_gate.release.set()

    done = await asyncio.wait_for(ledger.wait(other.task_id), 5)
    assert done.state is TaskState.COMPLETED
    assert ledger.get(doomed.task_id).state is TaskState.WORKING  # as last recorded
    late, _ = await executor.submit(Submission("other"))
    assert (await asyncio.wait_for(ledger.wait(late.task_id), 5)).state is TaskState.COMPLETED
    await executor.aclose(grace=0)


async def test_recovery_fails_damaged_and_poisoned_tasks_and_requeues_the_rest() -> None:
    store = MemoryTaskStore()
    poisoned = _stored(store, "gate", TaskState.WORKING)
    store.update(poisoned.requeue(poisoned.updated_at).start(poisoned.updated_at))
    requeued = _stored(store, "once", TaskState.SUBMITTED)
    theirs = _stored(store, "gate", TaskState.SUBMITTED, owner="agent-b")
    damaged = replace(theirs, task_id=str(uuid.uuid4()), unreadable=("arguments: x",))
    store.insert(damaged)
    gate = GateTool()
    gate.release.set()
    executor, ledger = make_executor(store, gate, max_attempts=2)

    report = executor.start()

    assert report.failed == (damaged.task_id, poisoned.task_id)
    assert report.requeued == (requeued.task_id,)
    failed = ledger.get(poisoned.task_id)
    assert failed.error is not None
    assert failed.error.reason == Reason.POISONED
    assert (await asyncio.wait_for(ledger.wait(requeued.task_id), 5)).state is TaskState.COMPLETED
    assert ledger.get(theirs.task_id).state is TaskState.SUBMITTED  # foreign: left alone
    assert gate.started == 0
    await executor.aclose(grace=0)


async def test_a_task_cancelled_before_its_runner_starts_ends_canceled_and_frees_its_slot() -> None:
    # submit() starts the runner without yielding; a cancel in the same step
    # reaches a coroutine that never ran, so its own clean-up never runs either.
    gate = GateTool()
    executor, ledger = make_executor(MemoryTaskStore(), gate, max_concurrency=1)
    executor.start()
    await until(lambda: executor._group is not None)  # the host has opened its task group
    first, _ = await executor.submit(Submission("gate"))

    canceled = await executor.cancel(first.task_id, "changed my mind")

    assert canceled.state is TaskState.CANCELED
    assert ledger.get(first.task_id).state is TaskState.CANCELED
    assert executor.load().in_flight == 0
    gate.release.set()
    second, _ = await executor.submit(Submission("gate"))
    await until(lambda: ledger.get(second.task_id).state is TaskState.COMPLETED)
    await executor.aclose(grace=0)


class BatchRecordingStore(MemoryTaskStore):
    """Remembers the (kind, state) of every write of every batch; fails every
    batch while ``failing``."""

    failing = False

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, TaskState]]] = []

    def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        self.batches.append([(w.kind, w.task.state) for w in writes])
        if self.failing:
            raise OSError("disk full")
        return super().apply(writes)


async def test_a_task_that_finishes_before_its_insert_commits_is_written_once() -> None:
    # An idempotent task submitted to an idle executor starts at once; its
    # WORKING and COMPLETED states fold into the pending insert: one write,
    # shown only once committed.
    store = BatchRecordingStore()
    gate = GateTool()
    gate.release.set()
    executor, ledger = make_executor(store, gate)
    executor.start()
    first, _ = await executor.submit(Submission("gate"))  # may queue: the executor is starting
    await ledger.wait(first.task_id)
    store.batches.clear()
    task, deduplicated = await executor.submit(Submission("gate"))
    assert not deduplicated
    finished = await ledger.wait(task.task_id)
    assert finished.state is TaskState.COMPLETED
    assert finished.attempt == 1
    assert store.batches == [[("insert", TaskState.COMPLETED)]]
    assert store.get(task.task_id) == finished
    # So is a task with an id the ledger issued (a routing node's placement).
    store.batches.clear()
    fresh = ledger.new_task_id()
    task, _ = await executor.submit(Submission("gate"), task_id=fresh)
    assert (await ledger.wait(fresh)).state is TaskState.COMPLETED
    assert store.batches == [[("insert", TaskState.COMPLETED)]]
    # And one with an id no task holds here (another node's dispatch).
    store.batches.clear()
    chosen = str(uuid.uuid4())
    await executor.submit(Submission("gate"), task_id=chosen, dispatched=True)
    assert (await ledger.wait(chosen)).state is TaskState.COMPLETED
    assert store.batches == [[("insert", TaskState.COMPLETED)]]
    await executor.aclose(grace=0)


async def test_a_task_that_finished_before_its_insert_committed_is_shown_finished() -> None:
    # Its COMPLETED state was committed with the insert: once the submission
    # returns, a reader (the waiting client) sees it without waiting again.
    gate = GateTool()
    gate.release.set()
    executor, ledger = make_executor(MemoryTaskStore(), gate)
    executor.start()
    first, _ = await executor.submit(Submission("gate"))  # may queue: the executor is starting
    await ledger.wait(first.task_id)
    task, _ = await executor.submit(Submission("gate"))
    assert ledger.get(task.task_id).state is TaskState.COMPLETED
    await executor.aclose(grace=0)


async def test_a_task_whose_id_is_being_written_does_not_start_before_its_insert() -> None:
    store = BatchRecordingStore()
    gate = GateTool()
    gate.release.set()
    executor, ledger = make_executor(store, gate)
    executor.start()
    first, _ = await executor.submit(Submission("gate"))  # may queue: the executor is starting
    await ledger.wait(first.task_id)
    store.batches.clear()
    chosen = str(uuid.uuid4())
    results = await asyncio.gather(
        executor.submit(Submission("gate"), task_id=chosen),
        executor.submit(Submission("gate"), task_id=chosen),
    )
    assert [deduplicated for _, deduplicated in results] == [False, True]
    assert (await ledger.wait(chosen)).state is TaskState.COMPLETED
    assert gate.started == 2  # the first task and this one, once
    assert [kind for batch in store.batches for kind, _ in batch].count("insert") == 2
    await executor.aclose(grace=0)


async def test_a_task_started_before_a_failed_insert_leaves_nothing_behind() -> None:
    store = BatchRecordingStore()
    gate = GateTool()
    gate.release.set()
    executor, ledger = make_executor(store, gate, max_concurrency=1)
    executor.start()
    first, _ = await executor.submit(Submission("gate"))  # may queue: the executor is starting
    await ledger.wait(first.task_id)
    store.failing = True
    with pytest.raises(TaskStoreError):
        await executor.submit(Submission("gate"))
    await until(lambda: executor.load().in_flight == 0)
    assert gate.started == 2  # it started before its insert failed (idempotent)
    store.failing = False
    assert [task.task_id for task in store.list()[0]] == [first.task_id]
    task, _ = await executor.submit(Submission("gate"))  # its slot was freed
    assert (await ledger.wait(task.task_id)).state is TaskState.COMPLETED
    await executor.aclose(grace=0)


async def test_a_task_started_as_its_insert_commits_shows_its_running_state() -> None:
    # The insert commits (here a flush in the same iteration) before the
    # runner's first step: the runner shows WORKING before the insert's
    # callback runs, which must not show the task SUBMITTED again.
    store = BatchRecordingStore()
    gate = GateTool()
    warm = GateTool(name="warm")
    warm.release.set()
    executor, ledger = make_executor(store, gate, warm)
    executor.start()
    first, _ = await executor.submit(Submission("warm"))
    await ledger.wait(first.task_id)
    submitting = asyncio.create_task(executor.submit(Submission("gate")))
    await asyncio.sleep(0)  # one iteration: the submission queues its insert and runner
    ledger.journal.flush()
    task, _ = await submitting
    await until(lambda: gate.started == 1)
    assert ledger.get(task.task_id).state is TaskState.WORKING
    gate.release.set()
    assert (await ledger.wait(task.task_id)).state is TaskState.COMPLETED
    await executor.aclose(grace=0)


class InstantGate(GateTool):
    """A gate whose runs may also be made at once (an InstantTool) when it is open."""

    def run_now(self, arguments: dict[str, Any]) -> dict[str, Any]:
        assert self.release.is_set()
        self.started += 1
        if arguments.get("fail"):
            raise ToolError("asked to fail")
        if arguments.get("crash"):
            raise RuntimeError("boom")
        return {"ok": True, "args": arguments}


async def test_an_instant_tool_runs_in_the_submitting_call_without_a_runner() -> None:
    # A task that may start before its insert commits and whose tool is an
    # InstantTool runs in the submission itself: no runner task exists for
    # it, its outcome folds into the insert (one write), and the submission
    # returns it finished once that committed.
    store = BatchRecordingStore()
    gate = InstantGate(name="instant")
    gate.release.set()
    executor, ledger = make_executor(store, gate)
    executor.start()
    first, _ = await executor.submit(Submission("instant"))  # may queue: starting
    await ledger.wait(first.task_id)
    cases: tuple[tuple[dict[str, Any], TaskState, str | None], ...] = (
        ({}, TaskState.COMPLETED, None),
        ({"fail": True}, TaskState.FAILED, "asked to fail"),
        ({"crash": True}, TaskState.FAILED, "RuntimeError: boom"),
    )
    for arguments, state, message in cases:
        store.batches.clear()
        started = gate.started
        submitting = asyncio.create_task(executor.submit(Submission("instant", arguments)))
        await asyncio.sleep(0)  # one step: the submission queued its insert and ran the tool
        assert gate.started == started + 1
        assert runners() == set()
        task, deduplicated = await submitting
        assert not deduplicated
        assert task.state is state
        assert (task.error and task.error.message) == message
        assert ledger.get(task.task_id) == task
        assert store.batches == [[("insert", state)]]
    assert executor.load().in_flight == 0
    await executor.aclose(grace=0)
