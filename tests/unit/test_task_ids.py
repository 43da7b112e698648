"""Task ids are canonical UUIDs that sort in the order they were made (so the
store appends new tasks instead of inserting them at random places)."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.admission import check_task_id
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine
from praxis_grpc.tasks.ids import new_task_id
from praxis_grpc.tasks.model import Submission
from praxis_grpc.testing import MemoryTaskStore, ReturningTool
from praxis_grpc.tools.registry import ToolRegistry


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each id is made one millisecond after the previous one."""
    ticks = itertools.count(1_765_000_000_000)
    monkeypatch.setattr(time, "time_ns", lambda: next(ticks) * 1_000_000)


def test_an_id_is_a_canonical_version_7_uuid() -> None:
    made = [new_task_id() for _ in range(1000)]
    for task_id in made:
        check_task_id(task_id)
        parsed = uuid.UUID(task_id)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert len(set(made)) == len(made)


@pytest.mark.usefixtures("ticking_clock")
def test_ids_made_later_sort_later() -> None:
    made = [new_task_id() for _ in range(50)]
    assert made == sorted(made)


@pytest.mark.usefixtures("ticking_clock")
async def test_the_engine_issues_time_ordered_ids() -> None:
    engine = TaskEngine(
        store=MemoryTaskStore(),
        tools=ToolRegistry([ReturningTool(dict)]),
        limits=EngineLimits(),
        metrics=Metrics(),
        agent_id="agent-a",
        agent_tags=frozenset(),
    )
    engine.start()
    issued = []
    try:
        for _ in range(10):
            issued.append(engine.new_task_id())
            task, _ = await engine.submit(Submission("returns"))
            issued.append(task.task_id)
    finally:
        await engine.aclose(grace=0)
    assert issued == sorted(issued)
