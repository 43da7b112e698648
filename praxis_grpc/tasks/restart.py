"""Taking up this agent's tasks a previous run left unfinished.

:func:`recover` applies :func:`~praxis_grpc.tasks.recovery.plan_recovery`
(pure) through the ledger: a task to run again is requeued (WORKING goes
back to SUBMITTED, committed), one that must not is failed or rejected
(committed), and a damaged one was already failed by
:meth:`~praxis_grpc.tasks.ledger.Ledger.recover`. Called once, by
:meth:`~praxis_grpc.tasks.executor.LocalExecutor.start`, before any other
write; synchronous, as the store is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from praxis_grpc.tasks.ledger import Clock, Ledger
from praxis_grpc.tasks.model import Task, TaskState
from praxis_grpc.tasks.recovery import Action, plan_recovery

log = logging.getLogger(__name__)

__all__ = ["RecoveryReport", "recover"]


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`LocalExecutor.start` did with the tasks a previous run left."""

    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()


def recover(
    ledger: Ledger,
    idempotent: Callable[[str], bool | None],
    max_attempts: int,
    clock: Clock,
) -> tuple[RecoveryReport, list[Task]]:
    """Decide and commit the fate of every unfinished local task.

    Args:
        idempotent: Whether a tool is idempotent (None: not offered here).
        max_attempts: A task that started this often is poisoned (FAILED).

    Returns:
        The report, and the tasks to run again, oldest first, as committed.

    Raises:
        TaskStoreError: a write failed.
    """
    local, damaged = ledger.recover()
    outcome: dict[Action, list[str]] = {action: [] for action in Action}
    outcome[Action.FAIL].extend(damaged)
    requeued: list[Task] = []
    now = clock()
    for decision in plan_recovery(local, idempotent, max_attempts):
        task = decision.task
        if decision.action is Action.REQUEUE:
            if task.state is TaskState.WORKING:
                task = ledger.write_now(task.requeue(now))
            requeued.append(task)
        else:
            assert decision.error is not None
            state = TaskState.FAILED if decision.action is Action.FAIL else TaskState.REJECTED
            ledger.write_now(task.finish_unsuccessfully(state, decision.error, now))
        outcome[decision.action].append(task.task_id)
    report = RecoveryReport(*(tuple(outcome[a]) for a in Action))
    if any(outcome.values()):
        log.info(
            "recovered tasks: %d requeued, %d failed, %d rejected",
            len(report.requeued),
            len(report.failed),
            len(report.rejected),
        )
    return report, requeued
