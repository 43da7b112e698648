"""Signed cards: round trip, forgery, tampering, size."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from praxis_grpc._gen.praxis.v1 import mesh_pb2
from praxis_grpc.card_codec import CardRejected, decode_signed_card, encode_signed_card
from praxis_grpc.cards import AgentCard, CardLoad, Endpoint, ToolInfo
from praxis_grpc.identity import Identity, load_or_create_identity


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return load_or_create_identity(tmp_path / "a.key")


def card_of(identity: Identity, **changes: object) -> AgentCard:
    card = AgentCard(
        agent_id=identity.agent_id,
        name="a",
        praxis_version="0.1.0",
        role="peer",
        endpoints=(Endpoint("grpc", "127.0.0.1:1"),),
        tools=(ToolInfo("calculator", "math", {"type": "object", "required": ["x"]}, True, 5.0),),
        tags=("general",),
        load=CardLoad(1, 2, 8, 100),
        draining=False,
        incarnation=3,
        version=7,
        updated_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    return replace(card, **changes)  # type: ignore[arg-type]


def test_round_trip(identity: Identity) -> None:
    card = card_of(identity)
    assert decode_signed_card(encode_signed_card(card, identity)) == card


def test_forged_card_is_rejected(identity: Identity, tmp_path: Path) -> None:
    mallory = load_or_create_identity(tmp_path / "m.key")
    # Mallory signs a card claiming to be the victim.
    envelope = mesh_pb2.SignedCard.FromString(encode_signed_card(card_of(mallory), mallory))
    victim = mesh_pb2.SignedCard.FromString(encode_signed_card(card_of(identity), identity))
    forged = mesh_pb2.SignedCard(card=victim.card, signature=envelope.signature)
    with pytest.raises(CardRejected) as info:
        decode_signed_card(forged.SerializeToString())
    assert info.value.reason == "bad_signature"


def test_tampered_card_is_rejected(identity: Identity) -> None:
    envelope = mesh_pb2.SignedCard.FromString(encode_signed_card(card_of(identity), identity))
    body = bytearray(envelope.card)
    body[-1] ^= 1
    tampered = mesh_pb2.SignedCard(card=bytes(body), signature=envelope.signature)
    with pytest.raises(CardRejected) as info:
        decode_signed_card(tampered.SerializeToString())
    assert info.value.reason in {"bad_signature", "malformed"}


def test_oversized_and_garbage(identity: Identity) -> None:
    data = encode_signed_card(card_of(identity), identity)
    with pytest.raises(CardRejected) as info:
        decode_signed_card(data, max_bytes=len(data) - 1)
    assert info.value.reason == "oversized"
    with pytest.raises(CardRejected) as info:
        decode_signed_card(b"\xff\xff\xff")
    assert info.value.reason == "malformed"


def test_only_own_card_is_signed(identity: Identity, tmp_path: Path) -> None:
    other = load_or_create_identity(tmp_path / "o.key")
    with pytest.raises(ValueError, match="own card"):
        encode_signed_card(card_of(other), identity)
