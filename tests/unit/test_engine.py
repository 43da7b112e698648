"""TaskEngine against the in-memory store and in-test tools: no sockets, no disk."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from praxis_grpc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ToolError,
)
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.engine import EngineLimits, EngineLoad, TaskEngine
from praxis_grpc.tasks.journal import GroupCommit
from praxis_grpc.tasks.model import Reason, Submission, Task, TaskError, TaskState
from praxis_grpc.testing import MemoryTaskStore, ReturningTool
from praxis_grpc.tools.base import JSON, ToolSpec
from praxis_grpc.tools.registry import ToolRegistry


@dataclass
class GateTool:
    """Blocks every run until ``release`` is set; counts runs and cancellations."""

    name: str = "gate"
    idempotent: bool = True
    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: int = 0
    cancelled: int = 0

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.name,
            description="waits for the test",
            input_schema={"type": "object"},
            idempotent=self.idempotent,
        )

    async def run(self, arguments: JSON) -> JSON:
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if arguments.get("fail"):
            raise ToolError("asked to fail")
        if arguments.get("crash"):
            raise RuntimeError("boom")
        return {"ok": True, "args": arguments}


@dataclass
class Harness:
    engine: TaskEngine
    store: MemoryTaskStore
    gate: GateTool
    once: GateTool
    metrics: Metrics


# Engines a test made; each is closed before the test's event loop.
_engines: list[TaskEngine] = []


@pytest.fixture(autouse=True)
async def _close_engines() -> AsyncIterator[None]:
    # A started engine that nobody closes leaves tasks pending for the garbage
    # collector to destroy during a later test.
    yield
    while _engines:
        await _engines.pop().aclose(grace=0)


def make_engine(
    store: MemoryTaskStore | None = None, released: bool = True, **limits: Any
) -> Harness:
    gate = GateTool()
    once = GateTool(name="once", idempotent=False)
    if released:
        gate.release.set()
        once.release.set()
    store = store or MemoryTaskStore()
    metrics = Metrics()
    engine = TaskEngine(
        store=store,
        tools=ToolRegistry([gate, once]),
        limits=EngineLimits(**limits),
        metrics=metrics,
        agent_id="agent-a",
        agent_tags=frozenset({"general"}),
    )
    _engines.append(engine)
    return Harness(engine, store, gate, once, metrics)


async def test_submit_runs_to_completion() -> None:
    h = make_engine()
    h.engine.start()
    task, dedup = await h.engine.submit(Submission("gate", {"x": 1}))
    assert not dedup
    assert task.state is TaskState.SUBMITTED
    assert h.store.get(task.task_id) is not None  # durable before submit returned
    done = await h.engine.wait(task.task_id)
    assert done.state is TaskState.COMPLETED
    assert done.result == {"ok": True, "args": {"x": 1}}
    assert done.attempt == 1
    assert done.owner_agent_id == "agent-a"
    assert h.metrics.tasks_total.labels("gate", "COMPLETED")._value.get() == 1


async def test_idempotency_key_returns_first_task_and_runs_once() -> None:
    h = make_engine()
    h.engine.start()
    first, _ = await h.engine.submit(Submission("gate", {"x": 1}, idempotency_key="k1"))
    await h.engine.wait(first.task_id)
    second, dedup = await h.engine.submit(Submission("gate", {"x": 1}, idempotency_key="k1"))
    assert dedup
    assert second.task_id == first.task_id
    assert h.gate.started == 1
    with pytest.raises(AlreadyExists, match="idempotency_key 'k1'"):
        await h.engine.submit(Submission("gate", {"x": 2}, idempotency_key="k1"))


async def test_queue_full_is_resource_exhausted_with_retry_hint() -> None:
    h = make_engine(released=False, max_concurrency=1, queue_limit=2)
    h.engine.start()
    for _ in range(3):  # one running, two queued
        await h.engine.submit(Submission("gate"))
    await asyncio.sleep(0)
    assert h.engine.load().in_flight == 1
    assert h.engine.load().queued == 2
    scraped = h.metrics.registry.get_sample_value
    assert scraped("praxis_tasks_in_flight") == 1
    assert scraped("praxis_task_queue_depth") == 2
    with pytest.raises(ResourceExhausted) as info:
        await h.engine.submit(Submission("gate"))
    assert info.value.retry_after > 0
    h.gate.release.set()
    await h.engine.aclose(grace=5)
    assert scraped("praxis_tasks_in_flight") == scraped("praxis_task_queue_depth") == 0


async def test_concurrency_limit_is_respected() -> None:
    h = make_engine(released=False, max_concurrency=2)
    h.engine.start()
    tasks = [(await h.engine.submit(Submission("gate")))[0] for _ in range(5)]
    await asyncio.sleep(0.01)
    assert h.gate.started == 2
    assert h.engine.load().queued == 3
    h.gate.release.set()
    results = [await h.engine.wait(t.task_id) for t in tasks]
    assert all(t.state is TaskState.COMPLETED for t in results)
    assert h.gate.started == 5


async def test_timeout_fails_with_deadline_reason() -> None:
    h = make_engine(released=False)
    h.engine.start()
    task, _ = await h.engine.submit(Submission("gate", timeout=0.05))
    done = await h.engine.wait(task.task_id)
    assert done.state is TaskState.FAILED
    assert done.error is not None
    assert done.error.reason == Reason.DEADLINE_EXCEEDED
    assert h.gate.cancelled == 1


async def test_cancel_queued_and_running() -> None:
    h = make_engine(released=False, max_concurrency=1)
    h.engine.start()
    running, _ = await h.engine.submit(Submission("gate"))
    queued, _ = await h.engine.submit(Submission("gate"))
    await asyncio.sleep(0)
    canceled = await h.engine.cancel(queued.task_id, "not needed")
    assert canceled.state is TaskState.CANCELED
    assert canceled.error is not None
    assert canceled.error.message == "not needed"
    canceled = await h.engine.cancel(running.task_id)
    assert canceled.state is TaskState.CANCELED
    assert h.gate.cancelled == 1
    assert h.gate.started == 1  # the queued one never ran
    again = await h.engine.cancel(running.task_id)
    assert again == canceled


async def test_tool_error_and_crash_are_failed() -> None:
    h = make_engine()
    h.engine.start()
    failed, _ = await h.engine.submit(Submission("gate", {"fail": True}))
    crashed, _ = await h.engine.submit(Submission("gate", {"crash": True}))
    failed = await h.engine.wait(failed.task_id)
    crashed = await h.engine.wait(crashed.task_id)
    assert failed.error is not None
    assert (failed.state, failed.error.reason) == (TaskState.FAILED, Reason.TOOL_ERROR)
    assert crashed.error is not None
    assert (crashed.state, crashed.error.reason) == (TaskState.FAILED, Reason.INTERNAL)
    assert "boom" in crashed.error.message


async def test_watch_streams_every_state() -> None:
    h = make_engine(released=False, max_concurrency=1)
    h.engine.start()
    await h.engine.submit(Submission("gate"))  # occupies the only slot
    task, _ = await h.engine.submit(Submission("gate"))
    seen: list[TaskState] = []

    async def watch() -> None:
        async for state in h.engine.watch(task.task_id):
            seen.append(state.state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.01)
    h.gate.release.set()
    await asyncio.wait_for(watcher, 5)
    assert seen == [TaskState.SUBMITTED, TaskState.WORKING, TaskState.COMPLETED]


async def test_validation_errors_name_the_field() -> None:
    h = make_engine(max_timeout=10)
    h.engine.start()
    with pytest.raises(InvalidArgument, match=r"^tool: is required"):
        await h.engine.submit(Submission(""))
    # The node cannot run a tool it does not offer: no capable agent (README).
    with pytest.raises(FailedPrecondition, match="unknown tool 'nope'"):
        await h.engine.submit(Submission("nope"))
    with pytest.raises(InvalidArgument, match=r"^timeout: 20s exceeds"):
        await h.engine.submit(Submission("gate", timeout=20))
    with pytest.raises(FailedPrecondition, match=r"tags \['gpu'\]"):
        await h.engine.submit(Submission("gate", tags=("gpu",)))
    with pytest.raises(NotFound):
        h.engine.get("missing")


async def test_draining_refuses_new_tasks_but_honours_retries() -> None:
    h = make_engine()
    h.engine.start()
    task, _ = await h.engine.submit(Submission("gate", idempotency_key="k"))
    h.engine.set_accepting(False)
    with pytest.raises(FailedPrecondition, match="draining"):
        await h.engine.submit(Submission("gate"))
    retried, dedup = await h.engine.submit(Submission("gate", idempotency_key="k"))
    assert dedup
    assert retried.task_id == task.task_id


def _stored(store: MemoryTaskStore, tool: str, state: TaskState, owner: str = "agent-a") -> Task:
    now = datetime.now(UTC)
    task = Task(
        task_id=f"{tool}-{state.name}-{owner}",
        tool=tool,
        arguments={},
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
        owner_agent_id=owner,
        origin_agent_id="agent-a",
        timeout=5,
    )
    if state is TaskState.WORKING:
        task = task.start(now)
    store.insert(task)
    return task


async def test_recovery_requeues_idempotent_and_fails_the_rest() -> None:
    store = MemoryTaskStore()
    queued = _stored(store, "once", TaskState.SUBMITTED)
    rerun = _stored(store, "gate", TaskState.WORKING)
    interrupted = _stored(store, "once", TaskState.WORKING)
    orphan = _stored(store, "removed", TaskState.SUBMITTED)
    h = make_engine(store)
    report = h.engine.start()
    assert set(report.requeued) == {queued.task_id, rerun.task_id}
    assert report.failed == (interrupted.task_id,)
    assert report.rejected == (orphan.task_id,)
    assert (await h.engine.wait(queued.task_id)).state is TaskState.COMPLETED
    done = await h.engine.wait(rerun.task_id)
    assert (done.state, done.attempt) == (TaskState.COMPLETED, 2)
    failed = h.engine.get(interrupted.task_id)
    assert failed.error is not None
    assert (failed.state, failed.error.reason) == (TaskState.FAILED, Reason.INTERRUPTED)
    assert h.engine.get(orphan.task_id).state is TaskState.REJECTED
    assert h.once.started == 1  # only the never-started one ran


async def test_recovery_fails_a_task_started_max_attempts_times_as_poisoned() -> None:
    store = MemoryTaskStore()
    now = datetime.now(UTC)
    crashed_thrice = _stored(store, "gate", TaskState.WORKING)
    for _ in range(2):  # two more starts, each lost with the node
        crashed_thrice = crashed_thrice.requeue(now).start(now)
        store.update(crashed_thrice)
    # Re-dispatched here after two starts elsewhere (prior_attempts=2).
    twice = replace(_stored(store, "once", TaskState.SUBMITTED), attempt=2)
    store.update(twice)
    h = make_engine(store, max_attempts=3)

    report = h.engine.start()

    assert report.failed == (crashed_thrice.task_id,)
    assert report.requeued == (twice.task_id,)
    poisoned = h.engine.get(crashed_thrice.task_id)
    assert poisoned.error is not None
    assert (poisoned.state, poisoned.error.reason) == (TaskState.FAILED, Reason.POISONED)
    assert "started 3 time(s)" in poisoned.error.message
    assert h.gate.started == 0
    done = await h.engine.wait(twice.task_id)
    assert (done.state, done.attempt) == (TaskState.COMPLETED, 3)


async def test_a_re_dispatched_task_counts_on_from_its_prior_attempts() -> None:
    h = make_engine()
    h.engine.start()

    task, _ = await h.engine.submit(Submission("gate"), task_id=new_id(), prior_attempts=2)

    assert task.attempt == 2
    assert (await h.engine.wait(task.task_id)).attempt == 3


async def test_close_hands_back_idempotent_and_fails_side_effecting_tasks() -> None:
    h = make_engine(released=False, max_concurrency=4)
    h.engine.start()
    idem, _ = await h.engine.submit(Submission("gate"))
    side, _ = await h.engine.submit(Submission("once"))
    await asyncio.sleep(0.01)
    await h.engine.aclose(grace=0.01)
    assert h.store.get(idem.task_id).state is TaskState.SUBMITTED  # type: ignore[union-attr]
    failed = h.store.get(side.task_id)
    assert failed is not None
    assert failed.error is not None
    assert (failed.state, failed.error.reason) == (TaskState.FAILED, Reason.INTERRUPTED)


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the event loop run until ``condition()`` holds, or fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def new_id() -> str:
    return str(uuid.uuid4())


def foreign(task_id: str = "", **fields: Any) -> Task:
    """The record an entry node ("agent-a") keeps of a task it delegated to agent-b."""
    now = datetime.now(UTC)
    task = Task(
        task_id=task_id or new_id(),
        tool="gate",
        arguments={"x": 1},
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
        owner_agent_id="agent-b",
        origin_agent_id="agent-a",
        timeout=5.0,
    )
    return replace(task, **fields)


async def test_an_adopted_task_keeps_its_timeout_across_a_restart() -> None:
    store = MemoryTaskStore()
    first = make_engine(store, released=False)
    first.engine.start()
    record = foreign(timeout=0.0)  # recorded without a client timeout
    await first.engine.record(record)
    adopted = await first.engine.adopt(record)
    assert adopted.timeout == EngineLimits().default_timeout
    await until_started(first.gate)
    # The process dies here; the next one recovers the task from the store.
    stored = store.get(record.task_id)
    assert stored is not None
    assert stored.timeout == EngineLimits().default_timeout
    second = make_engine(store)
    report = second.engine.start()
    assert report.requeued == (record.task_id,)
    done = await second.engine.wait(record.task_id)
    assert (done.state, done.error) == (TaskState.COMPLETED, None)
    assert done.timeout == EngineLimits().default_timeout


async def test_a_stored_task_without_a_timeout_runs_with_the_default() -> None:
    # An older version's store kept adopted tasks with a timeout of 0 s.
    store = MemoryTaskStore()
    lost = dataclasses.replace(_stored(store, "gate", TaskState.SUBMITTED), timeout=0.0)
    store.update(lost)
    h = make_engine(store)
    h.engine.start()
    done = await h.engine.wait(lost.task_id)
    assert (done.state, done.error) == (TaskState.COMPLETED, None)
    assert done.timeout == EngineLimits().default_timeout


async def until_started(tool: GateTool) -> None:
    async with asyncio.timeout(5):
        while not tool.started:
            await asyncio.sleep(0.01)


async def test_task_id_is_kept_and_deduplicates() -> None:
    h = make_engine()
    h.engine.start()
    task_id = new_id()
    task, dedup = await h.engine.submit(
        Submission("gate", {"x": 1}), task_id=task_id, origin_agent_id="agent-entry"
    )
    assert not dedup
    assert (task.task_id, task.owner_agent_id, task.origin_agent_id) == (
        task_id,
        "agent-a",
        "agent-entry",
    )
    done = await h.engine.wait(task_id)
    again, dedup = await h.engine.submit(
        Submission("gate", {"x": 1}), task_id=task_id, origin_agent_id="agent-entry"
    )
    assert dedup
    assert again == done
    assert h.gate.started == 1
    with pytest.raises(AlreadyExists, match=f"task_id '{task_id}' was already used"):
        await h.engine.submit(Submission("gate", {"x": 2}), task_id=task_id)


async def test_task_id_reattaches_on_a_draining_or_full_node() -> None:
    h = make_engine(released=False, max_concurrency=1, queue_limit=1)
    h.engine.start()
    task_id = new_id()
    first, _ = await h.engine.submit(Submission("gate"), task_id=task_id)
    await h.engine.submit(Submission("gate"))  # the queue is now full
    with pytest.raises(ResourceExhausted):
        await h.engine.submit(Submission("gate"))
    again, dedup = await h.engine.submit(Submission("gate"), task_id=task_id)
    assert dedup
    assert again.task_id == first.task_id
    h.engine.set_accepting(False)
    again, dedup = await h.engine.submit(Submission("gate"), task_id=task_id)
    assert dedup
    assert again.task_id == first.task_id
    h.gate.release.set()
    await h.engine.aclose(grace=5)


async def test_concurrent_submissions_of_one_task_id_run_it_once() -> None:
    h = make_engine()
    h.engine.start()
    task_id = new_id()
    results = await asyncio.gather(
        *(h.engine.submit(Submission("gate", {"x": 1}), task_id=task_id) for _ in range(3))
    )
    assert sorted(dedup for _, dedup in results) == [False, True, True]
    assert {task.task_id for task, _ in results} == {task_id}
    await h.engine.wait(task_id)
    assert h.gate.started == 1
    assert h.store.count_by_state()[TaskState.COMPLETED] == 1


async def test_concurrent_conflicting_submissions_of_one_task_id() -> None:
    h = make_engine()
    h.engine.start()
    task_id = new_id()
    results = await asyncio.gather(
        h.engine.submit(Submission("gate", {"x": 1}), task_id=task_id),
        h.engine.submit(Submission("gate", {"x": 2}), task_id=task_id),
        return_exceptions=True,
    )
    first, conflict = results
    assert isinstance(first, tuple)
    assert (first[0].task_id, first[1]) == (task_id, False)
    assert isinstance(conflict, AlreadyExists)
    assert task_id in str(conflict)


@pytest.mark.parametrize(
    "task_id",
    [
        "",
        "task-1",
        # Fixed values: the ids of parametrised tests must be the same in every
        # collection (pytest-xdist's workers each collect and compare).
        "3F2B8C1E-5D4A-4F6B-9C7D-2E1A0B9C8D7E",
        "3f2b8c1e5d4a4f6b9c7d2e1a0b9c8d7e",
        "{3f2b8c1e-5d4a-4f6b-9c7d-2e1a0b9c8d7e}",
        "urn:uuid:3f2b8c1e-5d4a-4f6b-9c7d-2e1a0b9c8d7e",
    ],
)
async def test_task_id_must_be_a_canonical_uuid(task_id: str) -> None:
    h = make_engine()
    h.engine.start()
    with pytest.raises(InvalidArgument, match=r"^task_id: .*must be a UUID"):
        await h.engine.submit(Submission("gate"), task_id=task_id)
    assert h.store.count_by_state() == dict.fromkeys(TaskState, 0)


async def test_idempotency_keys_are_scoped_by_origin() -> None:
    h = make_engine()
    h.engine.start()
    mine, _ = await h.engine.submit(Submission("gate", idempotency_key="k"))
    theirs, dedup = await h.engine.submit(
        Submission("gate", idempotency_key="k"), origin_agent_id="agent-b"
    )
    assert not dedup
    assert theirs.task_id != mine.task_id
    assert (mine.origin_agent_id, theirs.origin_agent_id) == ("agent-a", "agent-b")
    retried, dedup = await h.engine.submit(
        Submission("gate", idempotency_key="k"), origin_agent_id="agent-b"
    )
    assert dedup
    assert retried.task_id == theirs.task_id
    explicit, dedup = await h.engine.submit(
        Submission("gate", idempotency_key="k"), origin_agent_id="agent-a"
    )
    assert dedup
    assert explicit.task_id == mine.task_id
    with pytest.raises(AlreadyExists, match="idempotency_key 'k'"):
        await h.engine.submit(Submission("gate", {"y": 1}, idempotency_key="k"))


async def test_recovery_leaves_foreign_records_alone() -> None:
    store = MemoryTaskStore()
    local = _stored(store, "once", TaskState.WORKING)
    delegated = [
        _stored(store, "gate", TaskState.SUBMITTED, owner="agent-b"),
        _stored(store, "once", TaskState.WORKING, owner="agent-b"),
        _stored(store, "removed", TaskState.SUBMITTED, owner="agent-c"),
    ]
    done = foreign(state=TaskState.COMPLETED)
    store.insert(done)
    h = make_engine(store)

    report = h.engine.start()

    assert report.failed == (local.task_id,)
    assert report.requeued == report.rejected == ()
    for record in delegated:
        assert store.get(record.task_id) == record
        assert h.engine.get(record.task_id) == record
    assert h.engine.foreign_unfinished() == delegated
    assert h.engine.load() == EngineLoad(0, 0, 8, 1000)
    await asyncio.sleep(0.01)
    assert h.gate.started == h.once.started == 0


async def test_record_watch_and_wait_a_foreign_task() -> None:
    h = make_engine()
    h.engine.start()
    record = foreign()

    assert await h.engine.record(record) is record

    assert h.store.get(record.task_id) == record
    assert h.engine.get(record.task_id) == record
    assert h.engine.foreign_unfinished() == [record]
    seen: list[Task] = []

    async def watch() -> None:
        async for task in h.engine.watch(record.task_id):
            seen.append(task)

    watcher = asyncio.create_task(watch())
    waiter = asyncio.create_task(h.engine.wait(record.task_id))
    await until(lambda: seen)
    now = datetime.now(UTC)
    working = record.mirror(record.start(now))
    assert await h.engine.record(working) is working
    assert h.engine.get(record.task_id) == working
    done = working.mirror(working.complete({"ok": True}, now + timedelta(seconds=1)))
    await h.engine.record(done)

    assert await asyncio.wait_for(waiter, 5) == done
    await asyncio.wait_for(watcher, 5)
    assert seen == [record, working, done]
    assert h.store.get(record.task_id) == done
    assert h.engine.get(record.task_id) == done
    assert h.engine.foreign_unfinished() == []
    assert await h.engine.wait(record.task_id) == done
    # The record never ran here and is not counted as this node's work.
    assert h.gate.started == 0
    assert h.engine.load() == EngineLoad(0, 0, 8, 1000)
    assert h.metrics.tasks_total.labels("gate", "COMPLETED")._value.get() == 0


async def test_record_persists_a_reassignment() -> None:
    h = make_engine()
    h.engine.start()
    record = await h.engine.record(foreign())

    moved = await h.engine.record(record.reassign("agent-c", datetime.now(UTC)))

    assert h.store.get(record.task_id) == moved
    assert h.engine.get(record.task_id).owner_agent_id == "agent-c"


async def test_concurrent_records_of_a_new_task_keep_the_last() -> None:
    h = make_engine()
    h.engine.start()
    record = foreign()
    working = record.start(datetime.now(UTC))

    results = await asyncio.gather(h.engine.record(record), h.engine.record(working))

    assert list(results) == [record, working]
    assert h.store.get(record.task_id) == working
    assert h.engine.get(record.task_id) == working


async def test_record_deduplicates_by_key_and_origin() -> None:
    h = make_engine()
    h.engine.start()
    submission = Submission("gate", {"x": 1}, idempotency_key="k")
    local, _ = await h.engine.submit(submission)
    same = foreign(idempotency_key="k", request_fingerprint=submission.fingerprint())

    assert (await h.engine.record(same)).task_id == local.task_id
    assert h.store.get(same.task_id) is None

    conflicting = foreign(idempotency_key="k", request_fingerprint="other")
    with pytest.raises(AlreadyExists, match="idempotency_key 'k'"):
        await h.engine.record(conflicting)
    assert h.store.get(conflicting.task_id) is None

    elsewhere = foreign(idempotency_key="k", origin_agent_id="agent-z")
    assert await h.engine.record(elsewhere) is elsewhere


async def test_forget_removes_a_foreign_record() -> None:
    h = make_engine()
    h.engine.start()
    record = await h.engine.record(foreign())
    waiter = asyncio.create_task(h.engine.wait(record.task_id))
    seen: list[Task] = []

    async def watch() -> None:
        async for task in h.engine.watch(record.task_id):
            seen.append(task)

    watcher = asyncio.create_task(watch())
    await until(lambda: seen)

    await h.engine.forget(record)

    assert h.store.get(record.task_id) is None
    with pytest.raises(NotFound):
        h.engine.get(record.task_id)
    with pytest.raises(NotFound):
        await asyncio.wait_for(waiter, 5)
    with pytest.raises(NotFound):
        await asyncio.wait_for(watcher, 5)
    assert h.engine.foreign_unfinished() == []
    await h.engine.forget(record)  # already gone: nothing to do


async def test_foreign_records_refuse_local_tasks_and_cancel() -> None:
    h = make_engine()
    h.engine.start()
    local, _ = await h.engine.submit(Submission("gate"))
    with pytest.raises(ValueError, match="owned by this agent"):
        await h.engine.record(replace(local, state=TaskState.WORKING))
    with pytest.raises(ValueError, match="is a local task"):
        await h.engine.record(replace(local, owner_agent_id="agent-b"))
    with pytest.raises(ValueError, match="is a local task"):
        await h.engine.forget(replace(local, owner_agent_id="agent-b"))
    record = await h.engine.record(foreign())
    with pytest.raises(FailedPrecondition, match="runs on agent agent-b"):
        await h.engine.cancel(record.task_id)
    canceled = record.finish_unsuccessfully(
        TaskState.CANCELED, TaskError(Reason.CANCELED, "by the owner"), datetime.now(UTC)
    )
    await h.engine.record(canceled)
    assert await h.engine.cancel(record.task_id) == canceled  # terminal: unchanged


async def test_engine_shares_its_journal_and_names_its_agent() -> None:
    store = MemoryTaskStore()
    journal = GroupCommit(store)
    engine = TaskEngine(
        store=store,
        tools=ToolRegistry([GateTool()]),
        limits=EngineLimits(),
        metrics=Metrics(),
        agent_id="agent-a",
        journal=journal,
    )
    assert engine.journal is journal
    assert engine.agent_id == "agent-a"
    h = make_engine()
    assert h.engine.journal.store is h.store
    with pytest.raises(ValueError, match="journal"):
        TaskEngine(
            store=MemoryTaskStore(),
            tools=ToolRegistry([GateTool()]),
            limits=EngineLimits(),
            metrics=Metrics(),
            agent_id="agent-a",
            journal=journal,
        )


class CountingStore(MemoryTaskStore):
    """Counts lookups by task id."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, task_id: str) -> Task | None:
        self.gets += 1
        return super().get(task_id)


async def test_a_new_task_id_is_recorded_without_a_store_lookup() -> None:
    store = CountingStore()
    h = make_engine(store)
    h.engine.start()
    record = foreign(h.engine.new_task_id())
    assert await h.engine.record(record) == record
    assert store.gets == 0
    assert h.engine.get(record.task_id) == record
    # Once a task is stored under an issued id, the lookup protects it again.
    local, _ = await h.engine.submit(Submission("gate"), task_id=h.engine.new_task_id())
    await h.engine.wait(local.task_id)
    with pytest.raises(ValueError, match="local task"):
        await h.engine.record(foreign(local.task_id))


async def test_a_submission_under_an_unknown_id_is_settled_by_its_insert() -> None:
    store = CountingStore()
    h = make_engine(store)
    h.engine.start()
    task_id = new_id()
    task, dedup = await h.engine.submit(Submission("gate"), task_id=task_id)
    assert (task.task_id, dedup) == (task_id, False)
    assert store.gets == 0
    done = await h.engine.wait(task_id)
    again, dedup = await h.engine.submit(Submission("gate"), task_id=task_id)
    assert (again, dedup) == (done, True)
    assert h.gate.started == 1


@pytest.mark.parametrize("restarted", [False, True])
async def test_a_task_dispatched_here_runs_although_a_record_of_it_was_kept(
    restarted: bool,
) -> None:
    # agent-a kept a record of a task it once routed (it coordinated); now the
    # cluster dispatches that task to agent-a: it must run it, not answer with
    # the record (nobody would run it then).
    h = make_engine()
    h.engine.start()
    record = await h.engine.record(foreign(owner_agent_id="", origin_agent_id="coordinator"))
    done_elsewhere = await h.engine.record(foreign(state=TaskState.COMPLETED, result={"r": 1}))
    if restarted:
        await h.engine.aclose(grace=0)
        h = make_engine(h.store)
        h.engine.start()
    # Only an (admitted) dispatch adopts: anything else is answered with the record.
    kept, dedup = await h.engine.submit(
        Submission("gate", {"x": 1}), task_id=record.task_id, origin_agent_id="coordinator"
    )
    assert dedup
    assert kept == record
    task, dedup = await h.engine.submit(
        Submission("gate", {"x": 1}),
        task_id=record.task_id,
        origin_agent_id="coordinator",
        dispatched=True,
    )
    assert not dedup
    assert (task.task_id, task.owner_agent_id) == (record.task_id, "agent-a")
    assert (await h.engine.wait(record.task_id)).state is TaskState.COMPLETED
    assert h.gate.started == 1
    # A finished record is the answer: the task ran elsewhere.
    again, dedup = await h.engine.submit(
        Submission("gate", {"x": 1}),
        task_id=done_elsewhere.task_id,
        origin_agent_id="agent-a",
        dispatched=True,
    )
    assert dedup
    assert again.state is TaskState.COMPLETED
    assert h.gate.started == 1


def _returning_engine(store: MemoryTaskStore | None = None, **limits: Any) -> TaskEngine:
    def make(arguments: JSON) -> Any:
        return {"huge": {"n": 2**1100}, "big": {"blob": "x" * 2000}}.get(arguments["kind"], {})

    engine = TaskEngine(
        store=store or MemoryTaskStore(),
        tools=ToolRegistry([ReturningTool(make)]),
        limits=EngineLimits(**limits),
        metrics=Metrics(),
        agent_id="agent-a",
    )
    _engines.append(engine)
    return engine


@pytest.mark.parametrize(
    ("kind", "reason", "detail"),
    [
        ("huge", Reason.RESULT_INVALID, "result.n: integer is too large for a JSON number"),
        ("big", Reason.RESULT_TOO_LARGE, "limit is 1024 bytes (tasks.max_result_bytes)"),
    ],
)
async def test_a_result_that_cannot_be_stored_fails_the_task(
    kind: str, reason: str, detail: str
) -> None:
    store = MemoryTaskStore()
    engine = _returning_engine(store, max_result_bytes=1024)
    engine.start()
    task, _ = await engine.submit(Submission("returns", {"kind": kind}))
    done = await engine.wait(task.task_id)
    assert done.state is TaskState.FAILED
    assert done.result is None
    assert done.error is not None
    assert done.error.reason == reason
    assert detail in done.error.message
    assert store.get(task.task_id) == done


async def test_recovery_fails_a_task_whose_stored_arguments_are_damaged() -> None:
    store = MemoryTaskStore()
    now = datetime.now(UTC)
    damaged = Task(
        task_id=new_id(),
        tool="returns",
        arguments={},  # the placeholder a store returns for an unreadable column
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
        owner_agent_id="agent-a",
        timeout=5,
        unreadable=("arguments: the stored value is not valid JSON (x)",),
    )
    store.insert(damaged)
    engine = _returning_engine(store)
    report = engine.start()
    assert report.failed == (damaged.task_id,)
    assert report.requeued == ()
    failed = engine.get(damaged.task_id)
    assert failed.state is TaskState.FAILED
    assert failed.attempt == 0
    assert failed.error is not None
    assert failed.error.reason == Reason.STORED_VALUE_UNREADABLE
    assert "arguments: the stored value is not valid JSON" in failed.error.message
