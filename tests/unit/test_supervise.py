"""The node's supervisor of background tasks."""

from __future__ import annotations

import asyncio

import pytest

from praxis_grpc.metrics import Metrics
from praxis_grpc.supervise import Supervisor
from tests.integration.helpers import until


class Failures:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


async def crash() -> None:
    raise RuntimeError("boom")


async def quiet() -> None:
    return None


async def test_a_crash_is_counted_and_finished_tasks_are_dropped() -> None:
    metrics, failures = Metrics(), Failures()
    supervisor = Supervisor(metrics, failures)
    for _ in range(20):
        supervisor.start("worker", crash())
        supervisor.start("worker", quiet())
    await until(lambda: len(supervisor) == 0)
    assert metrics.background_task_crashes_total.labels("worker")._value.get() == 20
    assert failures.reasons == []  # not critical: the node carries on
    await supervisor.aclose()


@pytest.mark.parametrize(
    ("work", "reason"),
    [(quiet, "the member stopped reporting"), (crash, "role-switch failed (RuntimeError('boom'))")],
)
async def test_a_critical_task_that_ends_fails_the_node(work: object, reason: str) -> None:
    metrics, failures = Metrics(), Failures()
    supervisor = Supervisor(metrics, failures)
    assert callable(work)
    supervisor.start("role-switch", work(), critical=True, reason="the member stopped reporting")
    await until(lambda: failures.reasons == [reason])
    await supervisor.aclose()


async def test_close_cancels_quietly_even_critical_tasks() -> None:
    metrics, failures = Metrics(), Failures()
    supervisor = Supervisor(metrics, failures)
    supervisor.start("role-switch", asyncio.Event().wait(), critical=True)  # type: ignore[arg-type]
    supervisor.start("heartbeat", asyncio.Event().wait())  # type: ignore[arg-type]
    assert len(supervisor) == 2
    await supervisor.aclose()
    assert len(supervisor) == 0
    assert failures.reasons == []
    assert metrics.background_task_crashes_total.labels("role-switch")._value.get() == 0
