"""Raft's AppendEntries receiver rule (§5.3) as the raft backend applies it
before pysyncobj sees a message: pure decisions over a follower's log."""

from __future__ import annotations

from typing import Any

from praxis_grpc.consensus._raft_receiver import Reply, check_pysyncobj_version, follow_rule

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


def decide(message: dict[str, Any], log: dict[int, int] = LOG, commit: int = 3) -> Any:
    return follow_rule(message, log.get, max(log), commit)


def test_a_shorter_resend_keeps_the_log_and_reports_what_it_vouched_for() -> None:
    message, reply = decide(append(2, 1, (3, 1)))
    assert reply == Reply(4, success=True)
    assert message == {"type": "append_entries", "term": 2, "commit_index": 3}


def test_a_heartbeat_behind_the_log_end_commits_no_further_than_its_prev() -> None:
    message, reply = decide(append(4, 1, commit=2))
    assert reply == Reply(5, success=True)
    assert message["commit_index"] == 2
    assert "prevLogIdx" not in message


def test_a_conflict_deletes_from_the_conflicting_entry_only() -> None:
    message, reply = decide(append(2, 1, (3, 1), (4, 2), (5, 2)))
    assert reply is None
    assert (message["prevLogIdx"], message["prevLogTerm"]) == (3, 1)
    assert message["entries"] == [entry(4, 2), entry(5, 2)]


def test_new_entries_are_appended_after_the_ones_already_held() -> None:
    message, reply = decide(append(3, 1, (4, 1), (5, 2), (6, 2)))
    assert reply is None
    assert (message["prevLogIdx"], message["prevLogTerm"]) == (5, 2)
    assert message["entries"] == [entry(6, 2)]


def test_a_message_ending_at_the_log_end_deletes_nothing() -> None:
    message, reply = decide(append(3, 1, (4, 1), (5, 2)))
    assert reply is None
    assert (message["prevLogIdx"], message["entries"]) == (5, [])


def test_a_refusal_asks_for_the_entries_after_the_commit_index_whatever_it_answers() -> None:
    """The log ends with entries of an older term than the leader's (a deposed
    leader's own writes): every refusal names the same index, so a leader that
    applies them in any order ends up sending from there."""
    for original in (append(5, 1, (6, 2)), append(4, 2, (5, 2)), append(9, 2, (10, 2))):
        message, reply = decide(dict(original, term=3))
        assert reply == Reply(4, success=False)
        assert reply.message() == {
            "type": "next_node_idx",
            "next_node_idx": 4,
            "reset": True,
            "success": False,
        }
        assert message == {"type": "append_entries", "term": 3, "commit_index": 3}


def test_a_refusal_past_a_log_of_the_leaders_term_asks_for_the_next_entry() -> None:
    """Every entry of the leader's own term is in its log, and so is all
    before it: a follower that only missed messages asks from its log end."""
    _, reply = decide(append(7, 2, (8, 2)))
    assert reply == Reply(6, success=False)


def test_a_refusal_commits_nothing() -> None:
    message, _ = decide(dict(append(9, 2), term=3, commit_index=9), commit=2)
    assert message == {"type": "append_entries", "term": 3, "commit_index": 2}


def test_the_installed_pysyncobj_is_the_pinned_one() -> None:
    assert check_pysyncobj_version() is None
