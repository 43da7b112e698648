"""The coordinator's task records, replicated through consensus before they
are stored locally, and their encoding in the replicated state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from praxis_grpc.consensus.base import Consensus, ConsensusError, NotLeader
from praxis_grpc.errors import (
    CONSENSUS_UNAVAILABLE,
    INFRASTRUCTURE_RETRY_AFTER,
    NOT_COORDINATOR,
    Unavailable,
)
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Task, TaskError, TaskState

__all__ = ["TASK_PREFIX", "ReplicatedRecords", "decode_task", "encode_task"]

TASK_PREFIX = "task/"


def encode_task(task: Task) -> bytes:
    """``task`` as compact JSON (every field, the fingerprint included)."""
    return json.dumps(
        {
            "task_id": task.task_id,
            "tool": task.tool,
            "arguments": task.arguments,
            "state": task.state.name,
            "created_at": task.created_at.isoformat(),
            "updated_at": task.updated_at.isoformat(),
            "owner_agent_id": task.owner_agent_id,
            "origin_agent_id": task.origin_agent_id,
            "idempotency_key": task.idempotency_key,
            "timeout": task.timeout,
            "tags": list(task.tags),
            "preferred_agent": task.preferred_agent,
            "result": task.result,
            "error": None if task.error is None else [task.error.reason, task.error.message],
            "started_at": _iso(task.started_at),
            "finished_at": _iso(task.finished_at),
            "attempt": task.attempt,
            "request_fingerprint": task.request_fingerprint,
            "submitter": task.submitter,
            "target_agent": task.target_agent,
        },
        separators=(",", ":"),
    ).encode()


def decode_task(data: bytes) -> Task:
    """The inverse of :func:`encode_task`.

    Raises:
        ValueError: ``data`` is not an encoded task.
    """
    try:
        raw: dict[str, Any] = json.loads(data)
        error = raw["error"]
        return Task(
            task_id=raw["task_id"],
            tool=raw["tool"],
            arguments=raw["arguments"],
            state=TaskState[raw["state"]],
            created_at=datetime.fromisoformat(raw["created_at"]),
            updated_at=datetime.fromisoformat(raw["updated_at"]),
            owner_agent_id=raw["owner_agent_id"],
            origin_agent_id=raw["origin_agent_id"],
            idempotency_key=raw["idempotency_key"],
            timeout=float(raw["timeout"]),
            tags=tuple(raw["tags"]),
            preferred_agent=raw["preferred_agent"],
            result=raw["result"],
            error=None if error is None else TaskError(error[0], error[1]),
            started_at=_time(raw["started_at"]),
            finished_at=_time(raw["finished_at"]),
            attempt=int(raw["attempt"]),
            request_fingerprint=raw["request_fingerprint"],
            # Records committed before tasks recorded their submitter have none.
            submitter=raw.get("submitter", ""),
            # Records committed before tasks could be targeted have no target.
            target_agent=raw.get("target_agent", ""),
        )
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an encoded task: {exc}") from None


def decode_snapshot(state: Mapping[str, bytes]) -> list[Task]:
    """The tasks in a consensus snapshot, oldest first."""
    tasks = [decode_task(v) for k, v in state.items() if k.startswith(TASK_PREFIX)]
    return sorted(tasks, key=lambda t: (t.created_at, t.task_id))


class ReplicatedRecords:
    """``record``/``forget`` of the coordinator: commit to consensus in the
    current term first, then to the local store (see :meth:`TaskEngine.record`).

    Every failure is a domain error a client can act on (the task calls of
    an active-passive coordinator go through here):

    - a write refused by consensus (this node no longer leads) becomes
      :class:`~praxis_grpc.errors.Unavailable` naming the coordinator, and
      nothing is written locally either;
    - a write consensus did not confirm (:class:`ConsensusError`: no quorum
      in time; it may or may not be applied) becomes ``Unavailable`` naming
      the leader as this node sees it, so a relaying standby sends the call
      again, with the same task id, to the next coordinator;
    - a record of a task that runs on this node (the store refuses it: an
      earlier coordinator sent the task here while this one placed it, a
      race between two roles) becomes ``Unavailable``: a retry with the
      same task id or idempotency key finds the task.
    """

    def __init__(
        self,
        engine: TaskEngine,
        consensus: Consensus,
        term: Callable[[], int],
        metrics: Metrics,
        origin: str,
    ) -> None:
        self._origin = origin
        # Finished tasks still in the consensus state, by when they finished.
        self.finished: dict[str, datetime] = {}
        self._engine = engine
        self._consensus = consensus
        self._term = term
        self._metrics = metrics

    async def record(self, task: Task, *, durable: bool = True) -> Task:
        """Replicate (when ``durable``) and store ``task``; see TaskEngine.record.

        Only the cluster's records are replicated: a record this node made
        in active-active mode (its own origin) stays local.
        """
        if durable and task.origin_agent_id == self._origin:
            await self.replicate(task)
        try:
            return await self._engine.record(task, durable=durable)
        except ValueError as exc:
            raise _runs_here(task, exc) from None

    async def forget(self, task: Task) -> None:
        """Delete the replicated record, then the local one."""
        if task.origin_agent_id == self._origin:
            await self._commit(TASK_PREFIX + task.task_id, None)
        try:
            await self._engine.forget(task)
        except ValueError as exc:
            raise _runs_here(task, exc) from None

    async def replicate(self, task: Task) -> None:
        """Commit ``task`` to consensus only (a local task's state change)."""
        await self._commit(TASK_PREFIX + task.task_id, encode_task(task))
        self.note(task)

    def note(self, task: Task) -> None:
        """Remember a finished task that is in the consensus state."""
        if task.terminal:
            self.finished[task.task_id] = task.finished_at or task.updated_at

    async def expire(self, before: datetime) -> int:
        """Delete the consensus records of tasks finished before ``before``
        (the local store keeps them). Returns how many were deleted."""
        old = [task_id for task_id, at in self.finished.items() if at < before]
        for task_id in old:
            await self._commit(TASK_PREFIX + task_id, None)
            del self.finished[task_id]
        return len(old)

    async def _commit(self, key: str, value: bytes | None) -> None:
        started = time.monotonic()
        try:
            await self._consensus.commit(key, value, term=self._term())
        except NotLeader as exc:
            leader = exc.leadership
            raise Unavailable(
                "this node is no longer the coordinator"
                + (f"; the coordinator is {leader.leader_address}" if leader.known else ""),
                coordinator=leader.leader_address,
                coordinator_id=leader.leader_id,
                reason=NOT_COORDINATOR,
                retry_after=INFRASTRUCTURE_RETRY_AFTER,
            ) from None
        except ConsensusError as exc:
            leader = self._consensus.leadership()
            raise Unavailable(
                f"the coordinator could not commit the task record ({exc}); retry with the"
                " same task id or idempotency key",
                coordinator=leader.leader_address,
                coordinator_id=leader.leader_id,
                reason=CONSENSUS_UNAVAILABLE,
                retry_after=INFRASTRUCTURE_RETRY_AFTER,
            ) from None
        finally:
            self._metrics.consensus_commit_duration_seconds.observe(time.monotonic() - started)


def _runs_here(task: Task, exc: ValueError) -> Unavailable:
    return Unavailable(
        f"task {task.task_id} runs on this node now, sent here by an earlier coordinator"
        f" while this node placed it ({exc}); retry with the same task id or idempotency key"
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
