"""CardRegistry merge, removal and expiry (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from praxis_grpc.cards import AgentCard, CardEventType, CardLoad, CardRegistry, Endpoint, ToolInfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def card(agent_id: str, incarnation: int = 1, version: int = 1, **changes: object) -> AgentCard:
    base = AgentCard(
        agent_id=agent_id,
        name=agent_id,
        praxis_version="0.1.0",
        role="peer",
        endpoints=(Endpoint("grpc", "127.0.0.1:1"),),
        tools=(ToolInfo("calculator", "math", {"type": "object"}, True),),
        tags=("general",),
        load=CardLoad(),
        draining=False,
        incarnation=incarnation,
        version=version,
        updated_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_newer_wins_older_is_ignored() -> None:
    registry = CardRegistry(local_agent_id="me", ttl=10)
    added = registry.merge(card("a", 1, 1), T0)
    assert added is not None
    assert added.type is CardEventType.ADDED
    assert registry.merge(card("a", 1, 1), T0) is None
    updated = registry.merge(card("a", 1, 2, draining=True), T0)
    assert updated is not None
    assert updated.type is CardEventType.UPDATED
    assert registry.merge(card("a", 1, 1), T0) is None
    restarted = registry.merge(card("a", 2, 1), T0)
    assert restarted is not None
    assert restarted.card.incarnation == 2
    assert registry.get("a") == card("a", 2, 1)


def test_expiry_spares_local_and_fresh_cards() -> None:
    registry = CardRegistry(local_agent_id="me", ttl=10)
    registry.merge(card("me"), T0)
    registry.merge(card("old"), T0)
    registry.merge(card("fresh"), T0)
    registry.merge(card("fresh"), T0 + timedelta(seconds=8))  # same version refreshes liveness
    events = registry.expire(T0 + timedelta(seconds=11))
    assert [(e.type, e.card.agent_id) for e in events] == [(CardEventType.REMOVED, "old")]
    assert {c.agent_id for c in registry.cards()} == {"me", "fresh"}


def test_filter_by_tool_and_tags() -> None:
    registry = CardRegistry(local_agent_id="me", ttl=10)
    registry.merge(card("a"), T0)
    registry.merge(card("b", tools=(), tags=("general", "gpu")), T0)
    assert [c.agent_id for c in registry.cards(tool="calculator")] == ["a"]
    assert [c.agent_id for c in registry.cards(tags=["gpu"])] == ["b"]
    assert registry.remove("a") is not None
    assert registry.remove("a") is None
    assert len(registry) == 1


def test_same_content_ignores_version_and_time() -> None:
    assert card("a", version=1).same_content(card("a", version=7, updated_at=T0 + timedelta(1)))
    assert not card("a").same_content(card("a", draining=True))
