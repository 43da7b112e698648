"""What a raft member's state says, in the log, when an operator needs it.

pysyncobj logs nothing about elections, terms or how far a member's log got,
so a member that stops following its group (it keeps an old term, or knows
the new term but applies nothing) leaves no trace. :class:`RaftWatch` logs
each change of term or leader with the member's log, commit and applied
indexes (rare: once per election), and warns once per term when the member
has followed a leader for ``lag_warning`` seconds without applying that
leader's claim (the state the coordinator election reads).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("praxis_grpc.consensus.raft")

__all__ = ["RaftWatch"]


class RaftWatch:
    """Watches one member; :meth:`on_tick` runs on pysyncobj's thread after each tick.

    Args:
        address: the member's raft address (named in each line).
        lag_warning: seconds a followed leader's claim may stay unapplied
            before the warning.
    """

    def __init__(self, address: str, lag_warning: float = 5.0) -> None:
        self._address = address
        self._lag_warning = lag_warning
        self._seen: tuple[int, str | None] | None = None
        self._lagging_since: float | None = None
        self._warned_term = 0

    def on_tick(self, node: Any, claim_term: int, now: float) -> None:
        """``node``: the SyncObj; ``claim_term``: the term of the last applied
        leadership claim (0: none); ``now``: a monotonic time in seconds."""
        term = int(node.raftCurrentTerm)
        leader = node._getLeader()
        leader_address = getattr(leader, "address", None) if leader is not None else None
        if (term, leader_address) != self._seen:
            self._seen = (term, leader_address)
            self._lagging_since = None
            log.info(
                "raft %s: term %d, leader %s (log %d entries, commit %d, applied %d)",
                self._address,
                term,
                leader_address or "unknown",
                node._getRaftLogSize(),
                node.raftCommitIndex,
                node.raftLastApplied,
            )
        if leader_address is None or claim_term >= term:
            self._lagging_since = None
            return
        if self._lagging_since is None:
            self._lagging_since = now
        elif now - self._lagging_since >= self._lag_warning and self._warned_term != term:
            self._warned_term = term
            log.warning(
                "raft %s: following %s in term %d for %.0f s, but the newest leadership "
                "claim applied is of term %d (log %d entries, commit %d, applied %d)",
                self._address,
                leader_address,
                term,
                now - self._lagging_since,
                claim_term,
                node._getRaftLogSize(),
                node.raftCommitIndex,
                node.raftLastApplied,
            )
