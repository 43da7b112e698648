"""Delegation: sending a task to the agent that runs it, and cancelling it there.

The node that accepted a task from its client (the *entry* node) keeps a
record of it in its own store, owned by the agent that executes it. Rules:

    - Write-ahead: the record is committed before the owner is called, so a
      crash of the entry node at any point leaves a record to re-attach from.
    - One identity: the owner is sent the record's task id (a
      :class:`~praxis_grpc.peers.base.Dispatch`), and dedups on it, so
      sending the same task again (a retry, a re-attach after a restart)
      never executes it twice on that owner.
    - Following: every unfinished record has one follower (a task running
      :meth:`~praxis_grpc.routing.following.Follower.follow`, which says how
      owners are followed, and what happens when one is lost); this module
      starts and stops them. The record's ``attempt`` mirrors the owner's.
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
from collections.abc import Callable
from datetime import UTC, datetime

from praxis_grpc.aio import cancelling
from praxis_grpc.config import RoutingConfig
from praxis_grpc.directory import CardDirectory
from praxis_grpc.errors import NotFound, PraxisError, Unavailable
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.routing.following import OWNER_LOST, Follower, Records, grpc_address
from praxis_grpc.routing.handover import Handover, Mandate, Refusal
from praxis_grpc.routing.router import Candidate, Router
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Task, TaskError, TaskState

log = logging.getLogger(__name__)

__all__ = ["OWNER_LOST", "Delegations", "Records", "Refusal"]


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
        self.records: Records = records or engine
        self._mandate = Mandate(fencing_token, fenced_origin)
        self._may_act = self._mandate.may_act
        self._router = router
        self._directory = directory
        self._peers = peers
        self._config = config
        self._clock = clock
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._handover = Handover(
            engine=engine,
            records=self.records,
            router=router,
            peers=peers,
            metrics=metrics,
            config=config,
            clock=clock,
            mandate=self._mandate,
            follow=self.follow,
        )
        self._follower = Follower(
            engine=engine,
            records=self.records,
            router=router,
            directory=directory,
            peers=peers,
            metrics=metrics,
            config=config,
            discovery_wait=discovery_wait,
            clock=clock,
            max_attempts=max_attempts,
            may_act=self._may_act,
            mirror=self._handover.mirror,
            hand_over=self._handover.hand_over,
            tell_when_back=self._tell_when_back,
        )
        metrics.delegated_tasks_following.set_function(lambda: len(self._followers))

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
        return self._mandate.term()

    def check_term(self, term: int) -> None:
        """Refuse to act for ``term`` (the term a placement began in) unless
        this node still coordinates in that very term; no-op when not fenced.

        Raises:
            Unavailable: the term ended (or the node never coordinated).
        """
        self._mandate.check_term(term)

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
        fenced with ``term`` (see :meth:`term`). The contract, returns and
        raises included, is :meth:`~praxis_grpc.routing.handover.Handover.dispatch`'s."""
        return await self._handover.dispatch(
            record, candidate, wait=wait, call_timeout=call_timeout, term=term, follow=follow
        )

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
            self._follower.follow(record.task_id), name=f"follow-{record.task_id}"
        )
        self._followers[record.task_id] = follower
        follower.add_done_callback(lambda _: self._followed(record.task_id, follower))
        return True

    def _followed(self, task_id: str, follower: asyncio.Task[None]) -> None:
        if self._followers.get(task_id) is follower:
            del self._followers[task_id]
        if not follower.cancelled() and follower.exception() is not None:
            log.error("following task %s failed", task_id, exc_info=follower.exception())

    async def _stop_following(self, task_id: str) -> None:
        follower = self._followers.pop(task_id, None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    def _tell_when_back(self, record: Task, agent_id: str, moved_to: str) -> None:
        """Best effort: cancel the abandoned copy if the lost agent comes back
        (while this node may act on ``record``)."""
        task_id = record.task_id

        async def tell() -> None:
            deadline = asyncio.get_running_loop().time() + self._config.owner_lost_timeout
            while asyncio.get_running_loop().time() < deadline and self._may_act(record):
                address = grpc_address(self._directory.get(agent_id))
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
        address = grpc_address(self._directory.get(record.owner_agent_id))
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
        return await self._handover.mirror(record, remote)

    async def _cancel_here(self, record: Task, message: str) -> Task:
        canceled = record.finish_unsuccessfully(
            TaskState.CANCELED, TaskError("CANCELED", message), self._clock()
        )
        stored = await self.records.record(canceled)
        self._router.ledger.end(record.owner_agent_id, record.task_id, self._clock())
        return stored


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
