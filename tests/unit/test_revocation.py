"""The cluster's deny-list (``cluster.revoked``, issue 13): its file, and the three
places that refuse what it names: admission, card checks, and a node's own start.
(The members-only peer listener: tests/integration/test_revoked_member.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from praxis_grpc.card_certs import CardCertificates
from praxis_grpc.card_codec import CardRejected
from praxis_grpc.certs import CertError, init_ca, issue
from praxis_grpc.cluster import AdmissionRefused, ClusterCredentials
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.revocation import NOTHING_REVOKED, Revocations

PEER = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"


def member(
    root: Path, name: str, revoked: Revocations = NOTHING_REVOKED
) -> tuple[ClusterCredentials, str]:
    peer_id = load_or_create_identity(root / name / "node.key").agent_id
    issued = issue(root / "ca", name, root / name, peer_id=peer_id)
    credentials = ClusterCredentials.load(
        issued.ca_cert, issued.cert, issued.key, peer_id=peer_id, revoked=revoked
    )
    return credentials, peer_id


def deny_list(root: Path, text: str) -> Revocations:
    path = root / "revoked"
    path.write_text(text)
    return Revocations.load(path)


def test_the_file_names_peer_ids_and_serials(tmp_path: Path) -> None:
    revoked = deny_list(
        tmp_path,
        f"# n2 left the company\n{PEER}\n\nserial=1A2B3C  # as openssl x509 -serial prints it\n"
        "serial 0xff:EE\n",
    )
    assert revoked.peer_ids == {PEER}
    assert revoked.serials == {0x1A2B3C, 0xFFEE}
    assert revoked.refuses(PEER, 1)
    assert revoked.refuses("12D3KooWother", 0xFFEE)
    assert not revoked.refuses("12D3KooWother", 1)
    assert not deny_list(tmp_path, "# nothing yet\n")
    with pytest.raises(CertError, match=r"cluster\.revoked: .*revoked:2: neither a peer id"):
        deny_list(tmp_path, f"{PEER}\nn2.example\n")
    with pytest.raises(CertError, match=r"cluster\.revoked: cannot read"):
        Revocations.load(tmp_path / "missing")


def test_admission_and_card_checks_refuse_a_revoked_member(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    b, b_id = member(tmp_path, "b")
    c, c_id = member(tmp_path, "c")
    by_id = deny_list(tmp_path, f"{b_id}\n")
    by_serial = deny_list(tmp_path, f"serial={c.cert.serial_number:X}\n")
    for revoked, refused_der, refused_id, kept_der, kept_id in [
        (by_id, b.cert_der, b_id, c.cert_der, c_id),
        (by_serial, c.cert_der, c_id, b.cert_der, b_id),
    ]:
        a, _ = member(tmp_path, f"a{len(revoked.serials)}", revoked)
        with pytest.raises(AdmissionRefused) as refused:
            a.check_peer(refused_der, refused_id)
        assert refused.value.reason == "revoked"
        a.check_peer(kept_der, kept_id)  # the other member is still one
        cards = CardCertificates(a)
        now = datetime.now(UTC)
        with pytest.raises(CardRejected) as rejected:
            cards.check(refused_id, refused_der, now)
        assert rejected.value.reason == "revoked_certificate"
        cards.check(kept_id, kept_der, now)


def test_a_node_whose_own_certificate_is_revoked_does_not_start(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    peer_id = load_or_create_identity(tmp_path / "n" / "node.key").agent_id
    issued = issue(tmp_path / "ca", "n", tmp_path / "n", peer_id=peer_id)
    revoked = deny_list(tmp_path, f"{peer_id}\n")
    with pytest.raises(CertError, match=r"cluster\.node_cert: .*is revoked \(cluster\.revoked\)"):
        ClusterCredentials.load(
            issued.ca_cert, issued.cert, issued.key, peer_id=peer_id, revoked=revoked
        )
