"""Signed cards and statuses on the wire between nodes (``praxis.v1.SignedCard``).

A card and a status are each signed with the sender's libp2p Ed25519 key; the
agent id is the peer id, which embeds the public key, so a receiver needs
nothing but the message to check it. A message carries a card, a status, or
both. Anything that fails a check is rejected with a reason that feeds
``praxis_cards_rejected_total{reason}``.

Verifying a card costs an Ed25519 check and a full decode; an agent's card of
one (incarnation, version) is always the same bytes, so :class:`CardCache`
remembers what it verified and returns it again without either.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC

from google.protobuf.message import DecodeError
from libp2p.crypto.keys import PublicKey
from libp2p.peer.id import ID

from praxis_grpc._gen.praxis.v1 import mesh_pb2, types_pb2
from praxis_grpc.cards import AgentCard, AgentStatus, CardLoad
from praxis_grpc.errors import InvalidArgument
from praxis_grpc.identity import Identity
from praxis_grpc.wire import card_from_proto, card_to_proto, load_to_proto, role_to_proto
from praxis_grpc.wire import timestamp as timestamp_to_proto

SIGNING_CONTEXT = b"praxis-card-v1:"
STATUS_SIGNING_CONTEXT = b"praxis-status-v1:"
DEFAULT_MAX_CARD_BYTES = 64 * 1024
DEFAULT_CACHE_SIZE = 4096
_ROLE_NAMES = {role_to_proto(name): name for name in ("peer", "coordinator", "standby")}


class CardRejected(Exception):
    """A received card failed a check; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class SignedPart:
    """A serialized card or status with its signature, not yet verified."""

    body: bytes
    signature: bytes


@dataclass(frozen=True)
class MeshMessage:
    """A received message, split into its parts (signatures not yet checked)."""

    card: SignedPart | None
    status: SignedPart | None
    relayed: tuple[bytes, ...] = ()
    certificate: bytes = b""


def encode_signed(
    identity: Identity,
    card: AgentCard | None = None,
    status: AgentStatus | None = None,
    relayed: tuple[bytes, ...] = (),
    certificate: bytes = b"",
) -> bytes:
    """Serialize and sign ``card`` and/or ``status``, which must be ``identity``'s own.

    ``relayed`` messages of other agents are added as they are; ``certificate``
    (this node's, DER, in a cluster) goes with the card only.
    """
    message = mesh_pb2.SignedCard(relayed=relayed)
    if card is not None:
        message.certificate = certificate
        if card.agent_id != identity.agent_id:
            raise ValueError("a node signs only its own card")
        message.card = card_to_proto(card).SerializeToString(deterministic=True)
        message.signature = identity.sign(SIGNING_CONTEXT + message.card)
    if status is not None:
        if status.agent_id != identity.agent_id:
            raise ValueError("a node signs only its own status")
        message.status = status_to_proto(status).SerializeToString(deterministic=True)
        message.status_signature = identity.sign(STATUS_SIGNING_CONTEXT + message.status)
    return message.SerializeToString()


def encode_signed_card(card: AgentCard, identity: Identity) -> bytes:
    """Serialize and sign ``card`` alone."""
    return encode_signed(identity, card=card)


def split_message(data: bytes, max_bytes: int = DEFAULT_MAX_CARD_BYTES) -> MeshMessage:
    """The card part, the status part and the relayed messages of a message.

    Raises:
        CardRejected: reason ``oversized`` or ``malformed`` (also when it has no part).
    """
    if len(data) > max_bytes:
        raise CardRejected("oversized", f"{len(data)} bytes exceeds {max_bytes}")
    try:
        envelope = mesh_pb2.SignedCard.FromString(data)
    except DecodeError as exc:
        raise CardRejected("malformed", str(exc)) from None
    card = SignedPart(envelope.card, envelope.signature) if envelope.card else None
    status = SignedPart(envelope.status, envelope.status_signature) if envelope.status else None
    if card is None and status is None and not envelope.relayed:
        raise CardRejected("malformed", "neither a card nor a status")
    return MeshMessage(card, status, tuple(envelope.relayed), envelope.certificate)


def verify_card(part: SignedPart) -> AgentCard:
    """Parse and verify a signed card.

    Raises:
        CardRejected: reason ``malformed`` or ``bad_signature``.
    """
    try:
        message = types_pb2.AgentCard.FromString(part.body)
    except DecodeError as exc:
        raise CardRejected("malformed", str(exc)) from None
    _check_signature(message.agent_id, SIGNING_CONTEXT + part.body, part.signature)
    try:
        return card_from_proto(message)
    except (InvalidArgument, ValueError, OverflowError) as exc:
        raise CardRejected("malformed", str(exc)) from None


def read_status(part: SignedPart) -> AgentStatus:
    """Parse a status *without* checking its signature (to drop stale ones cheaply).

    Raises:
        CardRejected: reason ``malformed``.
    """
    try:
        message = mesh_pb2.AgentStatus.FromString(part.body)
        return status_from_proto(message)
    except (DecodeError, ValueError, OverflowError) as exc:
        raise CardRejected("malformed", f"status: {exc}") from None


def verify_status(part: SignedPart, status: AgentStatus) -> None:
    """Check that ``status`` (read from ``part``) is signed by its agent.

    Raises:
        CardRejected: reason ``malformed`` or ``bad_signature``.
    """
    _check_signature(status.agent_id, STATUS_SIGNING_CONTEXT + part.body, part.signature)


def decode_signed_card(data: bytes, max_bytes: int = DEFAULT_MAX_CARD_BYTES) -> AgentCard:
    """Parse and verify the card of a message.

    Raises:
        CardRejected: reason ``oversized``, ``malformed`` or ``bad_signature``.
    """
    card = split_message(data, max_bytes).card
    if card is None:
        raise CardRejected("malformed", "no card in the message")
    return verify_card(card)


def decode_signed_status(data: bytes, max_bytes: int = DEFAULT_MAX_CARD_BYTES) -> AgentStatus:
    """Parse and verify the status of a message (same errors as :func:`decode_signed_card`)."""
    part = split_message(data, max_bytes).status
    if part is None:
        raise CardRejected("malformed", "no status in the message")
    status = read_status(part)
    verify_status(part, status)
    return status


class CardCache:
    """Cards already verified, by the digest of their signed bytes; bounded, least recent out.

    A hit returns the decoded card without checking the signature again: the
    digest covers body and signature, so only the very bytes verified before hit.
    """

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        self._size = size
        self._cards: OrderedDict[bytes, AgentCard] = OrderedDict()
        self.verified = 0

    def __len__(self) -> int:
        return len(self._cards)

    def verify(self, part: SignedPart) -> AgentCard:
        """:func:`verify_card`, at most once per distinct signed card (while cached)."""
        key = hashlib.sha256(part.signature + part.body).digest()
        card = self._cards.get(key)
        if card is not None:
            self._cards.move_to_end(key)
            return card
        card = verify_card(part)
        self.verified += 1
        self._cards[key] = card
        if len(self._cards) > self._size:
            self._cards.popitem(last=False)
        return card


def status_to_proto(status: AgentStatus) -> mesh_pb2.AgentStatus:
    """A domain status as ``praxis.v1.AgentStatus``."""
    return mesh_pb2.AgentStatus(
        agent_id=status.agent_id,
        incarnation=status.incarnation,
        version=status.version,
        load=load_to_proto(status.load),
        draining=status.draining,
        role=role_to_proto(status.role),
        updated_at=timestamp_to_proto(status.updated_at),
    )


def status_from_proto(message: mesh_pb2.AgentStatus) -> AgentStatus:
    """A ``praxis.v1.AgentStatus`` as a domain status."""
    load = message.load
    return AgentStatus(
        agent_id=message.agent_id,
        incarnation=message.incarnation,
        version=message.version,
        load=CardLoad(load.in_flight, load.queued, load.capacity, load.queue_limit),
        draining=message.draining,
        role=_ROLE_NAMES.get(message.role, "peer"),
        updated_at=message.updated_at.ToDatetime(tzinfo=UTC),
    )


def _public_key(agent_id: str) -> PublicKey:
    try:
        public_key = ID.from_base58(agent_id).extract_public_key()
    except Exception as exc:
        raise CardRejected("malformed", f"agent_id is not a peer id: {exc}") from None
    if public_key is None:
        raise CardRejected("malformed", "agent_id does not embed a public key")
    return public_key


def _check_signature(agent_id: str, signed: bytes, signature: bytes) -> None:
    public_key = _public_key(agent_id)
    try:
        valid = public_key.verify(signed, signature)
    except Exception:
        valid = False
    if not valid:
        raise CardRejected("bad_signature", f"signature does not match {agent_id}")
