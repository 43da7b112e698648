"""``praxis up --secure``'s files: made once, reused, re-issued for a new node key."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from praxis_grpc.api.tokens import TokenStore
from praxis_grpc.certs import peer_ids
from praxis_grpc.config import validate_config
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.secure_setup import SecureSetup


def test_files_are_made_once_and_the_tokens_authenticate(tmp_path: Path) -> None:
    setup = SecureSetup(tmp_path / "secure")
    setup.prepare()
    first = setup.tokens_text.read_text()
    setup.prepare()
    assert setup.tokens_text.read_text() == first
    assert (setup.tokens_text.stat().st_mode & 0o077) == 0
    store = TokenStore.load(setup.tokens_file)
    for name in ("admin", "client", "reader"):
        entry = store.authenticate(setup.token(name))
        assert entry is not None
        assert entry.name == name


def test_a_node_certificate_follows_the_nodes_key(tmp_path: Path) -> None:
    setup = SecureSetup(tmp_path / "secure")
    setup.prepare()
    data = tmp_path / "node1"
    overlay = setup.node_overlay("node1", data)
    validate_config(overlay)
    cert = Path(overlay["cluster"]["node_cert"])
    peer = load_or_create_identity(data / "node.key").agent_id
    assert peer_ids(x509.load_pem_x509_certificate(cert.read_bytes())) == [peer]
    (data / "node.key").unlink()  # a fresh node directory: a new key
    setup.node_overlay("node1", data)
    renewed = load_or_create_identity(data / "node.key").agent_id
    assert renewed != peer
    assert peer_ids(x509.load_pem_x509_certificate(cert.read_bytes())) == [renewed]
