"""Following a delegated task until it is terminal, and acting when its owner is lost.

The entry node's half of delegation after the send
(:mod:`praxis_grpc.routing.delegation` sends; this module follows). Rules:

    - Following: every unfinished record has one follower that streams the
      owner's own record (:meth:`PeerClient.follow`) and mirrors each state
      into the record (only the terminal one is committed), which feeds
      ``GetTask``/``WatchTask`` at the entry node. A broken stream is
      re-opened; ``NOT_FOUND`` means the owner never received the task,
      which is then sent again.
    - Lost owner: when the owner's card is gone (disconnect grace or TTL), a
      task of an idempotent tool is re-dispatched to another capable agent
      (at-least-once execution); a task of a non-idempotent tool waits up to
      ``routing.owner_lost_timeout`` for the owner to come back and then ends
      FAILED with reason OWNER_LOST, since it may have run there. A task the
      owner provably never received is re-dispatched whatever its tool.
    - Bounded attempts: a re-dispatch sends the record's ``attempt`` along
      (``prior_attempts``) so the next owner counts on from it. A task that
      already started ``tasks.max_attempts`` times is not placed again but
      ends FAILED with reason POISONED: one task that stops every agent
      running it cannot walk through the whole mesh.
    - A follower never ends on an error: an infrastructure failure (a commit
      that timed out, a store error) is retried with jittered backoff, since
      it is the only one acting on its record until the next take-over or
      restart.

Everything runs on the node's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from praxis_grpc.cards import AgentCard
from praxis_grpc.config import RoutingConfig
from praxis_grpc.directory import CardDirectory
from praxis_grpc.errors import (
    FailedPrecondition,
    NotFound,
    PraxisError,
    ResourceExhausted,
    Unavailable,
)
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.routing.router import Candidate, Router
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Task, TaskError, TaskState
from praxis_grpc.tasks.recovery import poisoned

log = logging.getLogger(__name__)

OWNER_LOST = "OWNER_LOST"

__all__ = ["OWNER_LOST", "Follower", "Records"]


class Records(Protocol):
    """Where the entry node keeps its records of delegated tasks: the local
    store (:class:`TaskEngine`), or, on an active-passive coordinator,
    consensus first (:class:`~praxis_grpc.ha.records.ReplicatedRecords`)."""

    async def record(self, task: Task, *, durable: bool = True) -> Task:
        """Store the record (see :meth:`TaskEngine.record`)."""
        ...

    async def forget(self, task: Task) -> None:
        """Delete the record (see :meth:`TaskEngine.forget`)."""
        ...


class _Backoff:
    """Exponential delays from ``first`` to ``limit``, each jittered down by up
    to half, so followers failing together do not retry in step."""

    def __init__(self, first: float = 0.1, limit: float = 2.0) -> None:
        self._first, self._limit, self._next = first, limit, first

    def reset(self) -> None:
        self._next = self._first

    def __call__(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self._limit)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto


@dataclass
class _Absence:
    """A follower's view of its owner's card: missing since ``since`` (loop
    time; None while present), and whether it was ever seen."""

    since: float | None = None
    seen_owner: bool = False


class Follower:
    """Follows delegated records to their end; one per node, many tasks at once.

    It owns no tasks: :class:`~praxis_grpc.routing.delegation.Delegations`
    runs one :meth:`follow` per record and cancels it. What it needs from
    the delegations that started it comes through the constructor:

        - ``may_act(record)``: False while ``record`` is fenced and this node
          does not coordinate (nothing is acted on then).
        - ``mirror(record, remote)``: adopt the owner's report into the
          record, committing it when terminal; returns the current record.
          May raise ``Unavailable`` when the commit is refused.
        - ``hand_over(record, candidate)``: send ``record`` to ``candidate``
          (or run it here); True when it took it, False with nothing done
          otherwise. Never raises a :class:`PraxisError`.
        - ``tell_when_back(record, agent_id, moved_to)``: best effort, in
          the background, cancel the abandoned copy on ``agent_id``.
    """

    def __init__(
        self,
        *,
        engine: TaskEngine,
        records: Records,
        router: Router,
        directory: CardDirectory,
        peers: PeerClient,
        metrics: Metrics,
        config: RoutingConfig,
        discovery_wait: float,
        clock: Callable[[], datetime],
        max_attempts: int,
        may_act: Callable[[Task], bool],
        mirror: Callable[[Task, Task], Awaitable[Task]],
        hand_over: Callable[[Task, Candidate], Awaitable[bool]],
        tell_when_back: Callable[[Task, str, str], None],
    ) -> None:
        self._engine = engine
        self._records = records
        self._router = router
        self._directory = directory
        self._peers = peers
        self._metrics = metrics
        self._config = config
        self._discovery_wait = discovery_wait
        self._clock = clock
        self._max_attempts = max_attempts
        self._may_act = may_act
        self._mirror = mirror
        self._try = hand_over
        self._tell_when_back = tell_when_back

    async def follow(self, task_id: str) -> None:
        """Act on the record of ``task_id`` until it is terminal, forgotten, or
        owned by this node. Never raises but ``CancelledError``."""
        backoff = _Backoff()
        state = _Absence()
        while True:
            try:
                if await self._follow_step(task_id, backoff, state):
                    return
            except Exception as exc:
                # An infrastructure failure (a commit that timed out, a store
                # error) while acting on the record: this follower is the only
                # one acting on it until the next take-over or restart, so it
                # backs off and tries again instead of ending.
                delay = backoff()
                log.warning(
                    "following task %s failed (%r); retrying in %.1f s", task_id, exc, delay
                )
                await asyncio.sleep(delay)

    async def _follow_step(self, task_id: str, backoff: _Backoff, state: _Absence) -> bool:
        """Act once on the record of ``task_id``; True when following is over."""
        try:
            record = self._engine.get(task_id)
        except NotFound:
            return True  # the record was forgotten
        if record.terminal or record.owner_agent_id == self._engine.agent_id:
            return True
        if not self._may_act(record):
            # The backend reports the term lost. If the node steps down,
            # the role switch cancels this follower; if the report was a
            # blip (an etcd keepalive late after a pause) and the term
            # holds, following goes on: exiting here left the cluster's
            # record WORKING for good. Nothing is acted on meanwhile.
            await asyncio.sleep(backoff())
            return False
        if not record.owner_agent_id:
            await self._place_unplaced(record, backoff)
            return False
        address = grpc_address(self._directory.get(record.owner_agent_id))
        if address is None:
            await self._owner_absent(record, backoff, state)
            return False
        state.since, state.seen_owner = None, True
        outcome = await self._watch_owner(record, address, backoff)
        if outcome == "unknown":
            await self._resend(record)
        elif outcome == "broke":
            await asyncio.sleep(backoff())
        return outcome == "terminal"

    async def _owner_absent(self, record: Task, backoff: _Backoff, state: _Absence) -> None:
        """The owner's card is missing: wait for it (for a while if it was
        never seen: discovery may be late), then act as :meth:`_owner_lost` says."""
        now = asyncio.get_running_loop().time()
        since = state.since if state.since is not None else now
        state.since = since
        patience = 0.0 if state.seen_owner else self._discovery_wait
        if now - since >= patience and await self._owner_lost(record, now - since):
            state.since, state.seen_owner = None, False
            backoff.reset()
            return
        await asyncio.sleep(backoff())

    async def _watch_owner(
        self, record: Task, address: str, backoff: _Backoff
    ) -> Literal["terminal", "unknown", "broke"]:
        """Mirror the owner's reports of ``record`` until it is terminal
        (``terminal``), the owner does not know it (``unknown``), or the
        watch ends otherwise (``broke``: watch again after a pause)."""
        task_id = record.task_id
        stream = self._peers.follow(address, task_id)
        try:
            async for remote in stream:
                backoff.reset()
                try:
                    record = await self._mirror(record, remote)
                except Unavailable as exc:
                    # The report could not be committed (the term was reported
                    # lost, or consensus had no quorum): watch again and
                    # commit it then.
                    log.info("task %s: the owner's report was not committed: %s", task_id, exc)
                    return "broke"
                if record.terminal:
                    return "terminal"
        except NotFound:
            return "unknown"
        except PraxisError as exc:
            # The stream broke: the owner is lost, or its channel was closed
            # when its card was removed.
            log.debug("following task %s on %s broke: %s", task_id, address, exc)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return "broke"

    async def _place_unplaced(self, record: Task, backoff: _Backoff) -> None:
        """Place a record no agent ever received (a take-over found it
        dispatched to the new coordinator itself) now, whatever the tool;
        back off if no capable agent takes it."""
        if await self._redispatch(record, exclude=""):
            backoff.reset()
        else:
            await asyncio.sleep(backoff())

    async def _resend(self, record: Task) -> None:
        """The owner never received the task: send it again, or elsewhere."""
        if await self._poisoned(record):
            return
        candidate = self._capable(record, record.owner_agent_id)
        if candidate is not None:
            outcome = await self._try(record, candidate)
            if outcome:
                return
        # Never received, so never run: safe to place elsewhere whatever the tool.
        await self._redispatch(record, exclude=record.owner_agent_id)

    async def _owner_lost(self, record: Task, lost_for: float) -> bool:
        """Decide what happens to a task whose owner is gone. True if it moved on."""
        # A targeted task runs on its target or nowhere: it is not moved.
        if self._idempotent(record.tool) and not record.target_agent:
            return await self._redispatch(record, exclude=record.owner_agent_id)
        if lost_for < self._config.owner_lost_timeout:
            return False
        why = (
            "the task targets that agent"
            if record.target_agent
            else f"tool {record.tool!r} is not idempotent"
        )
        error = TaskError(
            OWNER_LOST,
            f"agent {record.owner_agent_id} was lost {lost_for:.0f}s ago while it owned the "
            f"task; {why}, so the task is not run elsewhere (it may or may not have run there)",
        )
        failed = record.finish_unsuccessfully(TaskState.FAILED, error, self._clock())
        await self._records.record(failed)
        self._router.ledger.end(record.owner_agent_id, record.task_id, self._clock())
        return True

    async def _redispatch(self, record: Task, exclude: str) -> bool:
        if await self._poisoned(record):
            return True
        try:
            plan = self._router.plan(
                record.tool,
                record.tags,
                record.preferred_agent,
                exclude=(exclude,),
                target_agent=record.target_agent,
            )
        except (FailedPrecondition, ResourceExhausted, NotFound, Unavailable) as exc:
            # NotFound, Unavailable: a targeted task's agent is unknown or has no address.
            log.info("task %s waits for a capable agent: %s", record.task_id, exc.message)
            return False
        for candidate in plan[: self._config.max_attempts]:
            if await self._try(record, candidate):
                self._router.ledger.end(exclude, record.task_id, self._clock())
                self._metrics.redispatches_total.inc()
                self._metrics.route_decisions_total.labels(record.tool, candidate.name).inc()
                if exclude:
                    log.info(
                        "task %s re-dispatched from lost agent %s to %s",
                        record.task_id,
                        exclude,
                        candidate.name,
                    )
                    self._tell_when_back(record, exclude, candidate.name)
                else:
                    log.info("task %s placed on %s", record.task_id, candidate.name)
                return True
        return False

    async def _poisoned(self, record: Task) -> bool:
        """End ``record`` FAILED (POISONED) if it started ``max_attempts`` times already."""
        if record.attempt < self._max_attempts:
            return False
        log.warning(
            "task %s started %d times without finishing; not placing it again",
            record.task_id,
            record.attempt,
        )
        error = poisoned(record, self._max_attempts)
        await self._records.record(
            record.finish_unsuccessfully(TaskState.FAILED, error, self._clock())
        )
        self._router.ledger.end(record.owner_agent_id, record.task_id, self._clock())
        return True

    def _capable(self, record: Task, agent_id: str) -> Candidate | None:
        try:
            found = self._router.candidates(record.tool, record.tags)
        except FailedPrecondition:
            return None
        return next((c for c in found if c.agent_id == agent_id), None)

    def _idempotent(self, tool: str) -> bool:
        """True when every known agent offering ``tool`` says it is idempotent."""
        flags = [
            info.idempotent
            for card in self._directory.cards(tool)
            for info in card.tools
            if info.name == tool
        ]
        return bool(flags) and all(flags)


def grpc_address(card: AgentCard | None) -> str | None:
    """The address to call ``card``'s agent at; None when unknown or absent."""
    if card is None:
        return None
    return card.peer_address or None
