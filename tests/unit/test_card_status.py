"""The card/status split: status codec and signature, the card cache, ordering, the
publish threshold, the registry and directory merge, and what gossip sends and drops."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from praxis_grpc._gen.praxis.v1 import mesh_pb2
from praxis_grpc.card_codec import (
    CardCache,
    CardRejected,
    decode_signed_status,
    encode_signed,
    split_message,
)
from praxis_grpc.cards import (
    AgentCard,
    AgentStatus,
    CardEventType,
    CardLoad,
    CardRegistry,
    Endpoint,
    ToolInfo,
    timer_scale,
)
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import DiscoveryEvents, PeerStatus
from praxis_grpc.gossip import CardGossip
from praxis_grpc.identity import Identity, load_or_create_identity
from praxis_grpc.metrics import Metrics

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def card_of(agent_id: str, incarnation: int = 1, version: int = 1, **changes: object) -> AgentCard:
    base = AgentCard(
        agent_id=agent_id,
        name="a",
        praxis_version="0.1.0",
        role="peer",
        endpoints=(Endpoint("grpc", "127.0.0.1:1"),),
        tools=(ToolInfo("calculator", "math", {"type": "object"}, True),),
        tags=("general",),
        load=CardLoad(0, 0, 10, 10),
        draining=False,
        incarnation=incarnation,
        version=version,
        updated_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def status_of(card: AgentCard, version: int, **changes: object) -> AgentStatus:
    return replace(AgentStatus.of(card), version=version, **changes)  # type: ignore[arg-type]


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return load_or_create_identity(tmp_path / "a.key")


@pytest.fixture
def mallory(tmp_path: Path) -> Identity:
    return load_or_create_identity(tmp_path / "m.key")


def test_status_round_trip_and_is_small(identity: Identity) -> None:
    card = card_of(identity.agent_id)
    status = status_of(card, 5, load=CardLoad(3, 1, 10, 10), draining=True, role="standby")
    data = encode_signed(identity, status=status)
    assert decode_signed_status(data) == status
    assert len(data) < 200  # a real card with tool schemas is about 1.5 KB
    message = split_message(data)
    assert message.card is None
    assert message.status is not None


def test_a_status_forged_for_another_agent_is_rejected(
    identity: Identity, mallory: Identity
) -> None:
    victim = status_of(card_of(identity.agent_id), 9, draining=True)
    signed = mesh_pb2.SignedCard.FromString(
        encode_signed(mallory, status=replace(victim, agent_id=mallory.agent_id))
    )
    body = mesh_pb2.SignedCard.FromString(encode_signed(identity, status=victim)).status
    forged = mesh_pb2.SignedCard(status=body, status_signature=signed.status_signature)
    with pytest.raises(CardRejected) as info:
        decode_signed_status(forged.SerializeToString())
    assert info.value.reason == "bad_signature"
    with pytest.raises(ValueError, match="own status"):
        encode_signed(mallory, status=victim)


def test_the_cache_verifies_each_signed_card_once(identity: Identity) -> None:
    cache = CardCache(size=2)
    part = split_message(encode_signed(identity, card=card_of(identity.agent_id))).card
    assert part is not None
    first = cache.verify(part)
    assert cache.verify(part) == first
    assert cache.verified == 1
    tampered = replace(part, signature=bytes(64))
    with pytest.raises(CardRejected):
        cache.verify(tampered)  # same body, other signature: no hit
    for version in (2, 3):  # evicts the first
        other = split_message(encode_signed(identity, card=card_of(identity.agent_id, 1, version)))
        assert other.card is not None
        cache.verify(other.card)
    assert len(cache) == 2
    cache.verify(part)
    assert cache.verified == 4


@pytest.mark.parametrize(
    ("before", "after", "moved"),
    [
        (CardLoad(0, 0, 10, 10), CardLoad(0, 0, 10, 10), False),
        (CardLoad(0, 0, 10, 10), CardLoad(0, 1, 10, 10), False),  # 1 of 10 < 0.2
        (CardLoad(0, 0, 10, 10), CardLoad(1, 1, 10, 10), True),  # 2 of 10
        (CardLoad(9, 10, 10, 10), CardLoad(10, 10, 10, 10), True),  # now full
        (CardLoad(0, 0, 10, 10), CardLoad(0, 0, 12, 10), True),  # capacity
    ],
)
def test_a_status_moves_past_the_threshold(before: CardLoad, after: CardLoad, moved: bool) -> None:
    card = card_of("a")
    assert status_of(card, 2, load=before).moved(status_of(card, 3, load=after), 0.2) is moved
    assert status_of(card, 2).moved(status_of(card, 3, draining=True), 0.2)
    assert status_of(card, 2).moved(status_of(card, 3, role="coordinator"), 0.2)


def test_registry_merges_card_and_newer_status_and_ignores_older() -> None:
    registry = CardRegistry(local_agent_id="me", ttl=10)
    card = card_of("a", 1, 4)
    registry.merge(card, T0)
    assert not registry.wants_status(status_of(card, 4))  # not newer than the card
    assert not registry.wants_status(status_of(card_of("a", 2, 9), 9))  # ahead of its card
    assert not registry.wants_status(status_of(card_of("b"), 9))  # unknown agent
    event = registry.merge_status(status_of(card, 6, draining=True), T0)
    assert event is not None
    assert event.type is CardEventType.UPDATED
    assert event.card.draining
    assert event.card.version == 6
    assert event.card.tags == ("general",)
    assert registry.merge_status(status_of(card, 5, draining=False), T0) is None
    shown = registry.get("a")
    assert shown is not None
    assert shown.draining
    # A refresh (newer, same state) is no event but keeps the card alive.
    later = T0 + timedelta(seconds=8)
    assert registry.merge_status(status_of(card, 7, draining=True), later) is None
    assert registry.expire(T0 + timedelta(seconds=15)) == []
    assert [e.type for e in registry.expire(later + timedelta(seconds=11))] == [
        CardEventType.REMOVED
    ]


def test_a_new_card_keeps_a_newer_status_and_a_new_incarnation_drops_it() -> None:
    registry = CardRegistry(local_agent_id="me", ttl=10)
    registry.merge(card_of("a", 1, 1), T0)
    registry.merge_status(status_of(card_of("a"), 5, draining=True), T0)
    event = registry.merge(card_of("a", 1, 3, tags=("gpu",)), T0)  # reordered: older than 5
    assert event is not None
    assert event.card.tags == ("gpu",)
    assert event.card.draining
    assert event.card.version == 5
    restarted = registry.merge(card_of("a", 2, 1), T0)
    assert restarted is not None
    assert not restarted.card.draining


def test_ttl_scales_linearly_with_n() -> None:
    # The refresh reaches every node: linear scaling keeps each node's status rate flat.
    assert timer_scale(1) == timer_scale(10) == 1.0
    assert timer_scale(20) == pytest.approx(2.0)
    assert timer_scale(1000) == pytest.approx(100.0)
    registry = CardRegistry(local_agent_id="me", ttl=10)
    for index in range(30):
        registry.merge(card_of(f"n{index}"), T0)
    assert registry.expire(T0 + timedelta(seconds=29)) == []  # 10 s x 3
    assert len(registry.expire(T0 + timedelta(seconds=31))) == 30


def test_directory_versions_card_and_status_from_one_counter() -> None:
    directory = CardDirectory("a", ttl=10, clock=lambda: T0)
    directory.publish_local(card_of("a"))
    assert directory.local_card.version == directory.local_status.version == 1
    directory.publish_local(card_of("a", load=CardLoad(1, 0, 10, 10)))
    assert directory.local_card.version == 1
    assert directory.local_status.version == 2
    drained = directory.publish_local(card_of("a", draining=True))
    assert drained.version == 3
    assert drained.draining
    assert directory.local_card.version == 1
    assert directory.publish_local(card_of("a", draining=True)).version == 3  # no change
    tagged = directory.publish_local(card_of("a", draining=True, tags=("gpu",)))
    assert directory.local_card.version == directory.local_status.version == 4
    assert tagged.tags == ("gpu",)
    assert tagged.draining
    assert directory.refresh_local_status().version == 5
    shown = directory.get("a")
    assert shown is not None
    assert shown.version == 5


class Wire:
    """A Discovery that records what gossip hands it."""

    def __init__(self) -> None:
        self.served = b""
        self.published: list[bytes] = []

    async def start(self, events: DiscoveryEvents) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None

    def set_local_card(self, data: bytes) -> None:
        self.served = data

    def publish(self, data: bytes) -> None:
        self.published.append(data)

    async def peers(self) -> list[PeerStatus]:
        return []


def gossip_for(identity: Identity) -> tuple[CardGossip, CardDirectory, Wire, Metrics]:
    directory = CardDirectory(identity.agent_id, ttl=10)
    wire, metrics = Wire(), Metrics()
    gossip = CardGossip(
        directory=directory,
        identity=identity,
        discovery=wire,
        metrics=metrics,
        disconnect_grace=1.0,
        max_card_bytes=64 * 1024,
        load_threshold=0.2,
    )
    return gossip, directory, wire, metrics


def count(metrics: Metrics, kind: str, direction: str) -> float:
    return float(metrics.gossip_messages_total.labels(kind, direction)._value.get())


def test_gossip_sends_the_card_on_change_and_a_status_only_when_it_moves(
    identity: Identity,
) -> None:
    # Before the split every heartbeat republished the whole card (about 1.5 KB).
    gossip, directory, wire, _ = gossip_for(identity)
    directory.publish_local(card_of(identity.agent_id))
    gossip.announce()
    [first] = wire.published
    assert split_message(first).card is not None
    directory.publish_local(card_of(identity.agent_id, load=CardLoad(1, 0, 10, 10)))
    gossip.announce()
    assert len(wire.published) == 1  # 1 of 10 is under the threshold
    directory.publish_local(card_of(identity.agent_id, draining=True))
    gossip.announce()
    gossip.refresh()
    assert len(wire.published) == 3
    for data in wire.published[1:]:
        message = split_message(data)
        assert message.card is None
        assert message.status is not None
        assert len(data) < 200
    served = split_message(wire.served)
    assert served.card is not None
    assert served.status is not None


def test_gossip_verifies_cards_once_drops_stale_and_forged_statuses(
    identity: Identity, mallory: Identity, tmp_path: Path
) -> None:
    gossip, directory, _, metrics = gossip_for(load_or_create_identity(tmp_path / "me.key"))
    card = card_of(identity.agent_id, 1, 3)
    card_bytes = encode_signed(identity, card=card)
    for _ in range(3):
        gossip.on_card(card_bytes, "exchange", identity.agent_id)
    assert gossip._cache.verified == 1
    newer = encode_signed(identity, status=status_of(card, 5, draining=True))
    older = encode_signed(identity, status=status_of(card, 4, draining=False))
    gossip.on_card(newer, "gossip", identity.agent_id)
    gossip.on_card(older, "gossip", identity.agent_id)
    gossip.on_card(newer, "gossip", identity.agent_id)  # a replay is not newer
    shown = directory.get(identity.agent_id)
    assert shown is not None
    assert shown.draining
    assert shown.version == 5
    assert count(metrics, "status", "received") == 1
    assert count(metrics, "status", "dropped") == 2
    # Mallory claims the victim resumed, signing with her own key.
    claim = status_of(card, 9, draining=False)
    body = mesh_pb2.SignedCard.FromString(encode_signed(identity, status=claim)).status
    own = mesh_pb2.SignedCard.FromString(
        encode_signed(mallory, status=replace(claim, agent_id=mallory.agent_id))
    )
    forged = mesh_pb2.SignedCard(status=body, status_signature=own.status_signature)
    gossip.on_card(forged.SerializeToString(), "gossip", mallory.agent_id)
    shown = directory.get(identity.agent_id)
    assert shown is not None
    assert shown.draining
    assert metrics.cards_rejected_total.labels("bad_signature")._value.get() == 1


def test_the_exchange_relays_the_cards_held(identity: Identity, tmp_path: Path) -> None:
    gossip, directory, wire, _ = gossip_for(load_or_create_identity(tmp_path / "me.key"))
    directory.publish_local(card_of(directory._registry.local_agent_id))
    gossip.announce()
    card = card_of(identity.agent_id, 1, 3)
    gossip.on_card(encode_signed(identity, card=card), "gossip", identity.agent_id)
    gossip.on_card(encode_signed(identity, status=status_of(card, 4, draining=True)), "gossip", "x")
    gossip.refresh()
    [relayed] = split_message(wire.served).relayed
    newcomer, newcomer_directory, _, _ = gossip_for(load_or_create_identity(tmp_path / "n.key"))
    newcomer.on_card(wire.served, "exchange", "me")
    learnt = newcomer_directory.get(identity.agent_id)
    assert learnt is not None
    assert learnt.draining
    assert split_message(relayed).relayed == ()
