"""Cluster credentials: a node's own certificate is checked at start (the error names
the key), a peer's certificate must be the CA's and name the authenticated peer id,
and a CA bundle admits certificates of either CA (rotation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from praxis_grpc.certs import CertError, init_ca, issue
from praxis_grpc.cluster import AdmissionRefused, ClusterCredentials
from praxis_grpc.identity import load_or_create_identity


def member(ca: Path, out: Path, name: str) -> tuple[ClusterCredentials, str]:
    peer_id = load_or_create_identity(out / f"{name}.node.key").agent_id
    issued = issue(ca, name, out, peer_id=peer_id)
    return ClusterCredentials.load(
        issued.ca_cert, issued.cert, issued.key, peer_id=peer_id
    ), peer_id


def test_a_peer_certificate_must_be_the_cas_and_name_the_authenticated_peer(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    init_ca(tmp_path / "other")
    a, _ = member(tmp_path / "ca", tmp_path / "a", "a")
    b, b_id = member(tmp_path / "ca", tmp_path / "b", "b")
    stranger, s_id = member(tmp_path / "other", tmp_path / "s", "s")
    a.check_peer(b.cert_der, b_id)
    for der, peer_id, reason in [
        (b"", b_id, "no_certificate"),
        (b"junk", b_id, "malformed"),
        (stranger.cert_der, s_id, "untrusted"),
        (b.cert_der, s_id, "peer_id_mismatch"),  # b's certificate replayed by another key
    ]:
        with pytest.raises(AdmissionRefused) as info:
            a.check_peer(der, peer_id)
        assert info.value.reason == reason


def test_a_node_refuses_a_certificate_that_is_not_its_own(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    init_ca(tmp_path / "other")
    _, a_id = member(tmp_path / "ca", tmp_path / "a", "a")
    issued = issue(tmp_path / "ca", "b", tmp_path / "b", peer_id=a_id)
    with pytest.raises(CertError, match=r"cluster\.node_cert: .* not this node's"):
        ClusterCredentials.load(issued.ca_cert, issued.cert, issued.key, peer_id="12D3KooWother")
    with pytest.raises(CertError, match=r"cluster\.node_cert: .*not issued by the CA"):
        ClusterCredentials.load(
            tmp_path / "other" / "ca.crt", issued.cert, issued.key, peer_id=a_id
        )
    with pytest.raises(CertError, match=r"cluster\.node_key: .* is not the key of"):
        ClusterCredentials.load(issued.ca_cert, issued.cert, tmp_path / "a" / "a.key", peer_id=a_id)
    with pytest.raises(CertError, match=r"cluster\.ca_cert: cannot read"):
        ClusterCredentials.load(tmp_path / "none.crt", issued.cert, issued.key, peer_id=a_id)


def test_a_ca_bundle_admits_members_of_either_ca(tmp_path: Path) -> None:
    init_ca(tmp_path / "old")
    init_ca(tmp_path / "new")
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(
        (tmp_path / "old" / "ca.crt").read_bytes() + (tmp_path / "new" / "ca.crt").read_bytes()
    )
    old, _ = member(tmp_path / "old", tmp_path / "o", "o")
    new, new_id = member(tmp_path / "new", tmp_path / "n", "n")
    peer_id = load_or_create_identity(tmp_path / "o" / "o.node.key").agent_id
    both = ClusterCredentials.load(
        bundle, tmp_path / "o" / "o.crt", tmp_path / "o" / "o.key", peer_id=peer_id
    )
    both.check_peer(new.cert_der, new_id)
    with pytest.raises(AdmissionRefused):
        old.check_peer(new.cert_der, new_id)
