"""Handing a task to the agent that runs it: one send, and what its answer means.

:class:`Handover` is the sending half of
:class:`~praxis_grpc.routing.delegation.Delegations` (whose docstring gives
the rules): it sends a committed record to its owner through the
:class:`~praxis_grpc.peers.base.PeerClient`, tells a refusal (the caller may
try another agent) from an outcome it cannot know (the task is followed),
and mirrors the owner's reports into the record. :class:`Mandate` says
whether this node may act on a record: in active-passive mode only the
coordinator may, and only in the term it acts in.

Everything runs on the node's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from praxis_grpc.aio import cancelling
from praxis_grpc.config import RoutingConfig
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
from praxis_grpc.routing.following import Records
from praxis_grpc.routing.router import Candidate, Router
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Submission, Task
from praxis_grpc.tasks.results import storable

log = logging.getLogger(__name__)

__all__ = ["Handover", "Mandate", "Refusal"]


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


@dataclass(frozen=True)
class Mandate:
    """Whether this node may act on a record, and in which term.

    Attributes:
        fencing_token: The term this node coordinates in (0: none; always 0
            in active-active mode). Cheap, never blocks.
        fenced_origin: An active-passive cluster's origin: its records are
            acted on only while ``fencing_token()`` is not 0 ("" : none).
    """

    fencing_token: Callable[[], int]
    fenced_origin: str

    def term(self) -> int:
        """The term this node coordinates in, which its dispatches carry as
        their fencing token (0: none; always 0 in active-active mode)."""
        return self.fencing_token()

    def check_term(self, term: int) -> None:
        """Refuse to act for ``term`` (the term a placement began in) unless
        this node still coordinates in that very term; no-op when not fenced.

        Raises:
            Unavailable: the term ended (or the node never coordinated).
        """
        if self.fenced_origin and (term == 0 or self.fencing_token() != term):
            raise Unavailable(
                f"this node no longer coordinates in term {term}; the coordinator "
                "that took over resumes the task"
            )

    def may_act(self, record: Task) -> bool:
        """False when ``record`` is fenced and this node does not coordinate."""
        fenced = bool(self.fenced_origin) and record.origin_agent_id == self.fenced_origin
        return not fenced or self.fencing_token() != 0


class Handover:
    """Sends committed records to their owners; see the module docstring.

    ``follow(record)`` (from :class:`Delegations`) starts following a record
    whose outcome this module cannot know; it returns False, following
    nothing, when this node may not act on the record.
    """

    def __init__(
        self,
        *,
        engine: TaskEngine,
        records: Records,
        router: Router,
        peers: PeerClient,
        metrics: Metrics,
        config: RoutingConfig,
        clock: Callable[[], datetime],
        mandate: Mandate,
        follow: Callable[[Task], bool],
    ) -> None:
        self._engine = engine
        self._records = records
        self._router = router
        self._peers = peers
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._mandate = mandate
        self._follow = follow
        self._accepted = metrics.delegations_total.labels("accepted")

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
        fenced with ``term``, the term the caller acts in (see :meth:`Mandate.term`).

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
            self._mandate.check_term(term)
        except Unavailable:
            if follow:
                self._follow(record)  # by this node if it coordinates in a newer term
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
            followed = not follow or self._follow(record)
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
        current = await self.mirror(record, accepted.task)
        if follow and not current.terminal:
            self._follow(current)
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
        if follow and not self._follow(record):
            raise _handed_over(record)
        if isinstance(error, DeadlineExceeded) and wait:
            raise DeadlineExceeded(
                f"the deadline passed before task {record.task_id} finished; it goes on"
            )
        if wait:
            return await self._engine.wait(record.task_id)
        return self._engine.get(record.task_id)

    async def mirror(self, record: Task, remote: Task) -> Task:
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
        stored = await self._records.record(mirrored, durable=mirrored.terminal)
        if stored.terminal:
            self._router.ledger.end(stored.owner_agent_id, stored.task_id, self._clock())
        return stored

    async def hand_over(self, record: Task, candidate: Candidate) -> bool:
        """Hand ``record`` to ``candidate``; True when it took it. False,
        with nothing done, when fenced and this node no longer coordinates."""
        now = self._clock()
        term = self._mandate.term()
        if not self._mandate.may_act(record):
            return False
        if candidate.local:
            await self._engine.adopt(record)
            return True
        if record.owner_agent_id != candidate.agent_id:
            record = await self._records.record(record.reassign(candidate.agent_id, now))
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


def _handed_over(record: Task) -> Unavailable:
    """The answer for a dispatch that ended without an outcome after this node
    stopped coordinating: the next coordinator follows the task."""
    return Unavailable(
        f"this node is no longer the coordinator; task {record.task_id} goes on under the"
        " next one (ask it, or retry with the same task id or idempotency key)"
    )


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
            submitter=record.submitter,
            target_agent=record.target_agent,
        ),
        origin_agent_id=record.origin_agent_id,
        fencing_token=fencing_token,
        prior_attempts=record.attempt,
        wait=wait,
    )
