"""The active-passive role switch: COORDINATOR while this node leads the
consensus group, STANDBY otherwise.

Taking over (leadership gained in term T):
    1. read the committed task records (:meth:`Consensus.snapshot`): every
       task any coordinator acknowledged is there, with the agent it was
       dispatched to (records are committed before dispatch: write-ahead);
    2. store them locally and follow every unfinished one at its owner by
       task id (the owner dedups on it, so nothing runs twice; a task the
       owner never received is sent again, fenced with T);
    3. watch tasks this node itself executes (it was a worker) and commit
       their outcome;
    4. stop being a routing candidate: the coordinator coordinates.

Stepping down stops following; the records stay for the next coordinator.

A standby watches the coordinator's process and, when it is certainly gone,
asks the backend to end its term now (:class:`~praxis_grpc.ha.chores.LeaderProbe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from praxis_grpc.aio import cancelling
from praxis_grpc.consensus.base import Consensus, Leadership
from praxis_grpc.errors import NotFound
from praxis_grpc.ha.chores import LeaderProbe, RecordSweeper
from praxis_grpc.ha.copies import StaleCopies
from praxis_grpc.ha.fence import Fence
from praxis_grpc.ha.forwarding import Forwarder
from praxis_grpc.ha.office import Office
from praxis_grpc.ha.records import ReplicatedRecords, decode_snapshot
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.routing.delegation import Delegations
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Task

log = logging.getLogger(__name__)

# Idempotency keys of an active-passive cluster belong to the cluster, not to
# whichever node coordinated when the task arrived.
CLUSTER_ORIGIN = "coordinator"

# How long a dispatch fenced with a term newer than this node has seen waits
# for its view to catch up (a follower applies a new raft leader's claim about
# one heartbeat after it; etcd watchers see a new leader key at once).
_ADMIT_WAIT = 1.0
# Backoff of a role change that failed (a take-over, or the leadership watch).
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 5.0

__all__ = ["CLUSTER_ORIGIN", "HaController"]


class HaController:
    """Follows consensus leadership and plays the matching role."""

    def __init__(
        self,
        *,
        engine: TaskEngine,
        consensus: Consensus,
        office: Office,
        records: ReplicatedRecords,
        delegations: Delegations,
        peers: PeerClient,
        fence: Fence,
        metrics: Metrics,
        forward: bool,
        on_change: Callable[[], None],
        retention: float = 600.0,
        hold_timeout: float = 5.0,
    ) -> None:
        """``consensus`` (started by the caller before :meth:`run`) commits
        the coordinator's records (``records``, written through it first);
        ``office`` is this controller's to write, and read by the parts
        built before it (see :class:`~praxis_grpc.ha.office.Office`)."""
        self.hold_timeout = hold_timeout
        self._settled = asyncio.Event()
        self._probe = LeaderProbe(consensus, peers, metrics)
        self._sweeper = RecordSweeper(records, retention)
        self._consensus = consensus
        self._office = office
        self._engine = engine
        self._delegations = delegations
        self._fence = fence
        self._metrics = metrics
        self._on_change = on_change
        self._failed_take_overs = 0
        self._watchers: set[asyncio.Task[None]] = set()
        self._switch = asyncio.Lock()
        self._records = records
        self._peers = peers
        # A standby's refresh of its copies of cluster records (ha/copies.py).
        self._copies = StaleCopies(engine, consensus, CLUSTER_ORIGIN)
        self._refresher: asyncio.Task[None] | None = None
        self.forwarder = Forwarder(
            peers=peers,
            leadership=self._relay_target,
            enabled=forward,
            metrics=metrics,
        )

    @property
    def origin(self) -> str:
        """The origin scoping idempotency keys: the cluster."""
        return CLUSTER_ORIGIN

    async def admit(self, fencing_token: int) -> None:
        """Admit a dispatch carrying ``fencing_token`` or refuse it (see
        :class:`~praxis_grpc.ha.fence.Fence`). A token newer than any term
        this node has seen waits up to ``_ADMIT_WAIT`` for its view of the
        group to catch up (a coordinator that won a moment ago), then is
        refused without being remembered.

        Raises:
            FailedPrecondition: the dispatch is not fenced with a current term.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ADMIT_WAIT
        while fencing_token > self._observed_term() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                # Woken by a role switch; the backend's own view is re-read too.
                await asyncio.wait_for(self._settled.wait(), min(deadline - loop.time(), 0.05))
        self._fence.admit(fencing_token, self._observed_term())

    def _observed_term(self) -> int:
        return max(self._consensus.leadership().term, self._office.leadership.term)

    @property
    def leading(self) -> bool:
        """True while this node is the coordinator (took over in the current term)."""
        return self._office.leading

    @property
    def term(self) -> int:
        """The term this node coordinates in (0 when it does not, or when the
        backend already reports that term lost): its fencing token."""
        return self._office.term()

    @property
    def role(self) -> str:
        """``coordinator`` or ``standby``."""
        return "coordinator" if self.leading else "standby"

    def leadership(self) -> Leadership:
        """The latest leadership observed."""
        return self._office.leadership

    async def settle(self, deadline: float, *, avoid: str = "") -> bool:
        """Return once a coordinator is ready to take task calls, or at event
        loop time ``deadline``, whichever is first; True if one is ready.

        Ready: this node took over, or another node leads (and its gRPC
        address is not ``avoid``, a coordinator a relay just failed to reach).
        """
        if self._ready(avoid):
            return True
        loop = asyncio.get_running_loop()
        self._metrics.task_calls_held.inc()
        try:
            while not self._ready(avoid):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), remaining)
            return True
        finally:
            self._metrics.task_calls_held.dec()

    def _ready(self, avoid: str) -> bool:
        leader = self._office.leadership
        if leader.is_self or self._names_self(leader):
            # Named but not leading: an old claim of ours (a raft member that
            # stepped down keeps it until it applies the next one); never a
            # coordinator to relay to.
            return self.leading
        return leader.known and leader.leader_address != avoid

    def _names_self(self, leader: Leadership) -> bool:
        return leader.known and leader.leader_id == self._engine.agent_id

    def _relay_target(self) -> Leadership:
        """The coordinator relays go to: none while the latest view names this
        node without it leading (see :meth:`_ready`)."""
        leader = self._office.leadership
        if self._names_self(leader) and not leader.is_self:
            return Leadership(term=leader.term)
        return leader

    def _announce(self) -> None:
        """Wake the calls waiting in :meth:`settle` to look again."""
        settled, self._settled = self._settled, asyncio.Event()
        settled.set()

    async def run(self) -> None:
        """Follow leadership changes until cancelled or
        until the backend's feed ends (the member was closed).

        Survives every failure of a role change: taking over is retried with
        backoff, stepping down always ends as a standby, and a broken watch
        is opened again; each is logged and counted
        (``praxis_role_switch_errors_total``). A return or exception from
        here means this node no longer follows leadership: its owner must
        stop serving (see ``Node``).
        """
        consensus = self._consensus
        pause = _FIRST_PAUSE
        while True:
            try:
                async for leadership in consensus.watch():
                    pause = _FIRST_PAUSE
                    await self._changed(leadership)
                return
            except Exception:
                self._metrics.role_switch_errors_total.labels("watch").inc()
                log.exception("following the leadership failed; watching again in %gs", pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)

    async def aclose(self) -> None:
        """Stop the watchers of local tasks (the records stay)."""
        self._probe.stop()
        await self._stop_refresher()
        await self._sweeper.stop()
        await self._stop_watchers()

    def _refresh_copies(self) -> None:
        """As a standby: bring the local copies of cluster records (kept from
        when this node coordinated) up to the committed records; a refresh
        already running looks again at once (the leadership changed)."""
        if self._refresher is not None and not self._refresher.done():
            self._copies.kick()
            return
        self._refresher = asyncio.get_running_loop().create_task(
            self._copies.run(), name="ha-copies"
        )

    async def _stop_refresher(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    async def _changed(self, leadership: Leadership) -> None:
        self._probe.follow(leadership)
        async with self._switch:
            previous, self._office.leadership = self._office.leadership, leadership
            self._metrics.consensus_term.set(leadership.term)
            if leadership.leader_id != previous.leader_id and leadership.known:
                self._metrics.consensus_leader_changes_total.inc()
            if self._office.leading_term and (
                not leadership.is_self or leadership.term != self._office.leading_term
            ):
                # Lost, or elected again in a newer term: what the old term
                # started ends with it (a new term starts from the records).
                await self._step_down()
            if leadership.is_self and self._office.leading_term != leadership.term:
                try:
                    await self._take_over(leadership.term)
                    self._failed_take_overs = 0
                except Exception:
                    # Holding the election without coordinating would stall the
                    # cluster: try again shortly (the snapshot read may succeed).
                    self._metrics.role_switch_errors_total.labels("take_over").inc()
                    log.exception("take-over in term %d failed; retrying", leadership.term)
                    self._retry_take_over(leadership)
            if leadership.leader_address != previous.leader_address:
                self.forwarder.abandon(leadership)
            if not self.leading:
                self._refresh_copies()
            self._metrics.consensus_is_leader.set(1 if self.leading else 0)
            self._on_change()
            self._announce()

    async def _take_over(self, term: int) -> None:
        log.info("taking over as coordinator in term %d", term)
        await self._stop_refresher()
        # Before anything is dispatched or adopted: a predecessor's dispatch
        # (older term) is refused here too.
        self._fence.take_office(term)
        self._office.seated = True
        # Not leading until the records are loaded: a submission meanwhile is
        # refused (UNAVAILABLE) rather than missing the idempotency keys.
        snapshot = await self._consensus.snapshot()
        follow: list[Task] = []
        watch: list[Task] = []
        for task in decode_snapshot(snapshot):
            try:
                await self._resume(task, follow, watch)
            except Exception:
                log.exception("cannot resume task %s; continuing the take-over", task.task_id)
        self._office.leading_term = term
        self._sweeper.start()
        for task in follow:
            self._delegations.follow(task)
        for task in watch:
            self._watch_local(task)
        log.info(
            "coordinator in term %d resumed %d unfinished task(s)", term, len(follow) + len(watch)
        )

    async def _resume(self, task: Task, follow: list[Task], watch: list[Task]) -> None:
        """Load one committed record; note whether to follow or watch it."""
        local = _get(self._engine, task.task_id)
        if local is not None and local.owner_agent_id == self._engine.agent_id:
            # We run (or ran) it. If the records name another owner, it was
            # re-dispatched away from us; either way our outcome is reported
            # and the first terminal state recorded wins.
            if not (task.terminal and local.terminal):
                watch.append(local)
            return
        if task.owner_agent_id == self._engine.agent_id:
            # Dispatched to us but never arrived: place it again.
            task = task.reassign("", task.updated_at) if not task.terminal else task
        if task.terminal:
            self._records.note(task)
            if local is None or not local.terminal:
                await self._engine.record(task)
            return
        await self._engine.record(task)
        follow.append(task)

    def _retry_take_over(self, leadership: Leadership) -> None:
        self._failed_take_overs += 1
        delay = min(_FIRST_PAUSE * 2**self._failed_take_overs, _MAX_PAUSE)

        async def retry() -> None:
            await asyncio.sleep(delay)
            if self._office.leadership == leadership and not self.leading:
                await self._changed(leadership)

        retrying = asyncio.get_running_loop().create_task(retry())
        self._watchers.add(retrying)
        retrying.add_done_callback(self._watchers.discard)

    def _watch_local(self, task: Task) -> None:
        records = self._records

        async def report() -> None:
            final = await self._engine.wait(task.task_id)
            await records.replicate(final)

        watcher = asyncio.get_running_loop().create_task(report())
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _step_down(self) -> None:
        """Become a standby: cancel everything the term started (sweeper,
        followers and their re-dispatches, watchers of local tasks, take-over
        retries). Never raises (but for the caller's own cancellation): each
        step is attempted, and a failure is logged and counted."""
        log.info("stepping down as coordinator of term %d", self._office.leading_term)
        self._office.leading_term = 0
        self._office.seated = False
        for step in (self._sweeper.stop, self._delegations.stop_following, self._stop_watchers):
            try:
                await step()
            except Exception:
                self._metrics.role_switch_errors_total.labels("step_down").inc()
                log.exception("stepping down: %s failed; carrying on", step.__name__)

    async def _stop_watchers(self) -> None:
        watchers = [w for w in self._watchers if w is not asyncio.current_task()]
        for watcher in watchers:
            watcher.cancel()
        for watcher in watchers:
            try:
                await watcher
            except asyncio.CancelledError:
                if cancelling():
                    raise
            except Exception as exc:
                log.warning("%s ended with %r while stepping down", watcher.get_name(), exc)


def _get(engine: TaskEngine, task_id: str) -> Task | None:
    try:
        return engine.get(task_id)
    except NotFound:
        return None
