"""Two background jobs of the role switch, each owning its one task.

* :class:`LeaderProbe` (every role): watches the process of the node that
  leads and, when it is certainly gone, asks the backend to end its term now
  (:meth:`Suspecting.suspect`) instead of waiting for the backend's failure
  detector (etcd: the dead coordinator's lease TTL).
* :class:`RecordSweeper` (coordinator only): drops finished tasks older than
  the retention from the consensus state, so it (and Raft's snapshots) stays
  small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from praxis_grpc.consensus.base import Consensus, Leadership, Suspecting
from praxis_grpc.errors import PraxisError
from praxis_grpc.ha.records import ReplicatedRecords
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import PeerClient

log = logging.getLogger(__name__)

__all__ = ["LeaderProbe", "RecordSweeper"]


class LeaderProbe:
    """Watches the leader's process while another node leads."""

    def __init__(self, consensus: Consensus, peers: PeerClient, metrics: Metrics) -> None:
        self._consensus = consensus
        self._peers = peers
        self._metrics = metrics
        self._probed = Leadership()
        self._task: asyncio.Task[None] | None = None

    def follow(self, leadership: Leadership) -> None:
        """Probe ``leadership``'s leader if it is another node (and the
        backend can be told); stop probing the previous one. Idempotent."""
        if leadership == self._probed:
            return
        self._probed = leadership
        self.stop()
        suspecting = isinstance(self._consensus, Suspecting)
        if suspecting and leadership.known and not leadership.is_self and leadership.leader_address:
            self._task = asyncio.get_running_loop().create_task(
                self._suspect_when_gone(leadership), name="ha-probe"
            )

    def stop(self) -> None:
        """Stop probing (the task is cancelled; nothing waits for it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _suspect_when_gone(self, leadership: Leadership) -> None:
        consensus = self._consensus
        assert isinstance(consensus, Suspecting)
        evidence = await self._peers.wait_gone(leadership.leader_address)
        log.warning(
            "coordinator %s at %s is gone: %s",
            leadership.leader_id,
            leadership.leader_address,
            evidence,
        )
        if await consensus.suspect(leadership, evidence):
            self._metrics.consensus_suspicions_total.inc()


class RecordSweeper:
    """Expires finished records older than ``retention`` seconds while started."""

    def __init__(self, records: ReplicatedRecords, retention: float) -> None:
        self._records = records
        self._retention = retention
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sweeping (a coordinator that took over)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweep(), name="ha-sweep")

    async def stop(self) -> None:
        """Stop sweeping and wait until the sweep task has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep(self) -> None:
        records = self._records
        while True:
            await asyncio.sleep(min(self._retention / 10, 60.0))
            cutoff = datetime.now(UTC) - timedelta(seconds=self._retention)
            try:
                expired = await records.expire(cutoff)
            except PraxisError as exc:
                # Lost the leadership (step-down stops this), or consensus
                # did not answer this time: sweep again next time.
                log.info("record retention sweep failed: %s", exc.message)
                continue
            if expired:
                log.info("dropped %d finished task record(s) from the consensus state", expired)
