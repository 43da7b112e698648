"""The client side of one coordinator-failover trial: submit, kill, measure, account.

:func:`kill_under_load` runs one sender per node, each submitting
``SubmitTask(tool="echo", wait=False)`` with a fresh idempotency key per
attempt, one call at a time with ``interval`` between calls (after a success
or a failure alike). After ``before`` seconds it SIGKILLs the coordinator and
waits for the first submission *started after the coordinator was reaped*
that a survivor acknowledged: no such call can have reached the dead
process, so the new coordinator accepted it (the node that answered is asked
with GetAgent who coordinates, which the caller checks). The senders go on
for ``after`` seconds more, so tasks accepted right after the takeover are
accounted for too.

:func:`account` then checks every acknowledged task: it must be found and end
COMPLETED, and submitting the same request with the same key again must
return the same task id (``deduplicated``), i.e. the cluster still maps the
key to the one task it acknowledged. :func:`listings` counts, from every
node's ListTasks, keys that map to more than one task id and tasks that ran
on more than one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from bench._ha_cluster import ROLE_NAMES
from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    types_pb2,
)
from praxis_grpc.launcher import NodeProcess
from praxis_grpc.wire import dict_to_struct

RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
TERMINAL = (
    types_pb2.TASK_STATE_COMPLETED,
    types_pb2.TASK_STATE_FAILED,
    types_pb2.TASK_STATE_CANCELED,
    types_pb2.TASK_STATE_REJECTED,
)
_POLL = 0.05
_REAP_TIMEOUT = 10.0
_CHECK_CONCURRENCY = 16
_PAGE = 1000


@dataclass
class Attempt:
    """One SubmitTask call: to which node, when, and what came back."""

    key: str
    node: str
    started: float
    ended: float = 0.0
    code: str = ""
    task_id: str = ""


@dataclass
class Takeover:
    """What one kill under load measured (times are time.monotonic())."""

    killed_at: float
    reaped_at: float
    first_ack: Attempt | None
    elected_at: float | None = None
    acked_by: str = ""
    coordinator_id: str = ""
    term: int = 0
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def failover_s(self) -> float | None:
        """From the SIGKILL to the first acknowledgement by the new coordinator."""
        return None if self.first_ack is None else self.first_ack.ended - self.killed_at

    @property
    def elected_s(self) -> float | None:
        """From the SIGKILL until a survivor's GetAgent first said it coordinates."""
        return None if self.elected_at is None else self.elected_at - self.killed_at


def request(key: str) -> task_service_pb2.SubmitTaskRequest:
    """The submission for ``key`` (the same request every time, so a resend dedups)."""
    return task_service_pb2.SubmitTaskRequest(
        tool="echo", arguments=dict_to_struct({"key": key}), idempotency_key=key, wait=False
    )


class _Stubs:
    def __init__(self, nodes: Iterable[NodeProcess]) -> None:
        self.channels = {node.name: grpc.aio.insecure_channel(node.grpc) for node in nodes}
        self.tasks = {
            name: task_service_pb2_grpc.TaskServiceStub(channel)
            for name, channel in self.channels.items()
        }
        self.agents = {
            name: agent_service_pb2_grpc.AgentServiceStub(channel)
            for name, channel in self.channels.items()
        }

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close(None)


async def kill_under_load(
    nodes: Sequence[NodeProcess],
    victim: NodeProcess,
    prefix: str,
    *,
    old_term: int,
    before: float,
    after: float,
    interval: float,
    rpc_timeout: float,
    within: float,
) -> Takeover:
    """Submit continuously, SIGKILL ``victim``, wait for the new coordinator's first ack.

    Meanwhile every survivor's GetAgent is polled each ``interval`` for the
    first one to call itself coordinator in a term above ``old_term``.
    Bounded: ``before`` + ``within`` (waiting for that ack) + ``after`` + one
    ``rpc_timeout`` for the calls in flight.
    """
    stubs = _Stubs(nodes)
    attempts: list[Attempt] = []
    stop = asyncio.Event()
    acked = asyncio.Event()
    reaped = asyncio.Event()
    reaped_at = math.inf
    elected: list[float] = []
    numbers = itertools.count()

    async def pause() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)

    async def sender(node: NodeProcess) -> None:
        stub = stubs.tasks[node.name]
        while not stop.is_set() and node.process.poll() is None:
            attempt = Attempt(f"{prefix}-{next(numbers)}", node.name, time.monotonic())
            attempts.append(attempt)
            try:
                response = await stub.SubmitTask(request(attempt.key), timeout=rpc_timeout)
            except grpc.aio.AioRpcError as exc:
                attempt.code = exc.code().name
            else:
                attempt.code, attempt.task_id = "OK", response.task.task_id
                if attempt.started >= reaped_at:
                    acked.set()
            attempt.ended = time.monotonic()
            await pause()

    async def election_watch(node: NodeProcess) -> None:
        await reaped.wait()
        while not stop.is_set() and not elected:
            with contextlib.suppress(grpc.aio.AioRpcError):
                response = await stubs.agents[node.name].GetAgent(
                    agent_service_pb2.GetAgentRequest(), timeout=rpc_timeout
                )
                agent = response.agent
                if ROLE_NAMES.get(agent.role) == "coordinator" and agent.term > old_term:
                    elected.append(time.monotonic())
            await pause()

    survivors = [node for node in nodes if node is not victim]
    workers = [asyncio.create_task(sender(node)) for node in nodes]
    workers += [asyncio.create_task(election_watch(node)) for node in survivors]
    try:
        await asyncio.sleep(before)
        killed_at = time.monotonic()
        victim.process.kill()
        await asyncio.to_thread(victim.process.wait, _REAP_TIMEOUT)
        reaped_at = time.monotonic()
        reaped.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acked.wait(), within)
        first = min(
            (a for a in attempts if a.code == "OK" and a.started >= reaped_at),
            key=lambda a: a.ended,
            default=None,
        )
        takeover = Takeover(killed_at, reaped_at, first, attempts=attempts)
        if first is not None:
            await _ask_who_leads(stubs, first.node, takeover, rpc_timeout)
            await asyncio.sleep(after)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await stubs.close()
    takeover.elected_at = min(elected, default=None)
    return takeover


async def _ask_who_leads(stubs: _Stubs, name: str, takeover: Takeover, rpc_timeout: float) -> None:
    takeover.acked_by = name
    with contextlib.suppress(grpc.aio.AioRpcError):
        response = await stubs.agents[name].GetAgent(
            agent_service_pb2.GetAgentRequest(), timeout=rpc_timeout
        )
        agent = response.agent
        leading = ROLE_NAMES.get(agent.role) == "coordinator"
        takeover.coordinator_id = agent.agent_id if leading else agent.leader_agent_id
        takeover.term = agent.term


@dataclass
class Accounting:
    """What became of the acknowledged tasks of one trial."""

    acknowledged: int = 0
    completed: int = 0
    other_terminal: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    key_remapped: list[str] = field(default_factory=list)
    key_unchecked: list[str] = field(default_factory=list)
    settled_s: float | None = None


async def account(
    nodes: Sequence[NodeProcess], acked: Sequence[Attempt], *, within: float, rpc_timeout: float
) -> Accounting:
    """Wait (bounded by ``within``) until every acknowledged task is terminal; resend each key.

    GetTask goes to each live node in turn until one knows the task; a task
    no live node knows is missing. Resending an acknowledged key must return
    the task id it was acknowledged with.
    """
    result = Accounting(acknowledged=len(acked))
    stubs = _Stubs(nodes)
    gate = asyncio.Semaphore(_CHECK_CONCURRENCY)
    start = time.monotonic()
    deadline = start + within
    settled: list[float] = []

    async def follow(attempt: Attempt) -> None:
        async with gate:
            state, found = await _final_state(stubs, attempt.task_id, deadline, rpc_timeout)
        if not found:
            result.missing.append(attempt.task_id)
        elif state == types_pb2.TASK_STATE_COMPLETED:
            result.completed += 1
        elif state in TERMINAL:
            name = types_pb2.TaskState.Name(state)
            result.other_terminal[name] = result.other_terminal.get(name, 0) + 1
        else:
            result.unfinished.append(attempt.task_id)
        settled.append(time.monotonic() - start)
        async with gate:
            task_id = await _resend(stubs, attempt.key, deadline, rpc_timeout)
        if not task_id:
            result.key_unchecked.append(attempt.key)
        elif task_id != attempt.task_id:
            result.key_remapped.append(f"{attempt.key}: {attempt.task_id} -> {task_id or '?'}")

    try:
        await asyncio.gather(*(follow(attempt) for attempt in acked))
    finally:
        await stubs.close()
    result.settled_s = max(settled, default=0.0)
    return result


async def _final_state(
    stubs: _Stubs, task_id: str, deadline: float, rpc_timeout: float
) -> tuple[int, bool]:
    """The task's state once terminal (or the last seen at the deadline), and if found."""
    state, found = types_pb2.TASK_STATE_UNSPECIFIED, False
    while True:
        for stub in stubs.tasks.values():
            try:
                response = await stub.GetTask(
                    task_service_pb2.GetTaskRequest(task_id=task_id), timeout=rpc_timeout
                )
            except grpc.aio.AioRpcError:
                continue
            state, found = response.task.state, True
            if state in TERMINAL:
                return state, True
            break
        if time.monotonic() >= deadline:
            return state, found
        await asyncio.sleep(_POLL)


async def _resend(stubs: _Stubs, key: str, deadline: float, rpc_timeout: float) -> str:
    """The task id the cluster returns for ``key`` now ("" if no node answered in time)."""
    while True:
        for stub in stubs.tasks.values():
            try:
                response = await stub.SubmitTask(request(key), timeout=rpc_timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRIED:
                    continue
                return f"error {exc.code().name}"
            return str(response.task.task_id) if response.deduplicated else "new task"
        if time.monotonic() >= deadline:
            return ""
        await asyncio.sleep(_POLL)


@dataclass
class Listing:
    """Every task of one trial as the nodes list them."""

    ids_by_key: dict[str, set[str]] = field(default_factory=dict)
    ran_on: dict[str, set[str]] = field(default_factory=dict)
    reruns: int = 0
    stale: dict[str, int] = field(default_factory=dict)
    stale_get: dict[str, int] = field(default_factory=dict)

    @property
    def duplicate_keys(self) -> list[str]:
        """Keys that map to more than one task id."""
        return sorted(key for key, ids in self.ids_by_key.items() if len(ids) > 1)

    @property
    def ran_twice(self) -> list[str]:
        """Task ids that started on more than one node."""
        return sorted(task_id for task_id, names in self.ran_on.items() if len(names) > 1)


async def listings(
    nodes: Sequence[NodeProcess],
    agent_ids: Mapping[str, str],
    prefix: str,
    acked: Collection[str],
    rpc_timeout: float,
) -> Listing:
    """Scan every node's ListTasks for this trial's keys (``prefix``-) and task ids.

    ``acked`` holds the acknowledged task ids. ``stale`` counts, per
    node, acknowledged tasks that node lists in a non-terminal state although
    every task was found terminal before (a copy the node no longer follows);
    ``stale_get`` those of them that GetTask at that node also shows unfinished.
    """
    result = Listing()
    wanted = set(acked)
    mine = prefix + "-"
    stale: list[tuple[str, str]] = []
    stubs = _Stubs(nodes)
    try:
        for node in nodes:
            me = agent_ids.get(node.name, "")
            async for task in _every_task(stubs.tasks[node.name], rpc_timeout):
                ours = task.idempotency_key.startswith(mine)
                if ours:
                    result.ids_by_key.setdefault(task.idempotency_key, set()).add(task.task_id)
                elif task.task_id not in wanted:
                    continue
                if task.owner_agent_id == me and task.attempt > 0:
                    result.ran_on.setdefault(task.task_id, set()).add(node.name)
                    result.reruns += task.attempt > 1
                if task.task_id in wanted and task.state not in TERMINAL:
                    result.stale[node.name] = result.stale.get(node.name, 0) + 1
                    stale.append((node.name, task.task_id))
        for name, task_id in stale:
            answer = await stubs.tasks[name].GetTask(
                task_service_pb2.GetTaskRequest(task_id=task_id), timeout=rpc_timeout
            )
            if answer.task.state not in TERMINAL:
                result.stale_get[name] = result.stale_get.get(name, 0) + 1
    finally:
        await stubs.close()
    return result


async def _every_task(
    stub: task_service_pb2_grpc.TaskServiceAsyncStub, rpc_timeout: float
) -> AsyncIterator[types_pb2.Task]:
    token = ""
    while True:
        page = await stub.ListTasks(
            # Each node's own store: what ran where, not the coordinator's view.
            task_service_pb2.ListTasksRequest(
                tool="echo", page_size=_PAGE, page_token=token, local_only=True
            ),
            timeout=rpc_timeout,
        )
        for task in page.tasks:
            yield task
        token = page.next_page_token
        if not token:
            return
