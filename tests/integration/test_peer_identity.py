"""A member's calls to another member check who answers (issue 13), over real sockets.

The members-only peer listener of agent B (mutual TLS, the cluster CA) sits at
the address that the card of agent A gives. A member that dials it to reach A
must refuse B's certificate, so none of A's dispatches reach B; dialing it to
reach B works.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.certs import PEER_URI_PREFIX, CertError, init_ca, issue, load_ca, peer_dns_name
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import Dispatch, WrongPeer
from praxis_grpc.peers.grpc import GrpcPeerClient, PeerTarget
from praxis_grpc.peers.listener import peer_server
from praxis_grpc.peers.service import PeerService, add_to_server
from praxis_grpc.tasks.model import Submission, Task, TaskState
from praxis_grpc.testing import make_config
from tests.integration.test_peer_session import NOW, Owner, serve

A_ADDRESS, B_ADDRESS = "a.example:50051", "b.example:50051"  # the gRPC addresses of the cards


@dataclass(frozen=True)
class Member:
    name: str
    agent_id: str
    credentials: ClusterCredentials


def member(root: Path, name: str) -> Member:
    agent_id = load_or_create_identity(root / name / "node.key").agent_id
    issued = issue(root / "ca", name, root / name / "tls", peer_id=agent_id)
    credentials = ClusterCredentials.load(issued.ca_cert, issued.cert, issued.key, peer_id=agent_id)
    return Member(name, agent_id, credentials)


@dataclass
class Listener:
    owner: Owner
    address: str
    metrics: Metrics


@pytest.fixture
async def b_listener(tmp_path: Path) -> AsyncIterator[tuple[Listener, dict[str, Member]]]:
    init_ca(tmp_path / "ca")
    members = {name: member(tmp_path, name) for name in ("a", "b", "c")}
    b = members["b"]
    tls = tmp_path / "b" / "tls"
    cluster = {"ca_cert": tls / "ca.crt", "node_cert": tls / "b.crt", "node_key": tls / "b.key"}
    config = make_config(tmp_path / "b", name="b", cluster={k: str(v) for k, v in cluster.items()})
    metrics = Metrics()
    server, port = peer_server(config, metrics, b.credentials)
    owner = Owner()
    service = PeerService(owner, max_argument_bytes=4096, max_message_bytes=1 << 20, describe=Agent)
    add_to_server(service, server)
    await server.start()
    try:
        yield Listener(owner, f"127.0.0.1:{port}", metrics), members
    finally:
        await server.stop(None)


def dispatch() -> Dispatch:
    return Dispatch(str(uuid.uuid4()), Submission("echo", {"n": 1}), origin_agent_id="entry")


async def test_a_member_at_another_members_address_gets_none_of_its_dispatches(
    b_listener: tuple[Listener, dict[str, Member]], caplog: pytest.LogCaptureFixture
) -> None:
    listener, members = b_listener
    # B's listener is where A's card points (A left, B took its port).
    cards = {
        A_ADDRESS: PeerTarget(listener.address, members["a"].agent_id),
        B_ADDRESS: PeerTarget(listener.address, members["b"].agent_id),
    }
    metrics = Metrics()
    caller = GrpcPeerClient(
        members["c"].agent_id,
        credentials=members["c"].credentials.channel_credentials(),
        resolve=cards.__getitem__,
        metrics=metrics,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="praxis_grpc.peers.grpc"):
            for _ in range(2):
                with pytest.raises(WrongPeer) as refused:
                    await caller.dispatch(A_ADDRESS, dispatch(), call_timeout=10)
                assert refused.value.sent is False  # safe to send elsewhere
            with pytest.raises(WrongPeer):
                await caller.relay_get(A_ADDRESS, str(uuid.uuid4()), call_timeout=10)
        assert listener.owner.dispatched == []
        assert metrics.registry.get_sample_value("praxis_peer_wrong_identity_total") == 3
        warnings = [r for r in caplog.records if A_ADDRESS in r.getMessage()]
        assert len(warnings) == 1  # logged once per address
        # The same listener, dialed to reach B, is B: the call goes through.
        sent = dispatch()
        accepted = await caller.dispatch(B_ADDRESS, sent, call_timeout=10)
        assert accepted.task.task_id == sent.task_id
        assert listener.owner.dispatched == [sent.task_id]
    finally:
        await caller.aclose()


async def test_without_a_known_agent_the_dialed_host_is_checked(
    b_listener: tuple[Listener, dict[str, Member]],
) -> None:
    # No card names the address (e.g. a coordinator's address before its card
    # arrives): TLS checks the host, as for any server (B's certificate names
    # 127.0.0.1).
    listener, members = b_listener
    caller = GrpcPeerClient(
        members["c"].agent_id,
        credentials=members["c"].credentials.channel_credentials(),
        resolve=lambda address: PeerTarget(listener.address),
    )
    try:
        sent = dispatch()
        accepted = await caller.dispatch("anywhere:1", sent, call_timeout=10)
        assert accepted.task.task_id == sent.task_id
    finally:
        await caller.aclose()


def test_a_node_certificate_without_the_peer_dns_name_is_refused_at_start(
    tmp_path: Path,
) -> None:
    init_ca(tmp_path / "ca")
    b = member(tmp_path, "b")
    san = b.credentials.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert peer_dns_name(b.agent_id) in san.value.get_values_for_type(x509.DNSName)
    # A certificate that names the peer id in its URI SAN only (issued before
    # members checked whom they dial) no longer makes a node a member.
    cert, key = _uri_only_certificate(tmp_path, b.agent_id)
    with pytest.raises(CertError, match=r"cluster\.node_cert: .* lacks the DNS name"):
        ClusterCredentials.load(tmp_path / "ca" / "ca.crt", cert, key, peer_id=b.agent_id)


def _uri_only_certificate(root: Path, agent_id: str) -> tuple[Path, Path]:
    ca_cert, ca_key = load_ca(root / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(PEER_URI_PREFIX + agent_id)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = root / "old.crt", root / "old.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Following(Owner):
    """Follows stay open after the first state until the caller goes away."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = asyncio.Event()

    async def follow(self, task_id: str) -> AsyncIterator[Task]:
        try:
            yield Task(task_id, "echo", {}, TaskState.WORKING, NOW, NOW, owner_agent_id="b")
            await asyncio.Event().wait()
        finally:
            self.ended.set()

    def relay_watch(self, task_id: str) -> AsyncIterator[Task]:
        return self.follow(task_id)


async def test_closing_a_follow_early_still_ends_the_call() -> None:
    # The refusal counter wraps every call; a stream closed early must still end
    # its call at once (PeerClient contract), not when the wrapper is collected.
    owner = Following()
    service = PeerService(owner, max_argument_bytes=4096, max_message_bytes=1 << 20, describe=Agent)
    server, address = await serve(service)
    client = GrpcPeerClient("entry")
    try:
        for follow in (client.follow, client.relay_watch):
            owner.ended.clear()
            stream = follow(address, str(uuid.uuid4()))
            first = await anext(aiter(stream))
            assert first.state is TaskState.WORKING
            await stream.aclose()  # type: ignore[attr-defined]
            await asyncio.wait_for(owner.ended.wait(), timeout=10)
    finally:
        await client.aclose()
        await server.stop(None)
