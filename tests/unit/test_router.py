"""The router: candidates, saturation, strategies and the load ledger."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from praxis_grpc.cards import AgentCard, CardLoad, Endpoint, ToolInfo
from praxis_grpc.errors import FailedPrecondition, ResourceExhausted
from praxis_grpc.routing.router import LoadLedger, Router

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOCAL = "local-id"


def card(
    agent_id: str,
    tools: tuple[str, ...] = ("sleep",),
    *,
    in_flight: int = 0,
    queued: int = 0,
    capacity: int = 4,
    queue_limit: int = 10,
    tags: tuple[str, ...] = (),
    draining: bool = False,
    grpc: bool = True,
    updated_at: datetime = T0,
    role: str = "peer",
) -> AgentCard:
    return AgentCard(
        agent_id=agent_id,
        name=f"n-{agent_id}",
        praxis_version="0",
        role=role,
        endpoints=(Endpoint("grpc", f"127.0.0.1:{len(agent_id)}"),) if grpc else (),
        tools=tuple(ToolInfo(t, "", {"type": "object"}, True) for t in tools),
        tags=tags,
        load=CardLoad(in_flight, queued, capacity, queue_limit),
        draining=draining,
        incarnation=1,
        version=1,
        updated_at=updated_at,
    )


def router(
    cards: list[AgentCard], strategy: str = "p2c", local: tuple[int, int, int] = (0, 4, 14)
) -> Router:
    return Router(
        local_agent_id=LOCAL,
        cards=lambda: cards,
        local_pending=lambda: local,
        strategy=strategy,  # type: ignore[arg-type]
        rng=random.Random(7),
    )


def test_a_card_naming_a_coordinator_is_no_candidate_however_idle() -> None:
    # After a partition of the coordinator, the majority side still holds its
    # card (role coordinator, nothing in flight): P2C would send it every task.
    busy = card("busy", in_flight=3)
    deposed = card("deposed", role="coordinator")
    found = router([busy, deposed, card("standby", in_flight=2, role="standby")])
    assert {c.agent_id for c in found.candidates("sleep")} == {"busy", "standby"}
    assert found.plan("sleep", preferred_agent="deposed")[0].agent_id == "standby"
    with pytest.raises(FailedPrecondition):
        router([deposed]).candidates("sleep")


def test_only_agents_with_the_tool_and_every_tag_are_candidates() -> None:
    r = router(
        [
            card("a", ("sleep",), tags=("gpu", "eu")),
            card("b", ("sleep",), tags=("eu",)),
            card("c", ("echo",), tags=("gpu", "eu")),
        ]
    )
    assert [c.agent_id for c in r.candidates("sleep", ("gpu",))] == ["a"]
    assert {c.agent_id for c in r.candidates("sleep")} == {"a", "b"}


def test_no_capable_agent_names_the_tool_and_the_tools_on_offer() -> None:
    r = router([card("a", ("echo", "calculator"))])
    with pytest.raises(FailedPrecondition) as info:
        r.plan("sleep")
    assert "'sleep'" in info.value.message
    assert "calculator, echo" in info.value.message


def test_draining_and_unreachable_agents_are_skipped() -> None:
    r = router([card("a", draining=True), card("b", grpc=False), card("c")])
    assert [c.agent_id for c in r.plan("sleep")] == ["c"]
    with pytest.raises(FailedPrecondition, match="n-a draining"):
        router([card("a", draining=True)]).plan("sleep")


def test_every_candidate_saturated_is_resource_exhausted_with_a_hint() -> None:
    r = router([card("a", in_flight=4, queued=10), card("b", in_flight=4, queued=12)])
    with pytest.raises(ResourceExhausted) as info:
        r.plan("sleep")
    assert info.value.retry_after > 0
    assert "saturated" in info.value.message


def test_local_node_is_a_candidate_with_its_exact_load() -> None:
    r = router([card(LOCAL, in_flight=0), card("b", in_flight=3)], local=(2, 4, 14))
    local = next(c for c in r.candidates("sleep") if c.local)
    assert local.pending == 2
    assert local.address == ""


def test_p2c_prefers_the_less_loaded_of_any_pair() -> None:
    cards = [card("idle"), card("busy", in_flight=4, queued=6)]
    r = router(cards)
    first = Counter(r.plan("sleep")[0].agent_id for _ in range(200))
    assert first == {"idle": 200}


def test_p2c_spreads_over_equally_loaded_agents() -> None:
    r = router([card("a"), card("b"), card("c")])
    first = Counter(r.plan("sleep")[0].agent_id for _ in range(600))
    assert set(first) == {"a", "b", "c"}
    assert min(first.values()) > 120


def test_round_robin_rotates_and_random_covers_everyone() -> None:
    r = router([card("a"), card("b"), card("c")], strategy="round_robin")
    assert [r.plan("sleep")[0].agent_id for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    rnd = router([card("a"), card("b")], strategy="random")
    assert {rnd.plan("sleep")[0].agent_id for _ in range(50)} == {"a", "b"}


def test_preferred_agent_goes_first_unless_saturated() -> None:
    cards = [card("a"), card("b", in_flight=3)]
    assert router(cards).plan("sleep", preferred_agent="b")[0].agent_id == "b"
    full = [card("a"), card("b", in_flight=4, queued=10)]
    assert [c.agent_id for c in router(full).plan("sleep", preferred_agent="b")] == ["a"]


def test_plan_lists_every_open_candidate_once() -> None:
    r = router([card(x) for x in "abcde"])
    plan = r.plan("sleep")
    assert sorted(c.agent_id for c in plan) == list("abcde")


def test_exclude_removes_an_agent() -> None:
    r = router([card("a"), card("b")])
    assert [c.agent_id for c in r.plan("sleep", exclude=("a",))] == ["b"]
    with pytest.raises(FailedPrecondition, match="no other agent"):
        r.plan("sleep", exclude=("a", "b"))


def test_ledger_adds_tasks_sent_after_the_card_was_made() -> None:
    ledger = LoadLedger()
    load = CardLoad(in_flight=1, queued=0, capacity=4, queue_limit=10)
    ledger.begin("a", "t1", T0 - timedelta(seconds=1))  # counted by the card
    ledger.begin("a", "t2", T0 + timedelta(seconds=1))  # not yet
    ledger.begin("a", "t3", T0 + timedelta(seconds=2))
    assert ledger.estimate("a", load, T0) == 3


def test_ledger_subtracts_tasks_the_card_counted_that_finished_since() -> None:
    ledger = LoadLedger()
    load = CardLoad(in_flight=2, queued=0, capacity=4, queue_limit=10)
    ledger.begin("a", "t1", T0 - timedelta(seconds=2))
    ledger.begin("a", "t2", T0 - timedelta(seconds=1))
    ledger.end("a", "t1", T0 + timedelta(seconds=1))
    assert ledger.estimate("a", load, T0) == 1
    # A newer card reflects the finish itself: no double subtraction.
    newer = CardLoad(in_flight=1, queued=0, capacity=4, queue_limit=10)
    assert ledger.estimate("a", newer, T0 + timedelta(seconds=2)) == 1


def test_ledger_never_estimates_below_our_own_outstanding_tasks() -> None:
    ledger = LoadLedger()
    for i in range(3):
        ledger.begin("a", f"t{i}", T0 - timedelta(seconds=5))
    assert ledger.estimate("a", CardLoad(0, 0, 4, 10), T0) == 3
    assert ledger.outstanding("a") == 3
    ledger.forget("a")
    assert ledger.outstanding("a") == 0


def test_router_uses_the_ledger_for_remote_load() -> None:
    cards = [card("a", updated_at=T0), card("b", updated_at=T0)]
    r = router(cards)
    for i in range(5):
        r.ledger.begin("a", f"t{i}", T0 + timedelta(seconds=1))
    assert {c.agent_id: c.pending for c in r.candidates("sleep")} == {"a": 5, "b": 0}
    assert Counter(r.plan("sleep")[0].agent_id for _ in range(50)) == {"b": 50}


def test_ledger_counters_match_a_recount_over_random_histories() -> None:
    rng = random.Random(3)
    ledger = LoadLedger(max_finished=10_000)
    sent: dict[str, datetime] = {}
    done: list[tuple[datetime, datetime]] = []
    card_at = T0
    clock = T0
    for step in range(2000):
        clock += timedelta(milliseconds=rng.randint(1, 20))
        action = rng.random()
        if action < 0.45:
            task = f"t{step}"
            ledger.begin("a", task, clock)
            sent[task] = clock
        elif action < 0.9 and sent:
            task = rng.choice(sorted(sent))
            ledger.end("a", task, clock)
            done.append((sent.pop(task), clock))
        else:
            # A newer card: made a little while ago, never older than the last.
            card_at = max(card_at, clock - timedelta(milliseconds=rng.randint(0, 200)))
        load = CardLoad(in_flight=5, queued=0, capacity=4, queue_limit=10)
        since = sum(1 for t in sent.values() if t > card_at)
        gone = sum(1 for s, f in done if s <= card_at < f)
        expected = max(5 + since - gone, len(sent))
        assert ledger.estimate("a", load, card_at) == expected, step
