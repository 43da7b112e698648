"""Pre-vote's decisions against a stand-in for a pysyncobj member (no sockets)."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

from praxis_grpc.consensus._raft_prevote import PreVote


class Member:
    """The attributes of pysyncobj.SyncObj that PreVote reads and writes."""

    def __init__(self, term: int = 3, log: tuple[int, int] = (10, 3)) -> None:
        self.raftCurrentTerm = term
        self.leader = False
        self.conf = SimpleNamespace(raftMinTimeout=0.3, raftMaxTimeout=0.6)
        self.selfNode = SimpleNamespace(id="self")
        self.otherNodes = [SimpleNamespace(id="b"), SimpleNamespace(id="c")]
        self._SyncObj__raftLog = [(b"", 1, 0), (b"", *log)]
        self._SyncObj__raftElectionDeadline: float = time.monotonic() + 60  # pysyncobj's timer

    def _isLeader(self) -> bool:
        return self.leader

    def _SyncObj__setCurrentTerm(self, term: int, voted_for: Any) -> None:
        self.raftCurrentTerm = term


def pre_vote(member: Member) -> tuple[PreVote, list[tuple[Any, dict[str, Any]]]]:
    sent: list[tuple[Any, dict[str, Any]]] = []
    return PreVote(member, lambda node, message: sent.append((node, message))), sent


def ask(term: int, last: tuple[int, int] = (10, 3)) -> dict[str, Any]:
    return {"type": "pre_vote", "term": term, "last_log_index": last[0], "last_log_term": last[1]}


def test_a_timeout_asks_for_the_next_term_without_taking_it() -> None:
    member = Member()
    vote, sent = pre_vote(member)
    vote.on_tick()
    assert member._SyncObj__raftElectionDeadline == math.inf  # pysyncobj's timer is parked
    vote._due = 0  # our own timer ran out
    vote.on_tick()
    assert [message["term"] for _, message in sent] == [4, 4]
    assert member.raftCurrentTerm == 3
    vote.on_response(member.otherNodes[0], {"term": 4, "granted": True, "current_term": 3})
    assert member._SyncObj__raftElectionDeadline == 0  # pysyncobj campaigns next tick


def test_a_forced_election_is_left_to_pysyncobj() -> None:
    member = Member()
    member._SyncObj__raftElectionDeadline = 0  # timeout_now or suspect()
    vote, sent = pre_vote(member)
    vote._due = 0
    vote.on_tick()
    assert (member._SyncObj__raftElectionDeadline, sent) == (0, [])


def test_a_member_that_hears_a_leader_or_leads_or_knows_more_says_no() -> None:
    member = Member()
    vote, sent = pre_vote(member)
    vote.on_request("c", ask(4))
    vote.on_request("c", ask(4, last=(9, 3)))
    vote.on_request("c", ask(2))
    vote.on_append_entries({"type": "append_entries", "term": 3})
    vote.on_request("c", ask(4))
    member.leader = True
    vote._heard = -math.inf
    vote.on_request("c", ask(4))
    assert [message["granted"] for _, message in sent] == [True, False, False, False, False]
    assert member.raftCurrentTerm == 3  # answering never moves the term


def test_a_no_with_a_greater_term_is_taken_so_the_next_round_asks_above_it() -> None:
    member = Member()
    vote, _ = pre_vote(member)
    vote.on_response(member.otherNodes[0], {"term": 4, "granted": False, "current_term": 7})
    assert member.raftCurrentTerm == 7
