"""Raft's AppendEntries receiver rule, enforced in front of pysyncobj 0.3.17.

pysyncobj 0.3.17 handles an AppendEntries whose ``prevLogIdx`` matches by
deleting *every* entry after ``prevLogIdx`` and appending what the message
carries. Raft (§5.3, receiver step 3) deletes only from the first entry that
*conflicts* (same index, other term). The two differ when a follower receives
a message that is shorter than its log: a duplicate or a resend. pysyncobj's
leader resends on its own (a ``next_node_idx`` reply lowers ``nextIndex``
below what it already sent; a batch is cut at ``appendEntriesBatchSizeBytes``;
an entry larger than that travels alone), so its followers truncate
committed, already applied entries (the ``CRITICAL … truncating
already-applied log entries`` log line) until the rest arrives. While the
leader's ``matchIndex`` still counts them, a leader crash in that window elects
the truncated follower with a log that lacks committed entries: they are lost
to the group, and the new leader never applies what it later writes at their
indexes (tests/integration/test_raft_log_guard.py reproduces it).

:class:`ReceiverRuleTransport` rewrites each such message before pysyncobj
sees it, so pysyncobj's handler only ever deletes conflicting entries:

- entries the log already holds (same index and term) are dropped from the
  message, and ``prevLogIdx`` moves to the last of them;
- if nothing new is left and the log goes on past the message, pysyncobj gets
  the message without its log part (it still learns the leader, the term and
  the commit index, capped at the last entry the message vouched for, as
  §5.3 step 5 says) and the leader gets the success reply pysyncobj would
  have sent, for that same entry.

A message that fails the consistency check (the log lacks ``prevLogIdx`` or
holds another term there) is refused with the index the leader should send
from next, and it is always the same index until the log changes: the entry
after the last one the follower knows the leader holds too (its commit index,
or its last entry if that is of the leader's term). pysyncobj's own refusal
names ``prevLogIdx`` (one step back) or, past the log end, the log end, and
its leader moves its next index past whatever it sent; a leader that sends a
follower two messages per round trip of that follower therefore had each step
back undone by the refusal of its second message, and a deposed leader holding
writes of its own applied nothing until the leader compacted its log (issue
10). pysyncobj still gets the message, without its log part and without a
commit index beyond its own, so it learns the leader and the term.

pysyncobj handles every snapshot chunk but the last as a heartbeat and
commits up to its own log end, whose tail, on a deposed leader, holds writes
of its old term the group never committed: it applied them (and their callers
heard success) before the last chunk replaced its state. A snapshot chunk
reaches pysyncobj with a commit index no higher than the member's own; the
next AppendEntries after the snapshot commits as usual.

Messages of an older term and the chunks of a large entry reach pysyncobj
unchanged. The rewrite reads pysyncobj's private journal and transfer buffer,
so it is tied to the pinned version; :func:`check_pysyncobj_version` refuses
any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pysyncobj import pickle as pysyncobj_pickle  # type: ignore[import-untyped,unused-ignore]
from pysyncobj.monotonic import monotonic as monotonicTime  # type: ignore[import-untyped,unused-ignore]
from pysyncobj.tcp_connection import CONNECTION_STATE  # type: ignore[import-untyped,unused-ignore]
from pysyncobj.version import VERSION  # type: ignore[import-untyped,unused-ignore]

from praxis_grpc.consensus._raft_prevote import PreVote
from praxis_grpc.consensus._raft_sockets import TidyTransport

__all__ = [
    "PINNED_PYSYNCOBJ",
    "ReceiverRuleTransport",
    "Reply",
    "check_pysyncobj_version",
    "follow_rule",
]

PINNED_PYSYNCOBJ = "0.3.17"

_Entry = tuple[bytes, int, int]  # command, index, term
_Message = dict[str, Any]


def check_pysyncobj_version() -> str | None:
    """The reason the installed pysyncobj cannot be used, or None."""
    if VERSION != PINNED_PYSYNCOBJ:
        return (
            f"pysyncobj {VERSION} is installed; the raft backend's AppendEntries guard is "
            f"written for {PINNED_PYSYNCOBJ} (see praxis_grpc/consensus/_raft_receiver.py)"
        )
    return None


class Reply(NamedTuple):
    """The answer sent to the leader in pysyncobj's place (its ``next_node_idx`` message)."""

    next_index: int  # the index the leader should send from next
    success: bool  # True: the log holds every entry before next_index as the leader does

    def message(self) -> _Message:
        return {
            "type": "next_node_idx",
            "next_node_idx": self.next_index,
            "reset": not self.success,
            "success": self.success,
        }


def follow_rule(
    message: _Message, term_at: Callable[[int], int | None], last_index: int, commit_index: int
) -> tuple[_Message, Reply | None]:
    """Decide what pysyncobj receives for an AppendEntries that passed the term check.

    Args:
        message: the AppendEntries (``term``, ``commit_index``, ``prevLogIdx``,
            ``prevLogTerm``, ``entries``).
        term_at: the term of the local entry at an index, None if there is none.
        last_index: the index of the last local entry.
        commit_index: the local commit index (its entry is in every later
            leader's log, at that index).

    Returns:
        ``(message, None)``: hand pysyncobj this message (perhaps the original)
        and let it answer.
        ``(message, reply)``: hand pysyncobj this message, which has no log
        part, then send ``reply`` on its behalf.
    """
    prev, prev_term = message["prevLogIdx"], message["prevLogTerm"]
    if term_at(prev) != prev_term:
        return _refusal(message, term_at, last_index, commit_index)
    entries: Sequence[_Entry] = message.get("entries", [])
    kept = 0
    for _, index, term in entries:
        if term_at(index) != term:
            break
        kept += 1
    if kept:
        prev, prev_term = entries[kept - 1][1], entries[kept - 1][2]
    if kept < len(entries) or prev == last_index:
        # Either a conflict or new entries start right after prev (pysyncobj
        # deletes what follows prev, which is only the conflicting part), or
        # the log ends at prev (nothing to delete).
        rewritten = dict(message, prevLogIdx=prev, prevLogTerm=prev_term, entries=entries[kept:])
        return rewritten, None
    # Everything the message carries is here and the log goes on: keep it.
    return _liveness(message, prev), Reply(prev + 1, success=True)


def _refusal(
    message: _Message, term_at: Callable[[int], int | None], last_index: int, commit_index: int
) -> tuple[_Message, Reply]:
    """A failed consistency check: ask for the entries after the last one the
    leader certainly holds as we do, whichever message this answers."""
    # Only this term's leader wrote entries of its term, and its log matches
    # ours up to each of them (Log Matching); committed entries are in it too.
    known = last_index if term_at(last_index) == message["term"] else commit_index
    return _liveness(message, commit_index), Reply(known + 1, success=False)


def _liveness(message: _Message, commit_limit: int) -> _Message:
    """The message without its log part: pysyncobj learns the leader and the
    term, and commits no further than ``commit_limit`` (§5.3 step 5: up to
    the last entry the message vouched for)."""
    return {
        "type": "append_entries",
        "term": message["term"],
        "commit_index": min(message["commit_index"], commit_limit),
    }


class ReceiverRuleTransport(TidyTransport):
    """pysyncobj's TCP transport with Raft's receiver rule for AppendEntries
    and with pre-vote (:class:`~praxis_grpc.consensus._raft_prevote.PreVote`).

    Runs on pysyncobj's thread, like the transport it extends. Pass it as
    ``SyncObj(..., transportClass=ReceiverRuleTransport)``.
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._pre_vote = PreVote(syncObj, self.send)

    def _onTick(self) -> None:
        self._drop_stalled_connects()
        super()._onTick()
        self._pre_vote.on_tick()

    def _drop_stalled_connects(self) -> None:
        """Give up a connect not established within the election timeout, so
        the next tick dials again with a fresh SYN.

        pysyncobj checks its connection timeout only when the socket reports an
        event, and a connect whose SYNs are dropped (a partition) reports none
        until the kernel's next SYN retransmission: 1, 3, 7, 15 s after the
        dial. A member dialling across a healed partition then stayed cut off
        up to several seconds after the heal.
        """
        deadline = self._syncObj.conf.raftMinTimeout
        now = monotonicTime()
        for node, conn in list(self._connections.items()):
            started = self._lastConnectAttempt.get(node)
            if (
                conn.state == CONNECTION_STATE.CONNECTING
                and started is not None
                and now - started > deadline
            ):
                conn.disconnect()

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "pre_vote":
            self._pre_vote.on_request(node, message)
            return
        if kind == "pre_vote_response":
            self._pre_vote.on_response(node, message)
            return
        if kind == "append_entries":
            self._pre_vote.on_append_entries(message)
        current = (
            kind == "append_entries" and message.get("term", -1) >= self._syncObj.raftCurrentTerm
        )
        if current and "prevLogIdx" not in message:
            # A snapshot chunk: it vouches for no entry of our log.
            commit = int(self._syncObj.raftCommitIndex)
            message = dict(message, commit_index=min(message["commit_index"], commit))
        elif current:
            message = self._assemble(message)
            if message.get("transmission") is None:
                log = self._syncObj._SyncObj__raftLog
                first, last = log[0][1], log[-1][1]

                def term_at(index: int) -> int | None:
                    return int(log[index - first][2]) if first <= index <= last else None

                # The first entry kept after a compaction was applied: committed.
                committed = min(max(int(self._syncObj.raftCommitIndex), first), last)
                message, reply = follow_rule(message, term_at, last, committed)
                if reply is not None:
                    super()._onMessageReceived(node, message)
                    self.send(node, reply.message())
                    return
        super()._onMessageReceived(node, message)

    def _assemble(self, message: _Message) -> _Message:
        """Turn the last chunk of a large entry into an ordinary message
        carrying that entry (pysyncobj would decode it the same way)."""
        if message.get("transmission") != "finish":
            return message
        received = getattr(self._syncObj, "_SyncObj__recvTransmission", None)
        if not isinstance(received, bytes):
            return message  # no chunks before it: pysyncobj's own handling
        self._syncObj._SyncObj__recvTransmission = ""
        entry = pysyncobj_pickle.loads(received + message["data"])
        rest = {k: v for k, v in message.items() if k not in ("transmission", "data")}
        return dict(rest, entries=[entry])
