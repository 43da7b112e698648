"""Recovery planning: which unfinished tasks run again after a restart. Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from praxis_grpc.tasks.model import Reason, Task, TaskState
from praxis_grpc.tasks.recovery import Action, plan_recovery

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOOLS = {"safe": True, "effect": False}


def task(tool: str, state: TaskState, attempt: int) -> Task:
    return Task(
        task_id=f"{tool}-{state.name}-{attempt}",
        tool=tool,
        arguments={},
        state=state,
        created_at=NOW,
        updated_at=NOW,
        attempt=attempt,
    )


def plan(*tasks: Task, max_attempts: int = 3) -> list[tuple[Action, str | None]]:
    decisions = plan_recovery(tasks, TOOLS.get, max_attempts)
    assert [d.task for d in decisions] == list(tasks)
    return [(d.action, d.error.reason if d.error else None) for d in decisions]


def test_tasks_below_the_limit_follow_the_usual_rules() -> None:
    assert plan(
        task("safe", TaskState.WORKING, 2),
        task("safe", TaskState.SUBMITTED, 2),
        task("effect", TaskState.WORKING, 1),
        task("effect", TaskState.SUBMITTED, 0),
        task("gone", TaskState.SUBMITTED, 0),
        task("gone", TaskState.WORKING, 1),
    ) == [
        (Action.REQUEUE, None),
        (Action.REQUEUE, None),
        (Action.FAIL, Reason.INTERRUPTED),
        (Action.REQUEUE, None),
        (Action.REJECT, Reason.TOOL_UNAVAILABLE),
        (Action.FAIL, Reason.TOOL_UNAVAILABLE),
    ]


@pytest.mark.parametrize("state", [TaskState.WORKING, TaskState.SUBMITTED])
@pytest.mark.parametrize("tool", ["safe", "effect"])
def test_a_task_that_reached_max_attempts_is_poisoned(tool: str, state: TaskState) -> None:
    poisoned = task(tool, state, 3)

    (decision,) = plan_recovery([poisoned], TOOLS.get, 3)

    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.reason == Reason.POISONED
    assert "started 3 time(s)" in decision.error.message
    assert "tasks.max_attempts is 3" in decision.error.message


def test_the_limit_is_configurable() -> None:
    working = task("safe", TaskState.WORKING, 1)

    assert plan(working, max_attempts=1) == [(Action.FAIL, Reason.POISONED)]
    assert plan(replace(working, attempt=4), max_attempts=5) == [(Action.REQUEUE, None)]
