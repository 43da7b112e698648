"""Signed agent cards on the wire between nodes (``praxis.v1.SignedCard``).

A card is signed with the sender's libp2p Ed25519 key; its agent id is the
peer id, which embeds the public key, so a receiver needs nothing but the
card to check it. Anything that fails a check is rejected with a reason that
feeds ``praxis_cards_rejected_total{reason}``.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from libp2p.peer.id import ID

from praxis_grpc._gen.praxis.v1 import mesh_pb2, types_pb2
from praxis_grpc.cards import AgentCard
from praxis_grpc.errors import InvalidArgument
from praxis_grpc.identity import Identity
from praxis_grpc.wire import card_from_proto, card_to_proto

SIGNING_CONTEXT = b"praxis-card-v1:"
DEFAULT_MAX_CARD_BYTES = 64 * 1024


class CardRejected(Exception):
    """A received card failed a check; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def encode_signed_card(card: AgentCard, identity: Identity) -> bytes:
    """Serialize and sign ``card``, which must be ``identity``'s own."""
    if card.agent_id != identity.agent_id:
        raise ValueError("a node signs only its own card")
    body = card_to_proto(card).SerializeToString(deterministic=True)
    signature = identity.sign(SIGNING_CONTEXT + body)
    return mesh_pb2.SignedCard(card=body, signature=signature).SerializeToString()


def decode_signed_card(data: bytes, max_bytes: int = DEFAULT_MAX_CARD_BYTES) -> AgentCard:
    """Parse and verify a signed card.

    Raises:
        CardRejected: reason ``oversized``, ``malformed`` or ``bad_signature``.
    """
    if len(data) > max_bytes:
        raise CardRejected("oversized", f"{len(data)} bytes exceeds {max_bytes}")
    try:
        envelope = mesh_pb2.SignedCard.FromString(data)
        message = types_pb2.AgentCard.FromString(envelope.card)
    except DecodeError as exc:
        raise CardRejected("malformed", str(exc)) from None
    try:
        public_key = ID.from_base58(message.agent_id).extract_public_key()
    except Exception as exc:
        raise CardRejected("malformed", f"agent_id is not a peer id: {exc}") from None
    if public_key is None:
        raise CardRejected("malformed", "agent_id does not embed a public key")
    try:
        valid = public_key.verify(SIGNING_CONTEXT + envelope.card, envelope.signature)
    except Exception:
        valid = False
    if not valid:
        raise CardRejected("bad_signature", f"signature does not match {message.agent_id}")
    try:
        return card_from_proto(message)
    except (InvalidArgument, ValueError, OverflowError) as exc:
        raise CardRejected("malformed", str(exc)) from None
