"""``praxis_tasks_finished_total{tool,outcome}``: one count per task, at its
terminal state, so a success ratio is completed over the sum (unlike
``praxis_tasks_total{state}``, which counts every state a task passes)."""

from __future__ import annotations

from praxis_grpc.tasks.engine import Submission
from tests.unit.test_engine import _close_engines, make_engine  # noqa: F401 (autouse fixture)


async def test_each_task_counts_once_at_its_outcome() -> None:
    h = make_engine()
    h.engine.start()
    for arguments in ({}, {}, {"fail": True}):
        task, _ = await h.engine.submit(Submission("gate", arguments))
        await h.engine.wait(task.task_id)
    finished = h.metrics.tasks_finished_total
    assert finished.labels("gate", "completed")._value.get() == 2
    assert finished.labels("gate", "failed")._value.get() == 1
    # Every task also passed SUBMITTED and WORKING: tasks_total counts those too.
    states = h.metrics.tasks_total
    passed = sum(states.labels("gate", s)._value.get() for s in ("SUBMITTED", "WORKING"))
    assert passed == 6


async def test_a_canceled_task_counts_as_canceled() -> None:
    h = make_engine(released=False)
    h.engine.start()
    task, _ = await h.engine.submit(Submission("gate"))
    await h.engine.cancel(task.task_id)
    await h.engine.cancel(task.task_id)  # a second cancel changes nothing
    finished = h.metrics.tasks_finished_total
    assert finished.labels("gate", "canceled")._value.get() == 1
    assert finished.labels("gate", "completed")._value.get() == 0
