"""Delegation: running a task on another agent and following it to its end.

The node that accepted a task from its client (the *entry* node) keeps a
record of it in its own store, owned by the agent that executes it. Rules:

    - Write-ahead: the record is committed before the owner is called, so a
      crash of the entry node at any point leaves a record to re-attach from.
    - One identity: the owner is sent the record's task id (a
      :class:`~praxis_grpc.peers.base.Dispatch`), and dedups on it, so
      sending the same task again (a retry, a re-attach after a restart)
      never executes it twice on that owner.
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
    - Bounded attempts: the record's ``attempt`` mirrors the owner's, and a
      re-dispatch sends it along (``prior_attempts``) so the next owner counts
      on from it. A task that already started ``tasks.max_attempts`` times is
      not placed again but ends FAILED with reason POISONED: one task that
      stops every agent running it cannot walk through the whole mesh.
    - The first terminal state the entry node records is final.
    - Fenced (active-passive, the records of ``fenced_origin``): only the
      coordinator acts on them, and only for the term it acts in. Every
      dispatch carries that term; right before each external effect (sending
      a task, re-dispatching it, running it here) the term is checked again,
      so work in flight when the node lost the term (a placement whose
      commit returned after it, a follower started by it) is abandoned: the
      next coordinator resumes it from the records.

Every call to another node goes through the node's
:class:`~praxis_grpc.peers.base.PeerClient`. Everything runs on the node's
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from praxis_grpc.aio import cancelling
from praxis_grpc.cards import AgentCard
from praxis_grpc.config import RoutingConfig
from praxis_grpc.directory import CardDirectory
from praxis_grpc.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PraxisError,
    ResourceExhausted,
    Unavailable,
)
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import Dispatch, PeerClient, PeerLost
from praxis_grpc.routing.router import Candidate, Router
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Submission, Task, TaskError, TaskState
from praxis_grpc.tasks.recovery import poisoned
from praxis_grpc.tasks.results import storable

log = logging.getLogger(__name__)

OWNER_LOST = "OWNER_LOST"

__all__ = ["OWNER_LOST", "Delegations", "Refusal"]


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


@dataclass(frozen=True)
class Refusal:
    """An agent did not take a task; the caller may try another.

    Attributes:
        kind: ``saturated`` (its queue is full), ``unavailable`` (it could
            not be reached) or ``refused`` (draining, or it no longer offers
            the tool with those tags).
        error: The error as the agent (or the channel) reported it.
    """

    kind: Literal["saturated", "unavailable", "refused"]
    agent: str
    error: PraxisError


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


class Delegations:
    """Sends tasks to other agents and follows them until they finish."""

    def __init__(
        self,
        *,
        engine: TaskEngine,
        router: Router,
        directory: CardDirectory,
        peers: PeerClient,
        metrics: Metrics,
        config: RoutingConfig,
        discovery_wait: float,
        records: Records | None = None,
        fencing_token: Callable[[], int] = lambda: 0,
        fenced_origin: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 3,
    ) -> None:
        """See the class docstring; ``fenced_origin`` (an active-passive
        cluster's origin) names the records acted on only while
        ``fencing_token()`` is not 0, that is while this node coordinates:
        a node that stepped down starts no follower of them."""
        self._engine = engine
        self._max_attempts = max_attempts
        self.records: Records = records or engine
        self._fencing_token = fencing_token
        self._fenced_origin = fenced_origin
        self._router = router
        self._directory = directory
        self._peers = peers
        self._metrics = metrics
        self._config = config
        self._discovery_wait = discovery_wait
        self._clock = clock
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._absent: set[str] = set()
        metrics.delegated_tasks_following.set_function(lambda: len(self._followers))
        self._accepted = metrics.delegations_total.labels("accepted")

    def start(self, skip_origin: str = "") -> int:
        """Re-attach to every unfinished task the store records as delegated.

        Args:
            skip_origin: Leave records of this origin alone: an active-passive
                cluster's records are resumed by whichever node coordinates.

        Returns:
            How many tasks are followed again.
        """
        unfinished = [
            record
            for record in self._engine.foreign_unfinished()
            if not skip_origin or record.origin_agent_id != skip_origin
        ]
        for record in unfinished:
            self._router.ledger.begin(record.owner_agent_id, record.task_id, self._clock())
            self.follow(record)
        return len(unfinished)

    async def stop_following(self) -> None:
        """Stop every follower, and every cancellation sent after a re-dispatch:
        the work this node started while it coordinated (the records stay;
        :meth:`follow` resumes one).

        Never raises for them: a follower that had already failed (say, its
        last commit was refused because this node lost the leadership) is
        logged. Raises only ``CancelledError`` when the caller is cancelled.
        """
        followers = dict(self._followers)
        await _stop([*followers.values(), *self._background])
        for task_id, follower in followers.items():
            if self._followers.get(task_id) is follower:
                del self._followers[task_id]

    async def aclose(self) -> None:
        """Stop following (the records stay; :meth:`start` re-attaches later)."""
        await self.stop_following()

    # -- term -------------------------------------------------------------

    def term(self) -> int:
        """The term this node coordinates in, which its dispatches carry as
        their fencing token (0: none; always 0 in active-active mode)."""
        return self._fencing_token()

    def check_term(self, term: int) -> None:
        """Refuse to act for ``term`` (the term a placement began in) unless
        this node still coordinates in that very term; no-op when not fenced.

        Raises:
            Unavailable: the term ended (or the node never coordinated).
        """
        if self._fenced_origin and (term == 0 or self._fencing_token() != term):
            raise Unavailable(
                f"this node no longer coordinates in term {term}; the coordinator "
                "that took over resumes the task"
            )

    def _may_act(self, record: Task) -> bool:
        """False when ``record`` is fenced and this node does not coordinate."""
        fenced = bool(self._fenced_origin) and record.origin_agent_id == self._fenced_origin
        return not fenced or self._fencing_token() != 0

    # -- dispatch ---------------------------------------------------------

    async def dispatch(
        self,
        record: Task,
        candidate: Candidate,
        *,
        wait: bool,
        call_timeout: float | None,
        term: int,
        follow: bool = True,
    ) -> Task | Refusal:
        """Send ``record`` (committed, owned by ``candidate``) to its agent,
        fenced with ``term``, the term the caller acts in (see :meth:`term`).

        Returns:
            The task as the agent accepted it (terminal when ``wait`` and it
            finished in time), or a :class:`Refusal` when the agent did not
            take it: the caller may try another agent.

        Raises:
            InvalidArgument, AlreadyExists: the agent rejected the request
                itself; no other agent would accept it.
            DeadlineExceeded: the caller's deadline passed while waiting; the
                task goes on and is followed.
            Unavailable: this node no longer coordinates in ``term`` (a commit
                that returned after it lost): nothing was sent.
        """
        try:
            self.check_term(term)
        except Unavailable:
            if follow:
                self.follow(record)  # by this node if it coordinates in a newer term
            raise
        loop = asyncio.get_running_loop()
        started = loop.time()
        ledger = self._router.ledger
        ledger.begin(candidate.agent_id, record.task_id, self._clock())
        try:
            accepted = await self._peers.dispatch(
                candidate.address, _dispatch(record, wait, term), call_timeout=call_timeout
            )
        except PraxisError as exc:
            return await self._dispatch_failed(exc, record, candidate, wait=wait, follow=follow)
        except asyncio.CancelledError:
            # Our client went away (or the channel closed under the call);
            # whatever the agent did, follow the task.
            followed = not follow or self.follow(record)
            if cancelling():
                raise
            if not followed:
                raise _handed_over(record) from None
            if wait:
                return await self._engine.wait(record.task_id)
            return self._engine.get(record.task_id)
        finally:
            self._metrics.delegation_duration_seconds.observe(loop.time() - started)
        self._accepted.inc()
        current = await self._mirror(record, accepted.task)
        if follow and not current.terminal:
            self.follow(current)
        return current

    async def _dispatch_failed(
        self,
        error: PraxisError,
        record: Task,
        candidate: Candidate,
        *,
        wait: bool,
        follow: bool,
    ) -> Task | Refusal:
        refusal: Refusal | None = None
        if isinstance(error, ResourceExhausted):
            refusal = Refusal("saturated", candidate.name, error)
        elif isinstance(error, FailedPrecondition | NotFound):
            refusal = Refusal("refused", candidate.name, error)
        elif isinstance(error, PeerLost) and not error.sent:
            refusal = Refusal("unavailable", candidate.name, error)
        elif isinstance(error, InvalidArgument | AlreadyExists):
            self._router.ledger.end(candidate.agent_id, record.task_id, self._clock())
            self._metrics.delegations_total.labels("invalid").inc()
            raise error
        if refusal is not None:
            self._router.ledger.end(candidate.agent_id, record.task_id, self._clock())
            self._metrics.delegations_total.labels(refusal.kind).inc()
            return refusal
        # The agent may or may not have the task: the follower finds out
        # (WatchTask answers NOT_FOUND if it never arrived, and it is re-sent).
        self._metrics.delegations_total.labels("error").inc()
        log.info(
            "delegation of task %s to %s ended with %s; following it",
            record.task_id,
            candidate.name,
            error,
        )
        if follow and not self.follow(record):
            raise _handed_over(record)
        if isinstance(error, DeadlineExceeded) and wait:
            raise DeadlineExceeded(
                f"the deadline passed before task {record.task_id} finished; it goes on"
            )
        if wait:
            return await self._engine.wait(record.task_id)
        return self._engine.get(record.task_id)

    # -- following --------------------------------------------------------

    def follow(self, record: Task) -> bool:
        """Follow ``record`` until it is terminal (no-op if already followed).

        Returns:
            False, following nothing, if it is a record of the coordinated
            origin and this node does not coordinate (the coordinator
            follows it); True otherwise.
        """
        if record.terminal or record.task_id in self._followers:
            return True
        if not self._may_act(record):
            log.info("not following task %s: this node no longer coordinates", record.task_id)
            return False
        follower = asyncio.get_running_loop().create_task(
            self._follow(record.task_id), name=f"follow-{record.task_id}"
        )
        self._followers[record.task_id] = follower
        follower.add_done_callback(lambda _: self._followed(record.task_id, follower))
        return True

    def _followed(self, task_id: str, follower: asyncio.Task[None]) -> None:
        if self._followers.get(task_id) is follower:
            del self._followers[task_id]
        self._absent.discard(task_id)
        if not follower.cancelled() and follower.exception() is not None:
            log.error("following task %s failed", task_id, exc_info=follower.exception())

    async def _stop_following(self, task_id: str) -> None:
        follower = self._followers.pop(task_id, None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def _follow(self, task_id: str) -> None:
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
        address = _grpc_address(self._directory.get(record.owner_agent_id))
        if address is None:
            await self._owner_absent(record, backoff, state)
            return False
        self._absent.discard(task_id)
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
        self._absent.add(record.task_id)
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

    async def _mirror(self, record: Task, remote: Task) -> Task:
        """Adopt the owner's report; commit it when terminal. Returns the record."""
        current = self._engine.get(record.task_id)
        if current.terminal or current.owner_agent_id != record.owner_agent_id:
            return current  # decided already, or re-dispatched meanwhile
        mirrored = storable(current.mirror(remote), self._engine.limits.max_result_bytes)
        if (mirrored.state, mirrored.attempt, mirrored.timeout) == (
            current.state,
            current.attempt,
            current.timeout,
        ):
            return current
        stored = await self.records.record(mirrored, durable=mirrored.terminal)
        if stored.terminal:
            self._router.ledger.end(stored.owner_agent_id, stored.task_id, self._clock())
        return stored

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
        if self._idempotent(record.tool):
            return await self._redispatch(record, exclude=record.owner_agent_id)
        if lost_for < self._config.owner_lost_timeout:
            return False
        error = TaskError(
            OWNER_LOST,
            f"agent {record.owner_agent_id} was lost {lost_for:.0f}s ago while it owned the "
            f"task; tool {record.tool!r} is not idempotent, so the task is not run "
            "elsewhere (it may or may not have run there)",
        )
        failed = record.finish_unsuccessfully(TaskState.FAILED, error, self._clock())
        await self.records.record(failed)
        self._router.ledger.end(record.owner_agent_id, record.task_id, self._clock())
        return True

    async def _redispatch(self, record: Task, exclude: str) -> bool:
        if await self._poisoned(record):
            return True
        try:
            plan = self._router.plan(
                record.tool, record.tags, record.preferred_agent, exclude=(exclude,)
            )
        except (FailedPrecondition, ResourceExhausted) as exc:
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
        await self.records.record(
            record.finish_unsuccessfully(TaskState.FAILED, error, self._clock())
        )
        self._router.ledger.end(record.owner_agent_id, record.task_id, self._clock())
        return True

    async def _try(self, record: Task, candidate: Candidate) -> bool:
        """Hand ``record`` to ``candidate``; True when it took it. False,
        with nothing done, when fenced and this node no longer coordinates."""
        now = self._clock()
        term = self.term()
        if not self._may_act(record):
            return False
        if candidate.local:
            await self._engine.adopt(record)
            return True
        if record.owner_agent_id != candidate.agent_id:
            record = await self.records.record(record.reassign(candidate.agent_id, now))
        try:
            outcome = await self.dispatch(
                record,
                candidate,
                wait=False,
                call_timeout=self._config.call_timeout,
                term=term,
                follow=False,
            )
        except PraxisError as exc:
            log.warning("task %s cannot be sent to %s: %s", record.task_id, candidate.name, exc)
            return False
        return not isinstance(outcome, Refusal)

    def _tell_when_back(self, record: Task, agent_id: str, moved_to: str) -> None:
        """Best effort: cancel the abandoned copy if the lost agent comes back
        (while this node may act on ``record``)."""
        task_id = record.task_id

        async def tell() -> None:
            deadline = asyncio.get_running_loop().time() + self._config.owner_lost_timeout
            while asyncio.get_running_loop().time() < deadline and self._may_act(record):
                address = _grpc_address(self._directory.get(agent_id))
                if address is not None:
                    with contextlib.suppress(PraxisError):
                        await self._peers.cancel(
                            address,
                            task_id,
                            f"re-dispatched to {moved_to}",
                            call_timeout=self._config.call_timeout,
                        )
                        return
                await asyncio.sleep(1.0)

        background = asyncio.get_running_loop().create_task(tell(), name=f"tell-{agent_id}")
        self._background.add(background)
        background.add_done_callback(self._background.discard)

    # -- cancel -----------------------------------------------------------

    async def cancel(self, record: Task, reason: str) -> Task:
        """Cancel a delegated task at its owner (or here, if the owner is gone).

        Raises:
            Unavailable: the owner is known but cannot be reached; the task goes on.
        """
        await self._stop_following(record.task_id)
        try:
            return await self._cancel(self._engine.get(record.task_id), reason)
        finally:
            current = self._engine.get(record.task_id)
            if current.owner_agent_id != self._engine.agent_id:
                self.follow(current)

    async def _cancel(self, record: Task, reason: str) -> Task:
        if record.terminal:
            return record
        message = reason or "canceled by client"
        address = _grpc_address(self._directory.get(record.owner_agent_id))
        if address is None:
            self._tell_when_back(record, record.owner_agent_id, "nobody (canceled)")
            return await self._cancel_here(record, f"{message} (owner unreachable)")
        try:
            remote = await self._peers.cancel(
                address, record.task_id, message, call_timeout=self._config.call_timeout
            )
        except NotFound:
            return await self._cancel_here(record, message)  # it never got there
        except PraxisError as exc:
            raise Unavailable(
                f"cannot reach agent {record.owner_agent_id} to cancel task "
                f"{record.task_id} ({exc.message}); the task goes on"
            ) from None
        return await self._mirror(record, remote)

    async def _cancel_here(self, record: Task, message: str) -> Task:
        canceled = record.finish_unsuccessfully(
            TaskState.CANCELED, TaskError("CANCELED", message), self._clock()
        )
        stored = await self.records.record(canceled)
        self._router.ledger.end(record.owner_agent_id, record.task_id, self._clock())
        return stored

    # -- helpers ----------------------------------------------------------

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


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them; one that failed is logged, not raised."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            if cancelling():
                raise
        except Exception as exc:
            log.warning("%s ended with %r when it was stopped", task.get_name(), exc)


def _handed_over(record: Task) -> Unavailable:
    """The answer for a dispatch that ended without an outcome after this node
    stopped coordinating: the next coordinator follows the task."""
    return Unavailable(
        f"this node is no longer the coordinator; task {record.task_id} goes on under the"
        " next one (ask it, or retry with the same task id or idempotency key)"
    )


def _grpc_address(card: AgentCard | None) -> str | None:
    if card is None:
        return None
    return card.grpc_address or None


def _dispatch(record: Task, wait: bool, fencing_token: int) -> Dispatch:
    """The dispatch of ``record``: identical on every send of one task to one
    agent (a re-dispatch carries the attempts made so far)."""
    return Dispatch(
        task_id=record.task_id,
        submission=Submission(
            tool=record.tool,
            arguments=record.arguments,
            idempotency_key=record.idempotency_key,
            timeout=record.timeout if record.timeout > 0 else None,
            tags=record.tags,
            preferred_agent=record.preferred_agent,
        ),
        origin_agent_id=record.origin_agent_id,
        fencing_token=fencing_token,
        prior_attempts=record.attempt,
        wait=wait,
    )
