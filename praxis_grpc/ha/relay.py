"""What an active-passive node does with each client task call: while it
coordinates, place it (:class:`~praxis_grpc.routing.dispatcher.TaskDispatcher`);
while it stands by, relay it to the coordinator through the
:class:`~praxis_grpc.ha.forwarding.Forwarder`.

A relay holds through an election or take-over for up to ``ha.hold_timeout``
(:meth:`Standby.settle`) and is sent again, after another hold, when the
coordinator did not answer; if this node takes over meanwhile, the call is
answered here. Every send of one submission carries the same task id, so a
coordinator that accepted an earlier send deduplicates the next.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Protocol, TypeVar

from praxis_grpc.errors import NotFound
from praxis_grpc.ha.forwarding import Forwarder, RelayFailed
from praxis_grpc.routing.dispatcher import TaskDispatcher
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.ids import new_task_id
from praxis_grpc.tasks.model import Submission, Task, TaskState

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["Standby", "StandbyRelay"]

# How long a relay waits before it tries again a node that answered it is not
# the coordinator (yet): views of a new election reach nodes a moment apart.
_REDIRECT_PAUSE = 0.05


class Standby(Protocol):
    """What the relay needs of the HA role
    (:class:`~praxis_grpc.ha.coordinator.HaController`)."""

    @property
    def leading(self) -> bool:
        """True while this node is the coordinator."""
        ...

    @property
    def origin(self) -> str:
        """The origin that scopes the cluster's idempotency keys."""
        ...

    @property
    def forwarder(self) -> Forwarder:
        """Relays calls to the coordinator."""
        ...

    @property
    def hold_timeout(self) -> float:
        """How long a task call waits for a coordinator (ha.hold_timeout)."""
        ...

    async def settle(self, deadline: float, *, avoid: str = "") -> bool:
        """Return once a coordinator is ready (this node, or another whose
        address is not ``avoid``), or at event loop time ``deadline``;
        True if one is ready."""
        ...


class StandbyRelay:
    """The :class:`~praxis_grpc.routing.frontend.TaskFrontend` of an
    active-passive node: ``placement`` while it coordinates, a relay to the
    coordinator while it stands by."""

    def __init__(self, *, placement: TaskDispatcher, engine: TaskEngine, standby: Standby) -> None:
        self._placement = placement
        self._engine = engine
        self._standby = standby

    async def submit(
        self,
        submission: Submission,
        *,
        wait: bool = False,
        time_remaining: float | None = None,
        task_id: str | None = None,
        forwarded: bool = False,
    ) -> tuple[Task, bool]:
        """See :meth:`TaskFrontend.submit`. At a standby, a ``forwarded``
        submission is not relayed again: Unavailable names the coordinator."""
        generated = task_id is None
        if not self._standby.leading:
            # The relay, any resend and (if this node takes over meanwhile) the
            # local placement share one task id: a send that was accepted
            # after all is found by it, never accepted twice.
            task_id = task_id or new_task_id()
            relayed = await self._submit_at_coordinator(
                submission,
                wait=wait,
                time_remaining=time_remaining,
                task_id=task_id,
                generated=generated,
                forwarded=forwarded,
            )
            if relayed is not None:
                return relayed
        return await self._placement.place(
            submission, wait=wait, time_remaining=time_remaining, task_id=task_id, own_id=generated
        )

    async def _submit_at_coordinator(
        self,
        submission: Submission,
        *,
        wait: bool,
        time_remaining: float | None,
        task_id: str,
        generated: bool,
        forwarded: bool,
    ) -> tuple[Task, bool] | None:
        """Relay ``submission`` to the coordinator (see :meth:`_at_coordinator`).
        None: this node took over meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = math.inf if time_remaining is None else loop.time() + time_remaining
        sends = 0
        forwarder = self._standby.forwarder

        async def send() -> tuple[Task, bool]:
            nonlocal sends
            sends += 1
            return await forwarder.submit(
                submission,
                wait=wait,
                time_remaining=None if time_remaining is None else deadline - loop.time(),
                task_id=task_id,
                forwarded=forwarded,
            )

        relayed = await self._at_coordinator(send, deadline=deadline)
        if relayed is not None and sends > 1 and generated and relayed[0].task_id == task_id:
            return relayed[0], False  # our own earlier send, not the client's duplicate
        return relayed

    async def _at_coordinator(
        self, call: Callable[[], Awaitable[T]], *, deadline: float = math.inf
    ) -> T | None:
        """Run a relay to the coordinator, holding through an election or
        take-over for up to ``ha.hold_timeout`` (never past event loop time
        ``deadline``), and running it again, after another hold, when the
        coordinator did not answer. None: this node took over meanwhile
        (answer locally)."""
        standby = self._standby
        loop = asyncio.get_running_loop()
        hold_until = min(loop.time() + standby.hold_timeout, deadline)
        failed: RelayFailed | None = None
        while True:
            ready = await standby.settle(hold_until, avoid=_avoided(failed))
            if standby.leading:
                return None
            if failed is not None and not ready:
                raise failed  # no other coordinator within the hold
            try:
                return await call()
            except RelayFailed as exc:
                hold_until = min(loop.time() + standby.hold_timeout, deadline)
                if loop.time() >= hold_until:
                    raise
                log.info("relay to coordinator %s failed (%s); sending again", exc.address, exc)
                failed = exc
                if exc.redirected:
                    await asyncio.sleep(min(_REDIRECT_PAUSE, hold_until - loop.time()))

    async def get(self, task_id: str) -> Task:
        """The task, as last reported by its owner. Raises NotFound."""
        if self._relayed(task_id):
            forwarder = self._standby.forwarder
            relayed = await self._at_coordinator(lambda: forwarder.get(task_id))
            if relayed is not None:
                return relayed
        return await self._placement.get(task_id)

    async def list(
        self,
        *,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        page_token: str = "",
        local_only: bool = False,
    ) -> tuple[Sequence[Task], str]:
        """At a standby, unless ``local_only``, the coordinator's listing (the
        cluster's queue, which includes what this node runs); else this node's."""
        if not local_only and not self._standby.leading:
            forwarder = self._standby.forwarder
            relayed = await self._at_coordinator(
                lambda: forwarder.list(states=states, tool=tool, limit=limit, page_token=page_token)
            )
            if relayed is not None:
                return relayed
        return await self._placement.list(
            states=states, tool=tool, limit=limit, page_token=page_token
        )

    def page_token_after(self, task: Task) -> str:
        """See :meth:`TaskDispatcher.page_token_after` (one token format)."""
        return self._placement.page_token_after(task)

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """The task's states as they happen, wherever it runs."""
        if self._relayed(task_id):
            async for task in self._watch_at_coordinator(task_id):
                yield task
            return
        async for task in self._placement.watch(task_id):
            yield task

    async def _watch_at_coordinator(self, task_id: str) -> AsyncIterator[Task]:
        """Relay WatchTask; when the coordinator goes away mid-stream, hold for
        the next one and watch there (states already seen are not repeated)."""
        standby = self._standby
        loop = asyncio.get_running_loop()
        last: Task | None = None
        avoid = ""
        hold_until = loop.time() + standby.hold_timeout
        while True:
            await standby.settle(hold_until, avoid=avoid)
            stream = (
                self._placement.watch(task_id)
                if standby.leading
                else standby.forwarder.watch(task_id)
            )
            try:
                async for task in stream:
                    hold_until = loop.time() + standby.hold_timeout
                    if last is None or (task.state, task.updated_at) != (
                        last.state,
                        last.updated_at,
                    ):
                        last = task
                        yield task
                return
            except RelayFailed as exc:
                if last is not None and last.terminal:
                    return
                if loop.time() >= hold_until:
                    raise
                log.info("relayed watch of %s broke (%s); watching again", task_id, exc)
                avoid = _avoided(exc)
                if exc.redirected:
                    await asyncio.sleep(min(_REDIRECT_PAUSE, hold_until - loop.time()))

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel the task on whichever agent owns it."""
        if self._relayed(task_id):
            forwarder = self._standby.forwarder
            relayed = await self._at_coordinator(lambda: forwarder.cancel(task_id, reason))
            if relayed is not None:
                return relayed
        return await self._placement.cancel(task_id, reason)

    def _relayed(self, task_id: str) -> bool:
        """True when a call about ``task_id`` goes to the coordinator: this
        node stands by and has no copy it may answer for (none, or a copy of
        a cluster record it does not run, kept from when it coordinated:
        maybe stale)."""
        if self._standby.leading:
            return False
        try:
            task = self._engine.get(task_id)
        except NotFound:
            return True
        return (
            task.origin_agent_id == self._standby.origin
            and task.owner_agent_id != self._engine.agent_id
        )


def _avoided(failed: RelayFailed | None) -> str:
    """The coordinator address to wait past after ``failed``: one that did
    not answer. One that answered (naming another coordinator) is sent to
    again once this node's view agrees or the other node's view catches up."""
    if failed is None or failed.redirected:
        return ""
    return failed.address
