"""etcd's own leader failover, as the yardstick for praxis' coordinator failover.

:func:`leader_failover` starts a 3-member :class:`EtcdCluster` on 127.0.0.1
with the given heartbeat and election timeout and, per trial, SIGKILLs the
member that leads etcd's Raft group, polls every survivor's Maintenance
Status (each survivor on its own thread, back to back) and records when the
first survivor, and when every survivor, reports a leader other than the
dead one. The member is then started again on its ports and data, and the
next trial waits until the cluster is healthy. Blocking; every wait is
bounded.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass, field

import grpc

from praxis_grpc.testing.etcd_cluster import EtcdCluster, EtcdClusterError

_POLL = 0.005
_STATUS_TIMEOUT = 0.5


@dataclass
class EtcdFailover:
    """Leader failovers of one etcd timing.

    Attributes:
        heartbeat: Seconds.
        election_timeout: Seconds.
        first_s: Per trial, SIGKILL until a survivor reported a new leader.
        agreed_s: Per trial, SIGKILL until every survivor reported the same
            new leader (None: not within the timeout).
        error: Why the run stopped early, if it did.
    """

    heartbeat: float
    election_timeout: float
    first_s: list[float | None] = field(default_factory=list)
    agreed_s: list[float | None] = field(default_factory=list)
    error: str = ""

    @property
    def label(self) -> str:
        """``heartbeat/election`` in ms."""
        return f"{self.heartbeat * 1000:.0f}/{self.election_timeout * 1000:.0f} ms"


def leader_failover(
    heartbeat: float, election_timeout: float, trials: int, timeout: float
) -> EtcdFailover:
    """Run ``trials`` leader kills on a fresh cluster; errors end up in the result."""
    result = EtcdFailover(heartbeat, election_timeout)
    cluster = EtcdCluster(3, heartbeat=heartbeat, election_timeout=election_timeout)
    try:
        cluster.start()
        for _ in range(trials):
            old = cluster.wait_leader(timeout)
            first, agreed = _kill_and_watch(cluster, old, timeout)
            result.first_s.append(first)
            result.agreed_s.append(agreed)
            cluster.restart(old, wait=True)
    except (EtcdClusterError, OSError, grpc.RpcError) as exc:
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        cluster.close()
    return result


def _kill_and_watch(
    cluster: EtcdCluster, old: int, timeout: float
) -> tuple[float | None, float | None]:
    old_id = cluster.members[old].member_id
    survivors = [m.index for m in cluster.members if m.index != old]
    seen: dict[int, float] = {}
    leaders: dict[int, int] = {}
    lock = threading.Lock()
    done = threading.Event()

    def watch(index: int, killed_at: float) -> None:
        while not done.is_set() and time.monotonic() - killed_at < timeout:
            try:
                leader = cluster.status(index, timeout=_STATUS_TIMEOUT).leader
            except grpc.RpcError:
                leader = 0
            if leader not in (0, old_id):
                with lock:
                    seen[index], leaders[index] = time.monotonic() - killed_at, leader
                return
            time.sleep(_POLL)

    with concurrent.futures.ThreadPoolExecutor(len(survivors)) as pool:
        killed_at = time.monotonic()
        cluster.kill(old)
        futures = [pool.submit(watch, index, killed_at) for index in survivors]
        try:
            concurrent.futures.wait(futures, timeout=timeout + 2 * _STATUS_TIMEOUT)
        finally:
            done.set()
    first = min(seen.values(), default=None)
    agreed = max(seen.values()) if len(seen) == len(survivors) else None
    if len(set(leaders.values())) > 1:
        agreed = None
    return first, agreed
