"""The task front door of a node: route each submission, act on any task.

``TaskService`` calls only this. A submission is placed by the
:class:`~praxis_grpc.routing.router.Router` on the local engine or, through
:class:`~praxis_grpc.routing.delegation.Delegations`, on another agent; reads,
watches and cancels work the same whichever agent owns the task.

Placement tries up to ``routing.max_attempts`` agents in the router's order.
An agent that refuses (saturated, draining, unreachable before the request
left) costs nothing but a try; once an agent accepted, the task is its.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from praxis_grpc.cards import ToolInfo
from praxis_grpc.config import RoutingConfig
from praxis_grpc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PraxisError,
    ResourceExhausted,
    Unavailable,
    quote,
)
from praxis_grpc.ha.forwarding import Forwarder, RelayFailed
from praxis_grpc.metrics import Metrics
from praxis_grpc.routing.delegation import Delegations, Refusal
from praxis_grpc.routing.router import Candidate, Router
from praxis_grpc.tasks.engine import EngineLimits, TaskEngine
from praxis_grpc.tasks.model import Submission, Task, TaskState
from praxis_grpc.tasks.store import Cursor
from praxis_grpc.tools.validation import ArgumentValidator

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["Standby", "TaskDispatcher"]


class Standby(Protocol):
    """What the dispatcher needs of active-passive HA (absent: active-active)."""

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


class TaskDispatcher:
    """Routes submissions and serves tasks wherever they run."""

    def __init__(
        self,
        *,
        engine: TaskEngine,
        router: Router,
        delegations: Delegations,
        metrics: Metrics,
        config: RoutingConfig,
        limits: EngineLimits,
        standby: Standby | None = None,
    ) -> None:
        self._engine = engine
        self._standby = standby
        self._router = router
        self._delegations = delegations
        self._metrics = metrics
        self._config = config
        self._limits = limits
        self._validators: dict[tuple[str, str], ArgumentValidator] = {}
        self._validator_of: dict[int, tuple[ToolInfo, ArgumentValidator]] = {}
        self._decisions: dict[tuple[str, str], object] = {}

    async def submit(
        self,
        submission: Submission,
        *,
        wait: bool = False,
        time_remaining: float | None = None,
        task_id: str | None = None,
        forwarded: bool = False,
    ) -> tuple[Task, bool]:
        """Accept ``submission`` on the best capable agent.

        In active-passive mode only the coordinator routes; a standby relays
        the submission to it (:class:`~praxis_grpc.ha.forwarding.Forwarder`).
        ``forwarded``: the submission was relayed here by a standby; if this
        node does not coordinate either, it answers Unavailable naming the
        coordinator instead of relaying it again.

        Returns:
            The task (terminal when ``wait``) and whether it was deduplicated.

        Raises:
            InvalidArgument, AlreadyExists: the request is at fault.
            FailedPrecondition: no capable agent.
            ResourceExhausted: every capable agent is saturated.
            Unavailable: no capable agent could be reached; or no coordinator
                (active-passive), naming it when known.
            DeadlineExceeded: ``wait`` and the deadline passed; the task goes on.
        """
        generated = task_id is None
        if self._standby is not None and not self._standby.leading:
            # The relay, any resend and (if this node takes over meanwhile) the
            # local placement share one task id: a send that was accepted
            # after all is found by it, never accepted twice.
            task_id = task_id or str(uuid.uuid4())
            relayed = await self._submit_at_coordinator(
                self._standby,
                submission,
                wait=wait,
                time_remaining=time_remaining,
                task_id=task_id,
                generated=generated,
                forwarded=forwarded,
            )
            if relayed is not None:
                return relayed
        existing = self._engine.find_duplicate(submission, task_id, self._origin)
        if existing is not None:
            # Our own earlier relay of this call is not the client's duplicate.
            return await self._waited(existing, wait), not (
                generated and existing.task_id == task_id
            )
        if not self._engine.accepting:
            self._metrics.tasks_rejected_total.labels("draining").inc()
            raise FailedPrecondition("node is draining and accepts no new tasks")
        self._validate(submission)
        return await self._place(
            submission, wait, time_remaining, task_id or self._engine.new_task_id()
        )

    async def _submit_at_coordinator(
        self,
        standby: Standby,
        submission: Submission,
        *,
        wait: bool,
        time_remaining: float | None,
        task_id: str,
        generated: bool,
        forwarded: bool,
    ) -> tuple[Task, bool] | None:
        """Relay ``submission`` to the coordinator (see :meth:`_at_coordinator`).
        Every send carries ``task_id``, so a coordinator that accepted an
        earlier one deduplicates the next. None: this node took over meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = math.inf if time_remaining is None else loop.time() + time_remaining
        sends = 0

        async def send() -> tuple[Task, bool]:
            nonlocal sends
            sends += 1
            return await standby.forwarder.submit(
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
        assert standby is not None
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

    async def _place(
        self, submission: Submission, wait: bool, time_remaining: float | None, task_id: str
    ) -> tuple[Task, bool]:
        """Try the router's candidates in order until one accepts.

        In active-passive mode the placement acts for the term it began in:
        if that term ends, it stops before its next external effect (a
        dispatch, even of a record whose commit returned after the term ended,
        or running the task here) and raises Unavailable.
        """
        term = self._delegations.term()
        plan = self._router.plan(submission.tool, submission.tags, submission.preferred_agent)
        refusals: list[Refusal] = []
        record: Task | None = None
        for candidate in plan[: self._config.max_attempts]:
            self._decided(submission.tool, candidate)
            if candidate.local:
                if record is not None:
                    await self._delegations.records.forget(record)
                    record = None
                self._delegations.check_term(term)
                local = await self._submit_here(submission, task_id, candidate)
                if isinstance(local, Refusal):
                    refusals.append(local)
                    continue
                return await self._waited(local[0], wait), local[1]
            self._validator(candidate).validate(submission.arguments)
            record = await self._recorded(record, submission, candidate, task_id)
            if record.task_id != task_id:  # an equal request with the same key won a race
                return await self._waited(record, wait), True
            timeout = time_remaining if wait else _min(time_remaining, self._config.call_timeout)
            try:
                outcome = await self._delegations.dispatch(
                    record, candidate, wait=wait, call_timeout=timeout, term=term
                )
            except PraxisError as exc:
                if not _task_goes_on(exc):
                    await self._delegations.records.forget(record)
                raise
            if isinstance(outcome, Refusal):
                refusals.append(outcome)
                continue
            return outcome, False
        if record is not None:
            await self._delegations.records.forget(record)
        raise _refused(submission.tool, refusals)

    async def _submit_here(
        self, submission: Submission, task_id: str, candidate: Candidate
    ) -> tuple[Task, bool] | Refusal:
        try:
            return await self._engine.submit(submission, task_id=task_id)
        except ResourceExhausted as exc:
            return Refusal("saturated", candidate.name, exc)
        except FailedPrecondition as exc:
            return Refusal("refused", candidate.name, exc)

    async def get(self, task_id: str) -> Task:
        """The task, as last reported by its owner. Raises NotFound."""
        local = self._local_or_none(task_id)
        if local is not None:
            return local
        if self._standby is None or self._standby.leading:
            raise NotFound(f"task {quote(task_id)} not found")
        forwarder = self._standby.forwarder
        relayed = await self._at_coordinator(lambda: forwarder.get(task_id))
        return relayed if relayed is not None else await self.get(task_id)

    async def list(
        self,
        *,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        page_token: str = "",
        local_only: bool = False,
    ) -> tuple[Sequence[Task], str]:
        """Tasks newest first (see :meth:`TaskEngine.list`): those this node
        accepted or owns; at an active-passive standby, unless ``local_only``,
        the coordinator's (the cluster's queue, which includes what this node
        runs)."""
        if not local_only and self._standby is not None and not self._standby.leading:
            forwarder = self._standby.forwarder
            relayed = await self._at_coordinator(
                lambda: forwarder.list(states=states, tool=tool, limit=limit, page_token=page_token)
            )
            if relayed is not None:
                return relayed
        return self._engine.list(states=states, tool=tool, limit=limit, page_token=page_token)

    @staticmethod
    def page_token_after(task: Task) -> str:
        """The ``page_token`` of the listing that continues right after
        ``task`` (a task of a page :meth:`list` returned, whichever node's),
        for a page cut short; same filter as that page."""
        return Cursor.at(task).encode()

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """The task's states as they happen, wherever it runs."""
        local = self._local_or_none(task_id)
        if local is None:
            if self._standby is None or self._standby.leading:
                raise NotFound(f"task {quote(task_id)} not found")
            async for task in self._watch_at_coordinator(self._standby, task_id):
                yield task
            return
        async for task in self._engine.watch(task_id):
            yield task

    async def _watch_at_coordinator(self, standby: Standby, task_id: str) -> AsyncIterator[Task]:
        """Relay WatchTask; when the coordinator goes away mid-stream, hold for
        the next one and watch there (states already seen are not repeated)."""
        loop = asyncio.get_running_loop()
        last: Task | None = None
        avoid = ""
        hold_until = loop.time() + standby.hold_timeout
        while True:
            await standby.settle(hold_until, avoid=avoid)
            stream = self.watch(task_id) if standby.leading else standby.forwarder.watch(task_id)
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
        task = self._local_or_none(task_id)
        if task is None:
            if self._standby is None or self._standby.leading:
                raise NotFound(f"task {quote(task_id)} not found")
            forwarder = self._standby.forwarder
            relayed = await self._at_coordinator(lambda: forwarder.cancel(task_id, reason))
            return relayed if relayed is not None else await self.cancel(task_id, reason)
        if task.terminal or task.owner_agent_id == self._engine.agent_id:
            return await self._engine.cancel(task_id, reason)
        return await self._delegations.cancel(task, reason)

    def _local_or_none(self, task_id: str) -> Task | None:
        """The task as this node knows it, or None when only the coordinator
        does: a standby's copy of a cluster record (from when it coordinated)
        may be stale, so it does not answer for it."""
        try:
            task = self._engine.get(task_id)
        except NotFound:
            return None
        stale = (
            self._standby is not None
            and not self._standby.leading
            and task.origin_agent_id == self._standby.origin
            and task.owner_agent_id != self._engine.agent_id
        )
        return None if stale else task

    @property
    def _origin(self) -> str:
        return self._standby.origin if self._standby is not None else self._engine.agent_id

    async def _waited(self, task: Task, wait: bool) -> Task:
        if wait and not task.terminal:
            return await self._engine.wait(task.task_id)
        return task

    def _validate(self, submission: Submission) -> None:
        """Checks this node applies before placing a task anywhere (the size
        of the arguments is checked on the wire, in api.task_service)."""
        if submission.timeout is not None:
            if submission.timeout <= 0:
                raise InvalidArgument("timeout", "must be positive")
            if submission.timeout > self._limits.max_timeout:
                raise InvalidArgument(
                    "timeout",
                    f"{submission.timeout:g}s exceeds this node's maximum of "
                    f"{self._limits.max_timeout:g}s",
                )

    def _validator(self, candidate: Candidate) -> ArgumentValidator:
        # Cards are immutable, so the same ToolInfo object has the same schema:
        # look it up by identity before serializing the schema.
        seen = self._validator_of.get(id(candidate.tool))
        if seen is not None and seen[0] is candidate.tool:
            return seen[1]
        validator = self._validator_for_schema(candidate)
        if len(self._validator_of) > 256:
            self._validator_of.clear()
        self._validator_of[id(candidate.tool)] = (candidate.tool, validator)
        return validator

    def _validator_for_schema(self, candidate: Candidate) -> ArgumentValidator:
        schema = json.dumps(candidate.tool.input_schema, sort_keys=True)
        key = (candidate.tool.name, schema)
        validator = self._validators.get(key)
        if validator is None:
            try:
                validator = ArgumentValidator(candidate.tool.name, candidate.tool.input_schema)
            except ValueError as exc:
                raise FailedPrecondition(f"agent {candidate.name}: {exc}") from None
            if len(self._validators) > 1024:
                self._validators.clear()
            self._validators[key] = validator
        return validator

    async def _record(
        self, record: Task | None, submission: Submission, candidate: Candidate, task_id: str
    ) -> Task:
        now = datetime.now(UTC)
        if record is not None:
            return await self._delegations.records.record(record.reassign(candidate.agent_id, now))
        # Always fingerprinted: a later submission with this task id (or key)
        # but another request is ALREADY_EXISTS here, as at the owner.
        fingerprint = submission.fingerprint()
        return await self._delegations.records.record(
            Task(
                task_id=task_id,
                tool=submission.tool,
                arguments=submission.arguments,
                state=TaskState.SUBMITTED,
                created_at=now,
                updated_at=now,
                owner_agent_id=candidate.agent_id,
                origin_agent_id=self._origin,
                idempotency_key=submission.idempotency_key,
                timeout=submission.timeout or 0.0,
                tags=submission.tags,
                preferred_agent=submission.preferred_agent,
                request_fingerprint=fingerprint,
            )
        )

    async def _recorded(
        self, record: Task | None, submission: Submission, candidate: Candidate, task_id: str
    ) -> Task:
        """:meth:`_record`, carried to its end when the caller is cancelled (its
        client went away, or a standby abandoned the relay): the record is then
        followed, so the task reaches its owner as after a take-over. Otherwise
        a committed record would be sent nowhere and followed by no one, while
        a retry of the submission finds it and acknowledges it."""
        step = asyncio.ensure_future(self._record(record, submission, candidate, task_id))
        try:
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            log.info("placement of task %s cancelled while recording it; following it", task_id)
            step.add_done_callback(self._follow_recorded)
            raise

    def _follow_recorded(self, step: asyncio.Future[Task]) -> None:
        if not step.cancelled() and step.exception() is None:
            self._delegations.follow(step.result())

    def _decided(self, tool: str, candidate: Candidate) -> None:
        key = (tool, candidate.name)
        counter = self._decisions.get(key)
        if counter is None:
            counter = self._metrics.route_decisions_total.labels(tool, candidate.name)
            self._decisions[key] = counter
        counter.inc()  # type: ignore[attr-defined]


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _task_goes_on(exc: PraxisError) -> bool:
    # After a deadline the task is (probably) accepted and followed.
    return not isinstance(exc, InvalidArgument | AlreadyExists)


def _refused(tool: str, refusals: Sequence[Refusal]) -> PraxisError:
    detail = "; ".join(f"{r.agent}: {r.error.message}" for r in refusals)
    if refusals and all(r.kind == "saturated" for r in refusals):
        hints = [r.error.retry_after for r in refusals if isinstance(r.error, ResourceExhausted)]
        return ResourceExhausted(
            f"every agent tried for tool {quote(tool)} is saturated ({detail})",
            retry_after=min(hints, default=1.0),
        )
    if any(r.kind == "unavailable" for r in refusals):
        return Unavailable(f"no agent tried for tool {quote(tool)} took the task ({detail})")
    return FailedPrecondition(f"no agent tried for tool {quote(tool)} took the task ({detail})")


# How long a relay waits before it tries again a node that answered it is not
# the coordinator (yet): views of a new election reach nodes a moment apart.
_REDIRECT_PAUSE = 0.05


def _avoided(failed: RelayFailed | None) -> str:
    """The coordinator address to wait past after ``failed``: one that did
    not answer. One that answered (naming another coordinator) is sent to
    again once this node's view agrees or the other node's view catches up."""
    if failed is None or failed.redirected:
        return ""
    return failed.address
