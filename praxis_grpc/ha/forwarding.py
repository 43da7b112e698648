"""A standby's task calls, forwarded to the active-passive coordinator.

A standby owns no task queue: it relays ``SubmitTask`` (and reads of tasks
it does not hold) to the coordinator through the node's
:class:`~praxis_grpc.peers.base.PeerClient` (``PeerService.Relay*``), with
the client's deadline. A node that receives a relayed submission and is not
the coordinator either (leadership just moved) answers UNAVAILABLE with the
coordinator it knows instead of relaying again. With
``ha.forward_submissions: false``, or while no coordinator is known, the
standby answers UNAVAILABLE itself, naming the coordinator in the trailing
metadata (``praxis-coordinator``, ``praxis-coordinator-id``).

A relay that got no answer from a coordinator (the connection was refused or
broke, or the node relayed to no longer coordinates) raises
:class:`RelayFailed`: the caller may wait for the next coordinator and send
again. Submissions are relayed with a task id, so a resend after a lost
answer is deduplicated instead of run twice.

A coordinator cut off by a partition answers nothing and closes nothing, so
a relay would wait for its deadline. Two things end such a relay early:
:meth:`Forwarder.abandon`, called when another coordinator is elected,
cancels every relay in flight to the old one (each raises
:class:`RelayFailed`); and the relay connections ping every second (see
:mod:`praxis_grpc.peers.grpc`), so a connection whose peer stopped answering
breaks within about two seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import TypeVar

from praxis_grpc.aio import cancelling
from praxis_grpc.consensus.base import Leadership
from praxis_grpc.errors import PraxisError, Unavailable
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import PeerClient, PeerLost, TaskQuery
from praxis_grpc.tasks.model import Submission, Task, TaskState

__all__ = ["Forwarder", "RelayFailed"]

T = TypeVar("T")

# How long a relayed read (get, list, cancel) may take.
_READ_TIMEOUT = 10.0
_END = object()


class RelayFailed(Unavailable):
    """The coordinator at ``address`` did not answer the relayed call: it was
    unreachable, the connection broke, or it no longer coordinates. Sending
    again to the next coordinator is safe for reads, and for submissions
    relayed with a task id."""

    def __init__(self, message: str, address: str, *, redirected: str = "") -> None:
        super().__init__(message)
        self.address = address
        # The coordinator the node at ``address`` named instead (it answered
        # that it is not the coordinator): a node elected a moment ago says
        # so until it learns it won.
        self.redirected = redirected


class Forwarder:
    """Relays task calls from a standby to the coordinator."""

    def __init__(
        self,
        *,
        peers: PeerClient,
        leadership: Callable[[], Leadership],
        enabled: bool,
        metrics: Metrics,
    ) -> None:
        self._peers = peers
        self._leadership = leadership
        self._enabled = enabled
        self._metrics = metrics
        # Relays in flight, by the coordinator address they were sent to.
        self._in_flight: dict[str, set[asyncio.Future[object]]] = {}
        self._abandoned: set[asyncio.Future[object]] = set()

    def abandon(self, leadership: Leadership) -> None:
        """Give up every relay in flight to a coordinator other than
        ``leadership``'s, once another one is known: each raises
        :class:`RelayFailed` and its caller may send it again. A change to
        no coordinator at all abandons nothing (the same one may come back)."""
        if not leadership.known:
            return
        for address, calls in self._in_flight.items():
            if address == leadership.leader_address:
                continue
            for call in calls:
                if call not in self._abandoned and not call.done():
                    self._abandoned.add(call)
                    self._metrics.relays_abandoned_total.inc()
                    call.cancel()

    async def _relay(self, address: str, call: Awaitable[T]) -> T:
        """Await ``call`` to ``address`` as a task of its own (so
        :meth:`abandon` can cancel it without cancelling the caller) and turn
        its failure into the error its caller acts on."""
        future: asyncio.Future[object] = asyncio.ensure_future(call)
        calls = self._in_flight.setdefault(address, set())
        calls.add(future)
        try:
            return await future  # type: ignore[return-value]
        except PeerLost as exc:
            raise RelayFailed(exc.message, address) from None
        except Unavailable as exc:
            if exc.coordinator:
                raise RelayFailed(exc.message, address, redirected=exc.coordinator) from None
            raise
        except asyncio.CancelledError:
            if cancelling():
                raise
            raise RelayFailed(
                f"the coordinator at {address} lost the leadership before it answered", address
            ) from None
        finally:
            self._abandoned.discard(future)
            calls.discard(future)
            if not calls and self._in_flight.get(address) is calls:
                del self._in_flight[address]

    def coordinator(self, *, forwarded: bool = False) -> str:
        """The coordinator's address to relay to.

        Raises:
            Unavailable: no coordinator is known, forwarding is off, or the
                call was relayed here already; names the coordinator if known.
        """
        leader = self._leadership()
        if not leader.known or leader.is_self:
            raise Unavailable("no coordinator is elected yet; retry shortly")
        if forwarded or not self._enabled:
            reason = "this node is a standby" + (
                " and does not relay relayed calls" if forwarded else ""
            )
            raise Unavailable(
                f"{reason}; send task calls to the coordinator at {leader.leader_address}",
                coordinator=leader.leader_address,
                coordinator_id=leader.leader_id,
            )
        return leader.leader_address

    async def submit(
        self,
        submission: Submission,
        *,
        wait: bool,
        time_remaining: float | None,
        task_id: str,
        forwarded: bool,
    ) -> tuple[Task, bool]:
        """Submit at the coordinator; its answer (or error) is ours."""
        address = self.coordinator(forwarded=forwarded)
        call = self._peers.relay_submit(
            address, submission, task_id=task_id, wait=wait, call_timeout=time_remaining
        )
        try:
            accepted = await self._relay(address, call)
        except PraxisError:
            self._metrics.forwarded_submissions_total.labels("error").inc()
            raise
        self._metrics.forwarded_submissions_total.labels("ok").inc()
        return accepted.task, accepted.deduplicated

    async def get(self, task_id: str) -> Task:
        """GetTask at the coordinator."""
        address = self.coordinator()
        return await self._relay(
            address, self._peers.relay_get(address, task_id, call_timeout=_READ_TIMEOUT)
        )

    async def list(
        self, *, states: Collection[TaskState], tool: str, limit: int, page_token: str
    ) -> tuple[list[Task], str]:
        """ListTasks at the coordinator (its page token is opaque here)."""
        address = self.coordinator()
        query = TaskQuery(states=tuple(states), tool=tool, limit=limit, page_token=page_token)
        tasks, token = await self._relay(
            address, self._peers.relay_list(address, query, call_timeout=_READ_TIMEOUT)
        )
        return list(tasks), token

    async def cancel(self, task_id: str, reason: str) -> Task:
        """CancelTask at the coordinator."""
        address = self.coordinator()
        return await self._relay(
            address, self._peers.relay_cancel(address, task_id, reason, call_timeout=_READ_TIMEOUT)
        )

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """WatchTask at the coordinator, relayed."""
        address = self.coordinator()
        stream = self._peers.relay_watch(address, task_id)
        try:
            while True:
                task = await self._relay(address, _next(stream))
                if task is _END:
                    return
                assert isinstance(task, Task)
                yield task
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


async def _next(stream: AsyncIterator[Task]) -> object:
    """The next task of ``stream``, or ``_END``."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _END
