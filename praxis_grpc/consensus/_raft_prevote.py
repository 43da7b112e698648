"""Pre-vote (Raft thesis §9.6) in front of pysyncobj 0.3.17, which has none.

Without it, a member cut off from the group raises its term at every election
timeout while its connections look open, and the first vote request it sends
after the partition heals carries a term above the leader's, so the leader
steps down and the group holds an election it did not need.

With :class:`PreVote` a member whose election timeout runs out first asks the
others whether they would vote for it in the next term, without changing its
own term. A member says yes only if it is not the leader, has not heard from a
leader within its own minimum election timeout, would not have to raise its
term to vote (the asked term is not below its own) and the asker's log is at
least as up to date as its own; a no carries its term, which the asker takes
if greater (as etcd does, so that two members whose terms drifted apart
without an election do not refuse each other forever). Only with a majority
of yeses does the asker start a real election (pysyncobj's, unchanged). A cut
off member thus keeps its term, and after the heal follows the leader again.

Elections that pysyncobj starts on purpose skip the pre-vote: a leadership
transfer (``timeout_now``) and :meth:`RaftConsensus.suspect` set the election
deadline to 0, which is left alone.

pysyncobj keeps its election timer in a private attribute; this module takes
that timer over (parks it at infinity and keeps its own deadline, moved
whenever pysyncobj restarts the timer: an AppendEntries from a leader, a vote
granted, an election started). Members without pre-vote ignore the new message
types, so a member that has it cannot start an election by timeout in a group
where most members lack it (transfers and :meth:`suspect` still work).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from pysyncobj.monotonic import monotonic  # type: ignore[import-untyped,unused-ignore]

__all__ = ["PreVote"]

_DEADLINE = "_SyncObj__raftElectionDeadline"
_Send = Callable[[Any, dict[str, Any]], Any]


class PreVote:
    """Pre-vote for one pysyncobj member; every method runs on its thread.

    Args:
        syncobj: the member.
        send: the transport's ``send(node, message)``.
    """

    def __init__(self, syncobj: Any, send: _Send) -> None:
        self._obj = syncobj
        self._send = send
        self._due = monotonic() + self._timeout()
        self._heard = -math.inf  # the last AppendEntries from a leader
        self._asking = 0  # the term asked about in the round under way
        self._yes: set[str] = set()

    def on_append_entries(self, message: dict[str, Any]) -> None:
        if message.get("term", -1) >= self._obj.raftCurrentTerm:
            self._heard = monotonic()

    def on_tick(self) -> None:
        """After every tick: keep pysyncobj's timer parked; ask for votes when ours runs out."""
        obj, now = self._obj, monotonic()
        if obj._isLeader():
            self._due, self._asking = now + self._timeout(), 0
            setattr(obj, _DEADLINE, math.inf)
            return
        deadline = getattr(obj, _DEADLINE)
        if deadline == 0:
            return  # a transfer or suspect(): an election without pre-vote
        if deadline != math.inf:
            self._due = deadline  # pysyncobj restarted its timer
            setattr(obj, _DEADLINE, math.inf)
        if now < self._due:
            return
        self._due = now + self._timeout()
        self._asking, self._yes = obj.raftCurrentTerm + 1, {obj.selfNode.id}
        last_index, last_term = _last_entry(obj)
        for node in obj.otherNodes:
            self._send(
                node,
                {
                    "type": "pre_vote",
                    "term": self._asking,
                    "last_log_index": last_index,
                    "last_log_term": last_term,
                },
            )
        self._count()

    def on_request(self, node: Any, message: dict[str, Any]) -> None:
        obj = self._obj
        last_index, last_term = _last_entry(obj)
        granted = (
            not obj._isLeader()
            and monotonic() - self._heard >= obj.conf.raftMinTimeout
            # At our own term too: its election then cannot raise ours.
            and message["term"] >= obj.raftCurrentTerm
            and (message["last_log_term"], message["last_log_index"]) >= (last_term, last_index)
        )
        self._send(
            node,
            {
                "type": "pre_vote_response",
                "term": message["term"],
                "granted": granted,
                "current_term": obj.raftCurrentTerm,
            },
        )

    def on_response(self, node: Any, message: dict[str, Any]) -> None:
        obj, current = self._obj, message.get("current_term", 0)
        if not message["granted"] and current > obj.raftCurrentTerm and not obj._isLeader():
            # A member whose term passed ours without us (its vote requests
            # were lost) would refuse us forever, and we it if our log is
            # longer: take its term, as Raft does from any reply, so that our
            # next round asks for one above it.
            obj._SyncObj__setCurrentTerm(current, None)
        elif message["granted"] and message["term"] == self._asking:
            self._yes.add(node.id)
            self._count()

    def _count(self) -> None:
        obj = self._obj
        if obj._isLeader() or obj.raftCurrentTerm + 1 != self._asking:
            self._asking = 0  # the round is stale: a leader or a newer term showed up
            return
        if len(self._yes) > (len(obj.otherNodes) + 1) / 2:
            self._asking = 0
            setattr(obj, _DEADLINE, 0)  # pysyncobj's next tick starts the election

    def _timeout(self) -> float:
        conf = self._obj.conf
        low, high = conf.raftMinTimeout, conf.raftMaxTimeout
        return float(low + (high - low) * random.random())  # noqa: S311 - jitter, not crypto


def _last_entry(obj: Any) -> tuple[int, int]:
    last = obj._SyncObj__raftLog[-1]
    return int(last[1]), int(last[2])
