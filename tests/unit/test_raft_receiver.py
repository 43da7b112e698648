"""Raft's AppendEntries receiver rule (§5.3) as the raft backend applies it
before pysyncobj sees a message: pure decisions over a follower's log."""

from __future__ import annotations

from typing import Any

from praxis_grpc.consensus._raft_receiver import check_pysyncobj_version, follow_rule

# A follower's log: index -> term (pysyncobj's log starts with entry 1).
LOG = {1: 0, 2: 1, 3: 1, 4: 1, 5: 2}


def entry(index: int, term: int) -> tuple[bytes, int, int]:
    return (b"cmd", index, term)


def append(prev: int, prev_term: int, *entries: tuple[int, int], commit: int = 9) -> Any:
    return {
        "type": "append_entries",
        "term": 2,
        "commit_index": commit,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": [entry(i, t) for i, t in entries],
    }


def decide(message: dict[str, Any], log: dict[int, int] = LOG) -> Any:
    return follow_rule(message, log.get, max(log))


def test_a_shorter_resend_keeps_the_log_and_reports_what_it_vouched_for() -> None:
    message, matched = decide(append(2, 1, (3, 1)))
    assert matched == 3
    assert message == {"type": "append_entries", "term": 2, "commit_index": 3}


def test_a_heartbeat_behind_the_log_end_commits_no_further_than_its_prev() -> None:
    message, matched = decide(append(4, 1, commit=2))
    assert matched == 4
    assert message["commit_index"] == 2
    assert "prevLogIdx" not in message


def test_a_conflict_deletes_from_the_conflicting_entry_only() -> None:
    message, matched = decide(append(2, 1, (3, 1), (4, 2), (5, 2)))
    assert matched is None
    assert (message["prevLogIdx"], message["prevLogTerm"]) == (3, 1)
    assert message["entries"] == [entry(4, 2), entry(5, 2)]


def test_new_entries_are_appended_after_the_ones_already_held() -> None:
    message, matched = decide(append(3, 1, (4, 1), (5, 2), (6, 2)))
    assert matched is None
    assert (message["prevLogIdx"], message["prevLogTerm"]) == (5, 2)
    assert message["entries"] == [entry(6, 2)]


def test_a_message_ending_at_the_log_end_deletes_nothing() -> None:
    message, matched = decide(append(3, 1, (4, 1), (5, 2)))
    assert matched is None
    assert (message["prevLogIdx"], message["entries"]) == (5, [])


def test_a_failed_consistency_check_reaches_pysyncobj_unchanged() -> None:
    for original in (append(5, 1, (6, 2)), append(7, 2, (8, 2)), append(0, 0)):
        message, matched = decide(original)
        assert (message, matched) == (original, None)


def test_the_installed_pysyncobj_is_the_pinned_one() -> None:
    assert check_pysyncobj_version() is None
