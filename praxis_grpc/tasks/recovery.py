"""What to do at start-up with the tasks a previous run left unfinished. Pure."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from praxis_grpc.tasks.model import Reason, Task, TaskError, TaskState


class Action(enum.Enum):
    """The fate of one unfinished task."""

    REQUEUE = "requeue"
    FAIL = "fail"
    REJECT = "reject"


@dataclass(frozen=True)
class Decision:
    """One task's fate, with the error recorded when it does not run again."""

    task: Task
    action: Action
    error: TaskError | None = None


def plan_recovery(
    unfinished: Iterable[Task], idempotent: Callable[[str], bool | None], max_attempts: int
) -> list[Decision]:
    """Decide, for each unfinished task, whether it runs again.

    Args:
        unfinished: Tasks found SUBMITTED or WORKING, oldest first.
        idempotent: For a tool name, whether the tool is idempotent, or
            ``None`` when this node no longer offers it.
        max_attempts: ``tasks.max_attempts``: how many times a task may start.

    The rules: a task whose tool is gone is rejected (never started) or
    failed. A task that already started ``max_attempts`` times (``attempt``
    counts starts on every agent it was sent to) fails as POISONED: whatever
    stopped it each time (a crash or hang of the node) would likely stop the
    node again. Otherwise a SUBMITTED task is queued again; a WORKING task may
    have had effects, so it is run again only when its tool is idempotent, and
    otherwise fails as INTERRUPTED so it is never applied twice.
    """
    decisions = []
    for task in unfinished:
        safe = idempotent(task.tool)
        started = task.state is TaskState.WORKING
        if safe is None:
            error = TaskError(
                Reason.TOOL_UNAVAILABLE, f"tool {task.tool!r} is no longer offered by this node"
            )
            decisions.append(Decision(task, Action.FAIL if started else Action.REJECT, error))
        elif task.attempt >= max_attempts:
            decisions.append(Decision(task, Action.FAIL, poisoned(task, max_attempts)))
        elif started and not safe:
            error = TaskError(
                Reason.INTERRUPTED,
                f"the node stopped while the task was running; tool {task.tool!r} "
                "is not idempotent, so it was not run again",
            )
            decisions.append(Decision(task, Action.FAIL, error))
        else:
            decisions.append(Decision(task, Action.REQUEUE))
    return decisions


def poisoned(task: Task, max_attempts: int) -> TaskError:
    """The error of a task that started ``task.attempt`` times without finishing."""
    return TaskError(
        Reason.POISONED,
        f"the task was started {task.attempt} time(s) without finishing (the node or agent "
        f"running it stopped each time); tasks.max_attempts is {max_attempts}, so it is "
        "not run again",
    )
