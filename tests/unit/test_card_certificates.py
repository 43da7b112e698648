"""Cards carry their agent's cluster certificate (issue 13), through the node's own
gossip wiring (``start_gossip``) with cluster credentials: a member relaying sybil cards
(no certificate, another CA's, a member's naming another peer) gets none of them in;
members' own cards, direct or relayed, still flow; a certificate is verified once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from praxis_grpc._gen.praxis.v1 import mesh_pb2
from praxis_grpc.card_certs import CardCertificates
from praxis_grpc.card_codec import CardRejected, encode_signed
from praxis_grpc.cards import AgentStatus, CardLoad
from praxis_grpc.certs import init_ca, issue, peer_ids
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import PeerStatus
from praxis_grpc.gossip import CardGossip
from praxis_grpc.identity import Identity
from praxis_grpc.metrics import Metrics
from praxis_grpc.p2p_setup import start_gossip
from praxis_grpc.testing.nodes import make_config
from tests.unit.test_card_checks import TTL, Wire, card_of, ident, rejected


class Recorder(Wire):
    """A Discovery that keeps what the node publishes and hands to the exchange."""

    def __init__(self) -> None:
        self.published: list[bytes] = []
        self.exchange = b""

    def set_local_card(self, data: bytes) -> None:
        self.exchange = data

    def publish(self, data: bytes) -> None:
        self.published.append(data)

    async def peers(self) -> list[PeerStatus]:
        return []


def credentials(root: Path, ca: str, name: str, identity: Identity) -> ClusterCredentials:
    """A node certificate from the CA in ``root/ca`` (made on first use) naming ``identity``."""
    ca_dir = root / ca
    if not (ca_dir / "ca.crt").exists():
        init_ca(ca_dir)
    issued = issue(ca_dir, name, root / f"{ca}-{name}", peer_id=identity.agent_id)
    return ClusterCredentials.load(
        issued.ca_cert, issued.cert, issued.key, peer_id=identity.agent_id
    )


def der(creds: ClusterCredentials) -> bytes:
    return creds.cert.public_bytes(serialization.Encoding.DER)


async def member_node(
    tmp_path: Path, me: Identity, discovery: Wire
) -> tuple[CardGossip, CardDirectory, Metrics]:
    cfg = make_config(tmp_path, cards={"ttl": TTL, "heartbeat": 2.0, "max_slots": 64})
    directory = CardDirectory(me.agent_id, ttl=TTL)
    metrics = Metrics()
    _, gossip, _ = await start_gossip(
        cfg,
        directory=directory,
        identity=me,
        discovery=discovery,
        metrics=metrics,
        incarnation=1,
        credentials=credentials(tmp_path, "ca", "me", me),
    )
    assert gossip is not None
    return gossip, directory, metrics


def relayed_entry(identity: Identity, certificate: bytes = b"") -> bytes:
    return encode_signed(identity, card=card_of(identity), certificate=certificate)


async def test_a_member_relaying_sybil_cards_gets_none_in_and_members_cards_flow(
    tmp_path: Path,
) -> None:
    me, alice, bob = ident(tmp_path, "me"), ident(tmp_path, "alice"), ident(tmp_path, "bob")
    gossip, directory, metrics = await member_node(tmp_path, me, Wire())
    alice_cert = der(credentials(tmp_path, "ca", "alice", alice))
    bob_cert = der(credentials(tmp_path, "ca", "bob", bob))
    bare, stranger, borrowed = (ident(tmp_path, f"sybil{i}") for i in range(3))
    relayed = (
        relayed_entry(bob, bob_cert),  # a member's card, relayed: accepted
        relayed_entry(bare),  # a fresh key with no certificate
        relayed_entry(stranger, der(credentials(tmp_path, "other-ca", "s", stranger))),
        relayed_entry(borrowed, alice_cert),  # a member's certificate, another key
    )
    # Alice, an admitted member (compromised), sends her own card and relays the others.
    exchange = encode_signed(alice, card=card_of(alice), relayed=relayed, certificate=alice_cert)
    gossip.on_card(exchange, "exchange", alice.agent_id)
    assert {card.agent_id for card in directory.cards()} == {alice.agent_id, bob.agent_id}
    assert rejected(metrics, "no_certificate") == 1
    assert rejected(metrics, "untrusted_certificate") == 1
    assert rejected(metrics, "foreign_certificate") == 1
    # Gossip is checked the same way: a member's own card without its certificate is not in.
    carol = ident(tmp_path, "carol")
    gossip.on_card(encode_signed(carol, card=card_of(carol)), "gossip", carol.agent_id)
    assert directory.get(carol.agent_id) is None
    assert rejected(metrics, "no_certificate") == 2


async def test_cards_go_out_with_the_certificate_and_are_relayed_with_it(
    tmp_path: Path,
) -> None:
    me, alice = ident(tmp_path, "me"), ident(tmp_path, "alice")
    wire = Recorder()
    gossip, directory, _ = await member_node(tmp_path, me, wire)
    alice_cert = der(credentials(tmp_path, "ca", "alice", alice))
    directory.publish_local(card_of(me))
    gossip.on_card(relayed_entry(alice, alice_cert), "exchange", alice.agent_id)
    gossip.refresh()
    sent = mesh_pb2.SignedCard.FromString(wire.published[-1])
    assert sent.card
    assert peer_ids(x509.load_der_x509_certificate(sent.certificate)) == [me.agent_id]
    exchange = mesh_pb2.SignedCard.FromString(wire.exchange)
    assert [mesh_pb2.SignedCard.FromString(e).certificate for e in exchange.relayed] == [alice_cert]
    gossip.refresh()  # the card was just sent: this refresh is a status alone, no certificate
    status_only = mesh_pb2.SignedCard.FromString(wire.published[-1])
    assert status_only.status
    assert not status_only.card
    assert not status_only.certificate


async def test_a_certificate_is_verified_once_and_statuses_are_not_checked(
    tmp_path: Path,
) -> None:
    me, alice = ident(tmp_path, "me"), ident(tmp_path, "alice")
    certificates = CardCertificates(credentials(tmp_path, "ca", "me", me))
    directory, metrics = CardDirectory(me.agent_id, ttl=TTL), Metrics()
    gossip = CardGossip(
        directory=directory,
        identity=me,
        discovery=Wire(),
        metrics=metrics,
        disconnect_grace=1.0,
        max_card_bytes=64 * 1024,
        certificates=certificates,
    )
    alice_cert = der(credentials(tmp_path, "ca", "alice", alice))
    card = card_of(alice)
    for version in range(1, 4):  # re-sent cards, newer each time
        card = card_of(alice, version=version)
        message = encode_signed(alice, card=card, certificate=alice_cert)
        gossip.on_card(message, "gossip", alice.agent_id)
    assert directory.get(alice.agent_id) == card
    for version in range(4, 8):  # status-only updates: no certificate to check
        status = replace(AgentStatus.of(card), version=version, load=CardLoad(version, 0, 8, 100))
        gossip.on_card(encode_signed(alice, status=status), "gossip", alice.agent_id)
    listed = directory.get(alice.agent_id)
    assert listed is not None
    assert listed.version == 7
    assert certificates.verified == 1


def test_an_expired_certificate_is_refused_without_verifying_it_again(tmp_path: Path) -> None:
    me, alice = ident(tmp_path, "me"), ident(tmp_path, "alice")
    certificates = CardCertificates(credentials(tmp_path, "ca", "me", me))
    alice_creds = credentials(tmp_path, "ca", "alice", alice)
    now = alice_creds.cert.not_valid_after_utc - timedelta(seconds=1)
    certificates.check(alice.agent_id, der(alice_creds), now)
    with pytest.raises(CardRejected, match=r"^untrusted_certificate: .* not valid now"):
        certificates.check(alice.agent_id, der(alice_creds), now + timedelta(seconds=2))
    assert certificates.verified == 1


async def test_statuses_are_refused_once_the_cards_certificate_expired(tmp_path: Path) -> None:
    # Statuses carry no certificate; without this, an agent whose certificate expired
    # would stay listed for as long as it keeps sending statuses.
    me, alice = ident(tmp_path, "me"), ident(tmp_path, "alice")
    alice_creds = credentials(tmp_path, "ca", "alice", alice)
    clock = [alice_creds.cert.not_valid_after_utc - timedelta(seconds=5)]
    directory, metrics = CardDirectory(me.agent_id, ttl=TTL), Metrics()
    gossip = CardGossip(
        directory=directory,
        identity=me,
        discovery=Wire(),
        metrics=metrics,
        disconnect_grace=1.0,
        max_card_bytes=64 * 1024,
        clock=lambda: clock[0],
        certificates=CardCertificates(credentials(tmp_path, "ca", "me", me)),
    )
    card = card_of(alice)
    gossip.on_card(
        encode_signed(alice, card=card, certificate=der(alice_creds)), "gossip", alice.agent_id
    )
    status = replace(AgentStatus.of(card), version=2)
    gossip.on_card(encode_signed(alice, status=status), "gossip", alice.agent_id)
    assert rejected(metrics, "untrusted_certificate") == 0
    clock[0] += timedelta(seconds=10)
    status = replace(AgentStatus.of(card), version=3)
    gossip.on_card(encode_signed(alice, status=status), "gossip", alice.agent_id)
    assert rejected(metrics, "untrusted_certificate") == 1
    listed = directory.get(alice.agent_id)
    assert listed is not None
    assert listed.version == 2
