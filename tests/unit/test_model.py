"""The task state machine: re-dispatch and mirroring of delegated tasks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from praxis_grpc.tasks.model import InvalidTransition, Reason, Task, TaskError, TaskState

T0 = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)


def delegated(**fields: Any) -> Task:
    task = Task(
        task_id="t-1",
        tool="echo",
        arguments={"text": "hi"},
        state=TaskState.SUBMITTED,
        created_at=T0,
        updated_at=T0,
        owner_agent_id="agent-b",
        origin_agent_id="agent-a",
        idempotency_key="k",
        timeout=5.0,
        tags=("gpu",),
        preferred_agent="agent-b",
        request_fingerprint="fp",
    )
    return replace(task, **fields)


@pytest.mark.parametrize("state", [TaskState.SUBMITTED, TaskState.WORKING])
def test_reassign_hands_an_unfinished_task_to_another_agent(state: TaskState) -> None:
    task = delegated().start(T0) if state is TaskState.WORKING else delegated()

    moved = task.reassign("agent-c", T1)

    assert moved.owner_agent_id == "agent-c"
    assert (moved.state, moved.started_at, moved.updated_at) == (TaskState.SUBMITTED, None, T1)
    assert moved.attempt == task.attempt
    assert moved == replace(
        task, owner_agent_id="agent-c", state=TaskState.SUBMITTED, started_at=None, updated_at=T1
    )
    assert task.owner_agent_id == "agent-b"  # immutable


def test_reassign_refuses_a_terminal_task() -> None:
    done = delegated().start(T0).complete({"ok": True}, T1)

    with pytest.raises(InvalidTransition, match="COMPLETED task cannot be reassigned"):
        done.reassign("agent-c", T2)


def test_mirror_adopts_the_remote_lifecycle_and_keeps_identity() -> None:
    record = delegated()
    remote = replace(
        delegated(),
        tool="something-else",
        arguments={},
        owner_agent_id="agent-x",
        origin_agent_id="agent-x",
        idempotency_key="",
        created_at=T2,
        request_fingerprint="",
    )
    remote = remote.start(T1).complete({"answer": 42}, T2)

    mirrored = record.mirror(remote)

    assert mirrored.state is TaskState.COMPLETED
    assert (mirrored.result, mirrored.error) == ({"answer": 42}, None)
    assert (mirrored.started_at, mirrored.finished_at, mirrored.updated_at) == (T1, T2, T2)
    assert mirrored.attempt == 1
    assert (
        replace(
            mirrored,
            state=record.state,
            result=None,
            started_at=None,
            finished_at=None,
            updated_at=record.updated_at,
            attempt=0,
        )
        == record
    )
    assert mirrored.request_fingerprint == "fp"


def test_mirror_follows_the_owner_back_to_submitted() -> None:
    record = delegated().start(T0)
    remote = delegated().start(T0).requeue(T1)

    assert record.mirror(remote) == replace(
        record, state=TaskState.SUBMITTED, started_at=None, updated_at=T1
    )


def test_mirror_of_a_terminal_task() -> None:
    error = TaskError(Reason.CANCELED, "stop")
    canceled = delegated().finish_unsuccessfully(TaskState.CANCELED, error, T1)
    again = delegated().finish_unsuccessfully(TaskState.CANCELED, TaskError("X", "y"), T2)
    completed = delegated().start(T1).complete({}, T2)

    assert canceled.mirror(again) is canceled  # a repeated final report changes nothing
    with pytest.raises(InvalidTransition, match="CANCELED -> COMPLETED"):
        canceled.mirror(completed)
    with pytest.raises(InvalidTransition, match="CANCELED -> WORKING"):
        canceled.mirror(delegated().start(T1))


def test_mirror_refuses_another_task() -> None:
    with pytest.raises(InvalidTransition, match="t-2"):
        delegated().mirror(delegated(task_id="t-2"))
