"""CardDirectory.cards answers from a cache of views (every placement asks):
each change to the directory shows in the next answer, and a caller cannot
change what the next caller sees."""

from __future__ import annotations

from datetime import timedelta

from praxis_grpc.cards import CardLoad, ToolInfo
from praxis_grpc.directory import CardDirectory
from tests.unit.test_card_status import T0, card_of, status_of


def directory() -> CardDirectory:
    return CardDirectory("local", ttl=10.0, clock=lambda: T0)


def test_a_status_change_shows_in_the_next_answer() -> None:
    cards = directory()
    card = card_of("b")
    cards.merge(card)
    assert [c.load for c in cards.cards("calculator")] == [card.load]
    busy = CardLoad(9, 0, 10, 10)
    assert cards.merge_status(status_of(card, 2, load=busy)) is not None
    assert [c.load for c in cards.cards("calculator")] == [busy]
    assert [c.load for c in cards.cards()] == [busy]


def test_a_status_refresh_shows_its_version() -> None:
    # Same content (no event), newer version: still the newest view.
    cards = directory()
    card = card_of("b")
    cards.merge(card)
    cards.cards()
    assert cards.merge_status(status_of(card, 5)) is None
    assert [c.version for c in cards.cards()] == [5]


def test_cards_added_changed_and_removed_show() -> None:
    cards = directory()
    cards.merge(card_of("b"))
    assert [c.agent_id for c in cards.cards("calculator")] == ["b"]
    cards.merge(card_of("c"))
    assert [c.agent_id for c in cards.cards("calculator")] == ["b", "c"]
    other = (ToolInfo("echo", "echo", {"type": "object"}, True),)
    cards.merge(card_of("c", version=2, tools=other))
    assert [c.agent_id for c in cards.cards("calculator")] == ["b"]
    assert [c.agent_id for c in cards.cards("echo")] == ["c"]
    cards.remove("b")
    assert cards.cards("calculator") == []
    cards.bury("c")
    assert cards.cards() == []


def test_expired_cards_leave_the_answer() -> None:
    now = [T0]
    cards = CardDirectory("local", ttl=1.0, clock=lambda: now[0])
    cards.merge(card_of("b"))
    assert len(cards.cards()) == 1
    now[0] = T0 + timedelta(hours=1)
    assert [e.card.agent_id for e in cards.expire()] == ["b"]
    assert cards.cards() == []


def test_changing_an_answer_changes_no_other() -> None:
    cards = directory()
    cards.merge(card_of("b"))
    cards.cards().clear()
    assert len(cards.cards()) == 1


def test_many_distinct_queries_stay_correct() -> None:
    cards = directory()
    cards.merge(card_of("b"))
    for i in range(200):
        assert cards.cards("calculator", (f"tag{i}",)) == []
    assert [c.agent_id for c in cards.cards("calculator", ("general",))] == ["b"]
