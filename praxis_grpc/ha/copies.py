"""A standby's copies of the cluster's task records, brought up to what the
coordinator committed.

While a node coordinates it stores each cluster record locally after the
commit. When it steps down (or restarts as a standby) those local copies stop
changing: the next coordinator carries the tasks on and commits their outcome
to consensus, not to this store. :class:`StaleCopies` closes that gap: while
the node is a standby it reads the replicated records
(:meth:`Consensus.snapshot`, a local read on raft) and, for every unfinished
local copy of a cluster record,

    - stores the committed record when it differs (its outcome once the
      coordinator committed one: ``ListTasks`` with ``local_only`` then
      agrees with the coordinator);
    - deletes the copy when the replicated state no longer holds the task
      (its placement failed and the record was forgotten, or it finished
      longer than ``ha.record_retention`` ago: the coordinator's store keeps
      it), since this node neither runs it nor follows it.

It repeats, backing off, until no copy is unfinished (and for a few
seconds at least: a copy can still be stored after the step-down by a call
the node took as coordinator); a committed record
that names this node as owner is left alone (the dispatch brings the task
here). The backoff starts over whenever the node's view of the group changes
(:meth:`StaleCopies.kick`): a node cut off from the group reads its own stale
records (or none) pass after pass while its backoff grows, and when it
rejoins, the leader it learns of is the sign that the outcomes it missed are
arriving, so it looks again at once, not a whole backoff later. Reads of a
single task (``GetTask``, ``WatchTask``, ``CancelTask``) already go to the
coordinator for such copies (see the dispatcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from praxis_grpc.consensus.base import Consensus, ConsensusError
from praxis_grpc.errors import PraxisError
from praxis_grpc.ha.records import TASK_PREFIX, decode_task
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Task

log = logging.getLogger(__name__)

__all__ = ["StaleCopies"]


class StaleCopies:
    """Refreshes a standby's local copies of the records of ``origin`` (the cluster)."""

    def __init__(
        self,
        engine: TaskEngine,
        consensus: Consensus,
        origin: str,
        *,
        first_pause: float = 0.5,
        max_pause: float = 10.0,
        linger: float = 5.0,
    ) -> None:
        self._engine = engine
        self._consensus = consensus
        self._origin = origin
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._linger = linger
        self._kicked = asyncio.Event()

    def kick(self) -> None:
        """The view of the group changed (a leader is known again): a running
        :meth:`run` passes again now and starts its backoff over."""
        self._kicked.set()

    def unfinished(self) -> list[Task]:
        """The unfinished local copies of the cluster's records this node does not run."""
        return [t for t in self._engine.foreign_unfinished() if t.origin_agent_id == self._origin]

    async def refresh(self) -> int:
        """One pass over the unfinished copies (see the module docstring).

        Returns:
            How many copies are still unfinished afterwards.

        Raises:
            ConsensusError: the replicated records could not be read.
        """
        copies = self.unfinished()
        if not copies:
            return 0
        state = await self._consensus.snapshot()
        remaining = 0
        for copy in copies:
            data = state.get(TASK_PREFIX + copy.task_id)
            try:
                if data is None:
                    await self._engine.forget(copy)
                    continue
                committed = decode_task(data)
                if committed.owner_agent_id == self._engine.agent_id:
                    continue  # dispatched here: the task itself replaces the copy
                if committed != copy:
                    await self._engine.record(committed)
            except ValueError:
                continue  # the task runs here now (dispatched meanwhile)
            if not committed.terminal:
                remaining += 1
        return remaining

    async def run(self) -> None:
        """Refresh until no copy is unfinished, backing off between passes
        (the outcomes commit as the coordinator follows the tasks), and for
        at least ``linger`` seconds: a call this node took as coordinator can
        store its copy after the step-down (its commit landed while the node
        was paused, and returned when it woke), after a pass found nothing.
        Cancelled when this node takes over; never raises otherwise."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self._linger
        pause = self._first_pause
        while True:
            self._kicked.clear()
            try:
                remaining = await self.refresh()
            except (ConsensusError, PraxisError) as exc:
                log.info("cannot refresh the copies of cluster records yet: %s", exc)
                remaining = -1
            if remaining == 0 and loop.time() >= until:
                return
            # Not wait_for: in 3.11 it can swallow the cancellation of a
            # take-over that arrives as a kick has just set the event.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._kicked.wait()
            pause = self._first_pause if self._kicked.is_set() else min(pause * 2, self._max_pause)
