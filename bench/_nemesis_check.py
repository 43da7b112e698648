"""The nemesis suite's checker: what became of every acknowledged task.

:func:`audit` runs once the nemesis is over and every node is up again:

1. **Settle**: each acknowledged task is asked for (GetTask) at the reference
   node, the coordinator, until it is terminal, bounded by ``settle_timeout``.
   Lost: acknowledged, but no answer but NOT_FOUND, or never terminal.
2. **Every node's answer**: GetTask for each acknowledged id at every node;
   an answer other than the reference's outcome (another state, an error) is
   a disagreement. (The API has no way to declare a copy stale yet; when it
   has, such an answer will not count.)
3. **Every node's store**: ListTasks(local_only) of the counting tool;
   keys of this trial with two task ids anywhere, and acknowledged tasks a
   node still lists unfinished (a copy it no longer follows).
4. **The execution log**: keys of this trial the tool started twice or more
   (every task is non-idempotent), and acknowledged tasks the reference says
   COMPLETED although the tool never started them.

:func:`coordinator_gaps` and :func:`recovered_at` read the GetAgent samples:
the cluster has a coordinator at a moment when some node's fresh sample says
it coordinates and a majority of all nodes' fresh samples name it (itself
included). A node that did not answer, or whose last answer is older than
``fresh``, names nobody.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import grpc

from bench._nemesis_workload import TOOL, Channels, Sample, Submission, Targets
from praxis_grpc._gen.praxis.v1 import task_service_pb2, types_pb2
from praxis_grpc.testing.counting import RunLog

TERMINAL = frozenset(
    {
        types_pb2.TASK_STATE_COMPLETED,
        types_pb2.TASK_STATE_FAILED,
        types_pb2.TASK_STATE_CANCELED,
        types_pb2.TASK_STATE_REJECTED,
    }
)
_CONCURRENCY = 16
_POLL = 0.1
_PAGE = 1000
_STEP = 0.02


@dataclass
class Audit:
    """One trial's findings; lists hold task ids or keys, at most a few shown in reports."""

    acknowledged: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    executed_twice: list[str] = field(default_factory=list)
    keys_with_two_tasks: list[str] = field(default_factory=list)
    answers_differ: list[str] = field(default_factory=list)
    completed_unrun: list[str] = field(default_factory=list)
    listed_unfinished: dict[str, int] = field(default_factory=dict)
    executions: int = 0
    settled_s: float = 0.0


def _state(state: int) -> str:
    return types_pb2.TaskState.Name(state).removeprefix("TASK_STATE_")


async def _get(channels: Channels, address: str, task_id: str, rpc_timeout: float) -> str:
    """The task's state name at ``address``, or the gRPC code name of the error."""
    try:
        response = await channels.tasks(address).GetTask(
            task_service_pb2.GetTaskRequest(task_id=task_id), timeout=rpc_timeout
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return _state(response.task.state)


_TERMINAL_NAMES = frozenset(_state(state) for state in TERMINAL)


async def audit(
    targets: Targets,
    reference: str,
    submissions: Sequence[Submission],
    log: RunLog,
    prefix: str,
    *,
    settle_timeout: float,
    rpc_timeout: float,
) -> Audit:
    """Settle, then check every acknowledged task on every node (see the module doc)."""
    nodes = dict(targets())
    acked = [s for s in submissions if s.task_id]
    result = Audit(acknowledged=len(acked))
    channels = Channels()
    gate = asyncio.Semaphore(_CONCURRENCY)
    start = time.monotonic()
    deadline = start + settle_timeout
    final: dict[str, str] = {}

    async def settle(task_id: str) -> None:
        async with gate:
            while True:
                state = await _get(channels, nodes[reference], task_id, rpc_timeout)
                if state in _TERMINAL_NAMES or time.monotonic() >= deadline:
                    final[task_id] = state
                    return
                await asyncio.sleep(_POLL)

    async def compare(name: str, task_id: str) -> None:
        async with gate:
            answer = await _get(channels, nodes[name], task_id, rpc_timeout)
        if answer != final[task_id]:
            result.answers_differ.append(
                f"{task_id}: {name} {answer}, {reference} {final[task_id]}"
            )

    try:
        await asyncio.gather(*(settle(s.task_id) for s in acked))
        result.settled_s = time.monotonic() - start
        for task_id, state in final.items():
            result.outcomes[state] = result.outcomes.get(state, 0) + 1
            if state not in _TERMINAL_NAMES:
                result.lost.append(f"{task_id} ({state})")
        await asyncio.gather(
            *(compare(name, s.task_id) for name in nodes if name != reference for s in acked)
        )
        listed = await _listings(channels, nodes, prefix, {s.task_id for s in acked}, rpc_timeout)
    finally:
        await channels.close()
    ids_by_key, result.listed_unfinished = listed
    result.keys_with_two_tasks = sorted(k for k, ids in ids_by_key.items() if len(ids) > 1)
    runs = {key: n for key, n in log.runs().items() if key.startswith(prefix + "-")}
    result.executions = sum(runs.values())
    result.executed_twice = sorted(key for key, n in runs.items() if n > 1)
    result.completed_unrun = [
        s.key for s in acked if final[s.task_id] == "COMPLETED" and not runs.get(s.key)
    ]
    return result


async def _listings(
    channels: Channels, nodes: dict[str, str], prefix: str, acked: set[str], rpc_timeout: float
) -> tuple[dict[str, set[str]], dict[str, int]]:
    ids_by_key: dict[str, set[str]] = {}
    unfinished: dict[str, int] = {}
    mine = prefix + "-"
    for name, address in nodes.items():
        token = ""
        while True:
            page = await channels.tasks(address).ListTasks(
                task_service_pb2.ListTasksRequest(
                    tool=TOOL, page_size=_PAGE, page_token=token, local_only=True
                ),
                timeout=rpc_timeout,
            )
            for task in page.tasks:
                if task.idempotency_key.startswith(mine):
                    ids_by_key.setdefault(task.idempotency_key, set()).add(task.task_id)
                if task.task_id in acked and task.state not in TERMINAL:
                    unfinished[name] = unfinished.get(name, 0) + 1
            token = page.next_page_token
            if not token:
                break
    return ids_by_key, unfinished


def _leader_at(latest: Iterable[Sample], nodes: int) -> bool:
    votes: dict[str, int] = {}
    claims: set[str] = set()
    for sample in latest:
        if sample.role == "coordinator":
            claims.add(sample.agent_id)
            votes[sample.agent_id] = votes.get(sample.agent_id, 0) + 1
        elif sample.role == "standby" and sample.leader:
            votes[sample.leader] = votes.get(sample.leader, 0) + 1
    return any(votes.get(agent, 0) > nodes // 2 for agent in claims)


def _timeline(
    samples: Sequence[Sample], start: float, end: float, fresh: float
) -> list[tuple[float, bool]]:
    """(moment, has a coordinator) every few ms from ``start`` to ``end``."""
    ordered = sorted(samples, key=lambda s: s.at)
    names = {s.node for s in ordered}
    latest: dict[str, Sample] = {}
    points: list[tuple[float, bool]] = []
    position, moment = 0, start
    while moment <= end:
        while position < len(ordered) and ordered[position].at <= moment:
            latest[ordered[position].node] = ordered[position]
            position += 1
        live = [s for s in latest.values() if moment - s.at <= fresh]
        points.append((moment, _leader_at(live, len(names))))
        moment += _STEP
    return points


def coordinator_gaps(
    samples: Sequence[Sample], start: float, end: float, fresh: float
) -> list[float]:
    """Lengths (s) of the stretches between ``start`` and ``end`` without a coordinator."""
    gaps: list[float] = []
    opened: float | None = None
    for moment, leading in _timeline(samples, start, end, fresh):
        if not leading and opened is None:
            opened = moment
        elif leading and opened is not None:
            gaps.append(moment - opened)
            opened = None
    if opened is not None:
        gaps.append(end - opened)
    return gaps


def recovered_at(samples: Sequence[Sample], since: float, end: float, fresh: float) -> float | None:
    """Seconds from ``since`` until the cluster had a coordinator (None: not by ``end``)."""
    for moment, leading in _timeline(samples, since, end, fresh):
        if leading:
            return moment - since
    return None
