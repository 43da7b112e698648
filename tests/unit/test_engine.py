"""TaskEngine against the in-memory store and in-test tools: no sockets, no disk."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine
from praxis_grpc.tasks.model import Reason, Submission, Task, TaskState
from praxis_grpc.testing import MemoryTaskStore
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
    with pytest.raises(ResourceExhausted) as info:
        await h.engine.submit(Submission("gate"))
    assert info.value.retry_after > 0
    h.gate.release.set()
    await h.engine.aclose(grace=5)


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
    h = make_engine(max_timeout=10, max_argument_bytes=1024)
    h.engine.start()
    with pytest.raises(InvalidArgument, match=r"^tool: is required"):
        await h.engine.submit(Submission(""))
    with pytest.raises(NotFound, match="unknown tool 'nope'"):
        await h.engine.submit(Submission("nope"))
    with pytest.raises(InvalidArgument, match=r"^timeout: 20s exceeds"):
        await h.engine.submit(Submission("gate", timeout=20))
    with pytest.raises(InvalidArgument, match=r"^arguments: .* exceeds the limit of 1024 bytes"):
        await h.engine.submit(Submission("gate", {"blob": "x" * 2000}))
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


def _stored(store: MemoryTaskStore, tool: str, state: TaskState) -> Task:
    now = datetime.now(UTC)
    task = Task(
        task_id=f"{tool}-{state.name}",
        tool=tool,
        arguments={},
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
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
