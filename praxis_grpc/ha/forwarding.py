"""A standby's task calls, forwarded to the active-passive coordinator.

A standby owns no task queue: it relays ``SubmitTask`` (and reads of tasks
it does not hold) to the coordinator over the pooled channel, with the
client's deadline. A relayed call carries ``praxis-forwarded-by`` so a node
that is not the coordinator either (leadership just moved) answers
UNAVAILABLE with the coordinator it knows instead of relaying again. With
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
:class:`RelayFailed`); and the relay channels ping every second, so a
connection whose peer stopped answering breaks within about two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterator

import grpc

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc.api.convert import dict_to_struct, task_from_proto
from praxis_grpc.api.errors import answered, error_from_rpc
from praxis_grpc.consensus.base import Leadership
from praxis_grpc.errors import PraxisError, Unavailable
from praxis_grpc.metrics import Metrics
from praxis_grpc.routing.channels import ChannelPool, cancelling
from praxis_grpc.tasks.model import Submission, Task, TaskState

FORWARDED_BY = "praxis-forwarded-by"

__all__ = ["FORWARDED_BY", "Forwarder", "RelayFailed"]


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
        agent_id: str,
        channels: ChannelPool,
        leadership: Callable[[], Leadership],
        enabled: bool,
        metrics: Metrics,
    ) -> None:
        self._agent_id = agent_id
        self._channels = channels
        self._leadership = leadership
        self._enabled = enabled
        self._metrics = metrics
        # Relays in flight, by the coordinator address they were sent to.
        self._in_flight: dict[str, set[grpc.aio.Call]] = {}
        self._abandoned: set[grpc.aio.Call] = set()

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

    @contextlib.contextmanager
    def _relaying(self, address: str, call: grpc.aio.Call) -> Iterator[None]:
        """Track ``call`` to ``address`` (see :meth:`abandon`) and turn its
        failure into the error its caller acts on."""
        calls = self._in_flight.setdefault(address, set())
        calls.add(call)
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, "coordinator")
            if exc.code() is grpc.StatusCode.UNAVAILABLE and not answered(exc):
                raise RelayFailed(error.message, address) from None
            if isinstance(error, Unavailable) and error.coordinator:
                raise RelayFailed(error.message, address, redirected=error.coordinator) from None
            raise error from None
        except asyncio.CancelledError:
            if cancelling():
                raise
            if call in self._abandoned:
                raise RelayFailed(
                    f"the coordinator at {address} lost the leadership before it answered",
                    address,
                ) from None
            # The coordinator left and its channel was closed under the call.
            raise RelayFailed("the coordinator was lost during the call", address) from None
        finally:
            self._abandoned.discard(call)
            calls.discard(call)
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
        task_id: str | None,
        forwarded: bool,
    ) -> tuple[Task, bool]:
        """Submit at the coordinator; its answer (or error) is ours."""
        address = self.coordinator(forwarded=forwarded)
        request = pb.SubmitTaskRequest(
            tool=submission.tool,
            arguments=dict_to_struct(submission.arguments),
            idempotency_key=submission.idempotency_key,
            tags=submission.tags,
            preferred_agent=submission.preferred_agent,
            wait=wait,
            task_id=task_id or "",
        )
        if submission.timeout is not None:
            request.timeout.FromNanoseconds(round(submission.timeout * 1e9))
        call = self._channels.tasks(address).SubmitTask(
            request, timeout=time_remaining, metadata=self._metadata()
        )
        try:
            with self._relaying(address, call):
                response = await call
        except PraxisError:
            self._metrics.forwarded_submissions_total.labels("error").inc()
            raise
        self._metrics.forwarded_submissions_total.labels("ok").inc()
        return task_from_proto(response.task), response.deduplicated

    async def get(self, task_id: str) -> Task:
        """GetTask at the coordinator."""
        address = self.coordinator()
        call = self._channels.tasks(address).GetTask(
            pb.GetTaskRequest(task_id=task_id), timeout=10, metadata=self._metadata()
        )
        with self._relaying(address, call):
            response = await call
        return task_from_proto(response.task)

    async def list(
        self, *, states: Collection[TaskState], tool: str, limit: int, page_token: str
    ) -> tuple[list[Task], str]:
        """ListTasks at the coordinator (its page token is opaque here)."""
        address = self.coordinator()
        request = pb.ListTasksRequest(
            states=[state.value for state in states],  # type: ignore[misc]  # same numbers
            tool=tool,
            page_size=limit,
            page_token=page_token,
        )
        call = self._channels.tasks(address).ListTasks(
            request, timeout=10, metadata=self._metadata()
        )
        with self._relaying(address, call):
            response = await call
        return [task_from_proto(task) for task in response.tasks], response.next_page_token

    async def cancel(self, task_id: str, reason: str) -> Task:
        """CancelTask at the coordinator."""
        address = self.coordinator()
        call = self._channels.tasks(address).CancelTask(
            pb.CancelTaskRequest(task_id=task_id, reason=reason),
            timeout=10,
            metadata=self._metadata(),
        )
        with self._relaying(address, call):
            response = await call
        return task_from_proto(response.task)

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """WatchTask at the coordinator, relayed."""
        address = self.coordinator()
        stream = self._channels.tasks(address).WatchTask(
            pb.WatchTaskRequest(task_id=task_id), metadata=self._metadata()
        )
        with self._relaying(address, stream):
            async for message in stream:
                yield task_from_proto(message.task)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((FORWARDED_BY, self._agent_id),)
