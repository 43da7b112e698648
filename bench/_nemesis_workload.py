"""The nemesis suite's workload and its coordinator sampler.

:func:`run_workload` runs ``clients`` closed-loop clients. Each submits one
non-idempotent counting task at a time (``SubmitTask(wait=False)`` with a
unique idempotency key); on any error it resends the *same* request, with
the same key, through the next node, until a node acknowledges it or
``give_up`` seconds have passed; then it takes the next key. A client stops
taking new keys when ``stop`` is set or it submitted ``limit`` keys, and
always finishes the key it holds, so every wait is bounded by ``give_up``
plus one ``rpc_timeout``.

:func:`probe` submits one more key the same way, through every node but
one it avoids: through the majority side of a partition from the cut on, its
acknowledgement is when that side serves again, whatever the closed-loop
clients are stuck on (each of them soon waits out its deadline on the
cut-off node); through every node from the end of a nemesis on, when the
cluster serves again.

:func:`sample_roles` asks every node for GetAgent every ``interval`` until
``stop`` is set; the checker derives from the samples when the cluster had a
coordinator. Both read the node addresses through ``targets`` on every call:
a restarted node listens on a new port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)
from praxis_grpc.testing.counting import RunLog
from praxis_grpc.wire import dict_to_struct

Targets = Callable[[], Sequence[tuple[str, str]]]
"""The current (node name, gRPC host:port) of every node."""

TOOL = "nonidem"
"""The non-idempotent counting tool every node offers (see :mod:`praxis_grpc.testing.counting`)."""

_RETRY_PAUSE = 0.05
_MESSAGE_CHARS = 200
_ROLE_NAMES = {1: "peer", 2: "coordinator", 3: "standby"}


@dataclass
class Submission:
    """One key: every attempt's error ("<node>: <code>: <message>"), and the
    acknowledgement if one came."""

    key: str
    started: float
    errors: list[str] = field(default_factory=list)
    task_id: str = ""
    acked_by: str = ""
    acked_at: float = 0.0
    attempt_started: float = 0.0
    deduplicated: bool = False


def error_code(error: str) -> str:
    """The status code of a :attr:`Submission.errors` entry."""
    return error.split(": ", 2)[1]


def tally(errors: Iterable[str]) -> Counter[str]:
    """How often each distinct :attr:`Submission.errors` entry (cut to
    200 characters) occurs."""
    return Counter(error[:_MESSAGE_CHARS] for error in errors)


def distinct(counts: Mapping[str, int], limit: int = 8) -> str:
    """The ``limit`` most frequent entries of a :func:`tally`, with their counts."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = [f"{error} (x{count})" for error, count in ranked[:limit]]
    if len(ranked) > limit:
        shown.append(f"{len(ranked) - limit} more")
    return "; ".join(shown)


@dataclass(frozen=True)
class Sample:
    """One GetAgent answer (``role`` "" when the node did not answer in time)."""

    at: float
    node: str
    role: str = ""
    agent_id: str = ""
    leader: str = ""
    term: int = 0


# gRPC shares one connection among the channels of a process that have the
# same target and options. A probe opened after a heal then sent its calls on
# the workload's connection to the node that was cut off, which waited for
# TCP's next retransmission of what the clients sent during the cut (seconds,
# backed off): the probe measured that, not the cluster (5.7-6.2 s "serves
# after heal" on etcd while the node had served for 4 s). Each Channels dials
# its own connections, as separate clients would.
_OWN_CONNECTIONS = [("grpc.use_local_subchannel_pool", 1)]


class Channels:
    """One grpc.aio channel per address, reused, on connections of its own;
    :meth:`close` closes them all."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address, options=_OWN_CONNECTIONS)
        return self._channels[address]

    def tasks(self, address: str) -> task_service_pb2_grpc.TaskServiceAsyncStub:
        """A TaskService stub for ``address``."""
        return task_service_pb2_grpc.TaskServiceStub(self._channel(address))

    def agent(self, address: str) -> agent_service_pb2_grpc.AgentServiceAsyncStub:
        """An AgentService stub for ``address``."""
        return agent_service_pb2_grpc.AgentServiceStub(self._channel(address))

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()


def request(key: str, log: RunLog, seconds: float) -> task_service_pb2.SubmitTaskRequest:
    """The submission of ``key``: the same request on every resend, so the key dedups."""
    return task_service_pb2.SubmitTaskRequest(
        tool=TOOL,
        arguments=dict_to_struct(log.arguments(key, seconds)),
        idempotency_key=key,
        wait=False,
    )


async def run_workload(
    targets: Targets,
    log: RunLog,
    prefix: str,
    stop: asyncio.Event,
    *,
    clients: int,
    limit: int,
    task_seconds: float,
    rpc_timeout: float,
    give_up: float,
) -> list[Submission]:
    """Run the closed-loop clients until ``stop``; return every key they submitted."""
    channels = Channels()
    submissions: list[Submission] = []
    budget = iter(range(limit))

    async def client(number: int) -> None:
        turn = number
        for index in budget:
            if stop.is_set():
                return
            submission = Submission(f"{prefix}-{index}", time.monotonic())
            submissions.append(submission)
            message = request(submission.key, log, task_seconds)
            deadline = submission.started + give_up
            while not submission.task_id and time.monotonic() < deadline:
                nodes = targets()
                await _attempt(channels, nodes[turn % len(nodes)], message, submission, rpc_timeout)
                turn += 1

    try:
        await asyncio.gather(*(client(number) for number in range(clients)))
    finally:
        await channels.close()
    return submissions


async def _attempt(
    channels: Channels,
    node: tuple[str, str],
    message: task_service_pb2.SubmitTaskRequest,
    submission: Submission,
    rpc_timeout: float,
) -> None:
    """Send ``message`` to ``node`` once; note the acknowledgement or the error."""
    name, address = node
    attempt_started = time.monotonic()
    try:
        response = await channels.tasks(address).SubmitTask(message, timeout=rpc_timeout)
    except grpc.aio.AioRpcError as exc:
        submission.errors.append(f"{name}: {exc.code().name}: {exc.details() or ''}")
        await asyncio.sleep(_RETRY_PAUSE)
        return
    submission.task_id, submission.acked_by = response.task.task_id, name
    submission.acked_at, submission.attempt_started = time.monotonic(), attempt_started
    submission.deduplicated = response.deduplicated


async def probe(
    targets: Targets,
    avoid: str,
    log: RunLog,
    key: str,
    *,
    task_seconds: float,
    rpc_timeout: float,
    give_up: float,
) -> Submission:
    """Submit ``key`` through the nodes other than ``avoid`` ("": all of them)
    in turn, the same request each time, each attempt with the clients'
    ``rpc_timeout``, until one acknowledges it or ``give_up`` seconds have
    passed."""
    channels = Channels()
    submission = Submission(key, time.monotonic())
    message = request(key, log, task_seconds)
    turn = 0
    try:
        while not submission.task_id and time.monotonic() < submission.started + give_up:
            nodes = [node for node in targets() if node[0] != avoid]
            node = nodes[turn % len(nodes)]
            await _attempt(channels, node, message, submission, rpc_timeout)
            turn += 1
    finally:
        await channels.close()
    return submission


async def sample_roles(
    targets: Targets, stop: asyncio.Event, *, interval: float, rpc_timeout: float
) -> list[Sample]:
    """GetAgent of every node every ``interval`` until ``stop``; one task per node."""
    channels = Channels()
    samples: list[Sample] = []

    async def sampler(position: int) -> None:
        while not stop.is_set():
            nodes = targets()
            name, address = nodes[position]
            asked = time.monotonic()
            try:
                response = await channels.agent(address).GetAgent(
                    agent_service_pb2.GetAgentRequest(), timeout=rpc_timeout
                )
            except grpc.aio.AioRpcError:
                samples.append(Sample(asked, name))
            else:
                agent = response.agent
                role = _ROLE_NAMES.get(agent.role, "")
                samples.append(
                    Sample(asked, name, role, agent.agent_id, agent.leader_agent_id, agent.term)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(interval - (time.monotonic() - asked), 0))

    try:
        await asyncio.gather(*(sampler(position) for position in range(len(targets()))))
    finally:
        await channels.close()
    return samples
