"""An in-memory :class:`~praxis_grpc.tasks.store.TaskStore` for tests."""

from __future__ import annotations

import builtins
import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from praxis_grpc.tasks.model import Task, TaskState
from praxis_grpc.tasks.store import (
    UNFINISHED_STATES,
    Cursor,
    DuplicateTask,
    TaskStoreError,
    UnknownTask,
    Write,
    WriteResult,
)

__all__ = ["MemoryTaskStore"]


class MemoryTaskStore:
    """A :class:`~praxis_grpc.tasks.store.TaskStore` that keeps tasks in a dict.

    It has the semantics of :class:`~praxis_grpc.tasks.store.SqliteTaskStore`
    without the disk: tasks are stored and returned as copies whose
    ``arguments`` and ``result`` went through JSON and whose timestamps are
    UTC, naive timestamps raise ``ValueError``, and nothing survives the
    object. Like the real store it is not thread-safe.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Task] | None = {}

    def apply(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        self._open()
        results: builtins.list[WriteResult] = []
        for write in writes:
            try:
                if write.kind == "insert":
                    results.append(self.insert(write.task))
                elif write.kind == "update":
                    self.update(write.task)
                    results.append(None)
                else:
                    self._delete(write.task.task_id)
                    results.append(None)
            except TaskStoreError as exc:
                results.append(exc)
        return results

    def insert(self, task: Task) -> Task:
        tasks = self._open()
        stored = _copy(task)
        if task.idempotency_key:
            holder = self._holder(task.idempotency_key, task.origin_agent_id)
            if holder is not None:
                return _copy(holder)
        if task.task_id in tasks:
            raise DuplicateTask(task.task_id)
        tasks[task.task_id] = stored
        return task

    def update(self, task: Task) -> None:
        tasks = self._open()
        current = tasks.get(task.task_id)
        if current is None:
            raise UnknownTask(task.task_id)
        stored = _copy(task)
        tasks[task.task_id] = replace(
            current,
            state=stored.state,
            updated_at=stored.updated_at,
            result=stored.result,
            error=stored.error,
            started_at=stored.started_at,
            finished_at=stored.finished_at,
            attempt=stored.attempt,
            owner_agent_id=stored.owner_agent_id,
            timeout=stored.timeout,
        )

    def get(self, task_id: str) -> Task | None:
        task = self._open().get(task_id)
        return None if task is None else _copy(task)

    def list(
        self,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        after: Cursor | None = None,
    ) -> tuple[builtins.list[Task], Cursor | None]:
        tasks = self._open()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        wanted = frozenset(states)
        start = None if after is None else (_utc(after.created_at), after.task_id)
        matching = sorted(
            (
                task
                for task in tasks.values()
                if (not wanted or task.state in wanted)
                and (not tool or task.tool == tool)
                and (start is None or (task.created_at, task.task_id) < start)
            ),
            key=lambda task: (task.created_at, task.task_id),
            reverse=True,
        )
        page = [_copy(task) for task in matching[:limit]]
        return page, Cursor.at(page[-1]) if len(matching) > limit else None

    def unfinished(self) -> builtins.list[Task]:
        return sorted(
            (_copy(task) for task in self._open().values() if task.state in UNFINISHED_STATES),
            key=lambda task: (task.created_at, task.task_id),
        )

    def count_by_state(self) -> dict[TaskState, int]:
        counts = dict.fromkeys(TaskState, 0)
        for task in self._open().values():
            counts[task.state] += 1
        return counts

    def close(self) -> None:
        self._tasks = None

    def find_by_idempotency_key(self, idempotency_key: str, origin_agent_id: str) -> Task | None:
        holder = self._holder(idempotency_key, origin_agent_id) if idempotency_key else None
        return None if holder is None else _copy(holder)

    def _delete(self, task_id: str) -> None:
        if self._open().pop(task_id, None) is None:
            raise UnknownTask(task_id)

    def _open(self) -> dict[str, Task]:
        if self._tasks is None:
            raise RuntimeError("task store is closed")
        return self._tasks

    def _holder(self, idempotency_key: str, origin_agent_id: str) -> Task | None:
        return next(
            (
                t
                for t in self._open().values()
                if t.idempotency_key == idempotency_key and t.origin_agent_id == origin_agent_id
            ),
            None,
        )


def _utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: task timestamps must be timezone-aware")
    return moment.astimezone(UTC)


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _copy(task: Task) -> Task:
    """What the SQLite store would hand back after storing ``task``."""
    return replace(
        task,
        arguments=_json_copy(task.arguments),
        result=None if task.result is None else _json_copy(task.result),
        tags=tuple(_json_copy(list(task.tags))),
        timeout=float(task.timeout),
        created_at=_utc(task.created_at),
        updated_at=_utc(task.updated_at),
        started_at=None if task.started_at is None else _utc(task.started_at),
        finished_at=None if task.finished_at is None else _utc(task.finished_at),
    )
