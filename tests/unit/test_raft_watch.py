"""RaftWatch: a line per term or leader change, one warning per term for a
member that follows a leader without applying its claim."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from praxis_grpc.consensus._raft_watch import RaftWatch


@dataclass
class Leader:
    address: str


@dataclass
class Member:
    raftCurrentTerm: int = 1  # pysyncobj's names
    raftCommitIndex: int = 10
    raftLastApplied: int = 10
    leader: Leader | None = None

    def _getLeader(self) -> Leader | None:
        return self.leader

    def _getRaftLogSize(self) -> int:
        return 12


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_each_term_or_leader_change_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="praxis_grpc.consensus.raft")
    watch, member = RaftWatch("127.0.0.1:1"), Member()
    for now in (0.0, 0.05, 0.1):
        watch.on_tick(member, claim_term=0, now=now)
    member.raftCurrentTerm, member.leader = 2, Leader("127.0.0.1:2")
    watch.on_tick(member, claim_term=2, now=0.15)
    watch.on_tick(member, claim_term=2, now=0.2)
    assert lines(caplog, logging.INFO) == [
        "raft 127.0.0.1:1: term 1, leader unknown (log 12 entries, commit 10, applied 10)",
        "raft 127.0.0.1:1: term 2, leader 127.0.0.1:2 (log 12 entries, commit 10, applied 10)",
    ]


def test_following_a_leader_whose_claim_is_not_applied_warns_once_per_term(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="praxis_grpc.consensus.raft")
    watch = RaftWatch("127.0.0.1:1", lag_warning=5.0)
    member = Member(raftCurrentTerm=9, leader=Leader("127.0.0.1:2"))
    for now in (0.0, 2.0, 4.9):
        watch.on_tick(member, claim_term=8, now=now)
    assert lines(caplog, logging.WARNING) == []
    for now in (5.0, 6.0, 30.0):
        watch.on_tick(member, claim_term=8, now=now)
    assert lines(caplog, logging.WARNING) == [
        "raft 127.0.0.1:1: following 127.0.0.1:2 in term 9 for 5 s, but the newest "
        "leadership claim applied is of term 8 (log 12 entries, commit 10, applied 10)"
    ]
    watch.on_tick(member, claim_term=9, now=31.0)  # applied: the lag ends
    member.raftCurrentTerm = 10
    for now in (32.0, 38.0):
        watch.on_tick(member, claim_term=9, now=now)
    assert len(lines(caplog, logging.WARNING)) == 2


def test_no_warning_without_a_leader(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="praxis_grpc.consensus.raft")
    watch, member = RaftWatch("127.0.0.1:1", lag_warning=1.0), Member(raftCurrentTerm=5)
    for now in (0.0, 10.0, 20.0):
        watch.on_tick(member, claim_term=3, now=now)
    assert lines(caplog, logging.WARNING) == []
