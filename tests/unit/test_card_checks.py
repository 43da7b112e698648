"""Cards checked against what can be verified (issue 13), through the node's own gossip
wiring (``start_gossip``) over a recording Discovery: sender, issue time, replay,
addresses, slots, endpoints. Each rejection is counted by reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from praxis_grpc._gen.praxis.v1 import mesh_pb2
from praxis_grpc.card_codec import encode_signed
from praxis_grpc.cards import AgentCard, AgentStatus, CardLoad, Endpoint, ToolInfo
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import DiscoveryEvents, PeerStatus
from praxis_grpc.gossip import CardGossip
from praxis_grpc.identity import Identity, load_or_create_identity
from praxis_grpc.membership import State
from praxis_grpc.metrics import Metrics
from praxis_grpc.p2p_setup import start_gossip
from praxis_grpc.roster import MemberRoster
from praxis_grpc.testing.nodes import make_config

TTL = 10.0


class Wire:
    """A Discovery that records nothing and delivers nothing by itself."""

    async def start(self, events: DiscoveryEvents) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None

    def set_local_card(self, data: bytes) -> None:
        return None

    def publish(self, data: bytes) -> None:
        return None

    async def peers(self) -> list[PeerStatus]:
        return []


def card_of(
    identity: Identity, *, version: int = 1, age: float = 0.0, **changes: object
) -> AgentCard:
    card = AgentCard(
        agent_id=identity.agent_id,
        name="member",
        praxis_version="0.1.0",
        role="peer",
        endpoints=(
            Endpoint("grpc", f"127.0.0.1:{abs(hash(identity.agent_id)) % 50000 + 1000}"),
            Endpoint("libp2p", f"/ip4/127.0.0.1/tcp/4001/p2p/{identity.agent_id}"),
        ),
        tools=(ToolInfo("calculator", "math", {"type": "object"}, True),),
        tags=(),
        load=CardLoad(0, 0, 8, 100),
        draining=False,
        incarnation=1,
        version=version,
        updated_at=datetime.now(UTC) - timedelta(seconds=age),
    )
    return replace(card, **changes)  # type: ignore[arg-type]


def ident(tmp_path: Path, name: str) -> Identity:
    return load_or_create_identity(tmp_path / f"{name}.key")


@pytest.fixture
async def node(tmp_path: Path) -> tuple[CardGossip, CardDirectory, Metrics]:
    cfg = make_config(tmp_path, cards={"ttl": TTL, "heartbeat": 2.0, "max_slots": 64})
    me = ident(tmp_path, "me")
    directory = CardDirectory(me.agent_id, ttl=TTL)
    metrics = Metrics()
    _, gossip, _ = await start_gossip(
        cfg, directory=directory, identity=me, discovery=Wire(), metrics=metrics, incarnation=1
    )
    assert gossip is not None
    return gossip, directory, metrics


def rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("praxis_cards_rejected_total", {"reason": reason})
    return value or 0.0


async def test_a_card_sent_as_its_own_by_another_peer_is_refused(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    gossip, directory, metrics = node
    alice, mallory = ident(tmp_path, "alice"), ident(tmp_path, "mallory")
    data = encode_signed(alice, card=card_of(alice))
    gossip.on_card(data, "exchange", mallory.agent_id)
    gossip.on_card(data, "gossip", mallory.agent_id)
    assert directory.get(alice.agent_id) is None
    assert rejected(metrics, "not_sender") == 2
    # Relayed inside a member's own exchange message, a fresh signed card is fine.
    envelope = mesh_pb2.SignedCard.FromString(encode_signed(mallory, card=card_of(mallory)))
    envelope.relayed.append(data)
    gossip.on_card(envelope.SerializeToString(), "exchange", mallory.agent_id)
    assert directory.get(alice.agent_id) is not None


async def test_a_card_issued_longer_ago_than_the_ttl_is_dropped_unless_a_status_renews_it(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    gossip, directory, metrics = node
    alice = ident(tmp_path, "alice")
    old = card_of(alice, age=3 * TTL)
    gossip.on_card(encode_signed(alice, card=old), "gossip", alice.agent_id)
    assert directory.get(alice.agent_id) is None
    assert rejected(metrics, "expired") == 1
    # The same old card with a fresh status of its incarnation: the agent is alive.
    fresh = replace(AgentStatus.of(old), version=2, updated_at=datetime.now(UTC))
    gossip.on_card(encode_signed(alice, card=old, status=fresh), "gossip", alice.agent_id)
    assert directory.get(alice.agent_id) is not None


async def test_a_stopped_members_last_card_replayed_after_removal_is_dropped(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    gossip, directory, metrics = node
    alice = ident(tmp_path, "alice")
    last = encode_signed(alice, card=card_of(alice, version=7))
    gossip.on_card(last, "gossip", alice.agent_id)
    assert directory.remove(alice.agent_id) is not None  # its TTL ran out
    gossip.on_card(last, "gossip", alice.agent_id)  # replayed within the TTL
    assert directory.get(alice.agent_id) is None
    assert rejected(metrics, "replayed") == 1
    gossip.on_card(encode_signed(alice, card=card_of(alice, version=8)), "gossip", alice.agent_id)
    assert directory.get(alice.agent_id) is not None  # it came back: newer


async def test_a_falsely_dead_members_card_is_listed_again_once_swim_holds_it_alive(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    # It refutes with a higher SWIM incarnation, not a newer card: its cards are
    # refused as replays while it is held dead, and nobody resends them before
    # its next (N-scaled) refresh. The alive verdict lists its last card again.
    gossip, directory, metrics = node
    roster = MemberRoster(directory=directory, metrics=metrics, forget_after=30.0)
    alice = ident(tmp_path, "alice")
    last = encode_signed(alice, card=card_of(alice, version=7))
    gossip.on_card(last, "gossip", alice.agent_id)
    roster.on_member(alice.agent_id, State.DEAD, 3)
    gossip.on_card(last, "exchange", alice.agent_id)
    assert directory.get(alice.agent_id) is None
    assert rejected(metrics, "replayed") == 1
    roster.on_member(alice.agent_id, State.ALIVE, 4)  # no message of hers since
    listed = directory.get(alice.agent_id)
    assert listed is not None
    assert listed.version == 7
    gossip.on_card(last, "exchange", alice.agent_id)  # and her cards are taken again
    assert rejected(metrics, "replayed") == 1


async def test_a_member_that_left_or_came_back_in_a_new_life_is_not_shown_with_its_old_card(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    gossip, directory, metrics = node
    roster = MemberRoster(directory=directory, metrics=metrics, forget_after=30.0)
    alice, bob = ident(tmp_path, "alice"), ident(tmp_path, "bob")
    gossip.on_card(encode_signed(alice, card=card_of(alice, version=7)), "gossip", alice.agent_id)
    roster.on_member(alice.agent_id, State.LEFT, 3)
    roster.on_member(alice.agent_id, State.ALIVE, 4)  # a departure is her own word
    assert directory.get(alice.agent_id) is None
    gossip.on_card(encode_signed(bob, card=card_of(bob, version=7)), "gossip", bob.agent_id)
    roster.on_member(bob.agent_id, State.DEAD, 3)
    reborn = card_of(bob, version=1, incarnation=2)
    gossip.on_card(encode_signed(bob, card=reborn), "gossip", bob.agent_id)  # restarted
    roster.on_member(bob.agent_id, State.ALIVE, 4)
    listed = directory.get(bob.agent_id)
    assert listed is not None
    assert listed.incarnation == 2


def test_a_card_listed_again_still_ends_with_its_ttl(tmp_path: Path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    directory = CardDirectory("me", ttl=TTL, clock=lambda: now[0])
    alice = card_of(ident(tmp_path, "alice"))
    directory.merge(alice)
    directory.bury(alice.agent_id)
    now[0] += timedelta(seconds=TTL * 0.75)
    assert directory.exhume(alice.agent_id) is not None
    now[0] += timedelta(seconds=TTL * 0.5)  # TTL since the burial, not since the exhumation
    assert [event.card.agent_id for event in directory.expire()] == [alice.agent_id]


async def test_addresses_of_another_peer_and_slots_over_the_ceiling_are_refused(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    gossip, directory, metrics = node
    alice, bob = ident(tmp_path, "alice"), ident(tmp_path, "bob")
    foreign = card_of(
        alice, endpoints=(Endpoint("libp2p", f"/ip4/1.2.3.4/tcp/1/p2p/{bob.agent_id}"),)
    )
    gossip.on_card(encode_signed(alice, card=foreign), "gossip", alice.agent_id)
    assert rejected(metrics, "foreign_address") == 1
    greedy = card_of(alice, load=CardLoad(0, 0, 10_000, 100))
    gossip.on_card(encode_signed(alice, card=greedy), "gossip", alice.agent_id)
    assert rejected(metrics, "too_many_slots") == 1
    assert directory.get(alice.agent_id) is None
    # A status cannot raise the slots of an accepted card either.
    fair = card_of(alice)
    gossip.on_card(encode_signed(alice, card=fair), "gossip", alice.agent_id)
    more = replace(AgentStatus.of(fair), version=2, load=CardLoad(0, 0, 10_000, 100))
    gossip.on_card(encode_signed(alice, status=more), "gossip", alice.agent_id)
    listed = directory.get(alice.agent_id)
    assert listed is not None
    assert listed.load.capacity == 8
    assert rejected(metrics, "too_many_slots") == 2


async def test_a_card_pointing_at_another_members_endpoint_is_refused(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    gossip, directory, metrics = node
    alice, mallory = ident(tmp_path, "alice"), ident(tmp_path, "mallory")
    real = card_of(alice)
    gossip.on_card(encode_signed(alice, card=real), "gossip", alice.agent_id)
    impostor = card_of(mallory, name=real.name, endpoints=(Endpoint("grpc", real.grpc_address),))
    gossip.on_card(encode_signed(mallory, card=impostor), "gossip", mallory.agent_id)
    assert directory.get(mallory.agent_id) is None
    assert rejected(metrics, "endpoint_taken") == 1
    # The same name on its own endpoint is just another agent (routing goes by id).
    namesake = card_of(mallory, name=real.name)
    gossip.on_card(encode_signed(mallory, card=namesake), "gossip", mallory.agent_id)
    assert directory.get(mallory.agent_id) is not None


async def test_sybil_cards_gossiped_by_one_peer_are_dropped(
    node: tuple[CardGossip, CardDirectory, Metrics], tmp_path: Path
) -> None:
    # GossipSub signs each message with its origin's key (strict signing), so one
    # host can gossip only as itself: cards of 20 fresh keys it made are not its own.
    gossip, directory, metrics = node
    host = ident(tmp_path, "host")
    for index in range(20):
        sybil = ident(tmp_path, f"sybil{index}")
        gossip.on_card(encode_signed(sybil, card=card_of(sybil)), "gossip", host.agent_id)
    assert directory.cards() == []
    assert rejected(metrics, "not_sender") == 20
