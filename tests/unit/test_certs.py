"""``praxis certs``: the CA and the certificates it issues work for (m)TLS."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from praxis_grpc.certs import CertError, init_ca, issue, peer_ids, verify_issued_by
from praxis_grpc.cli import main
from praxis_grpc.identity import load_or_create_identity


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_issued_certificate_is_signed_by_the_ca_and_names_the_peer(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    issued = issue(tmp_path / "ca", "node1", tmp_path / "node1", peer_id="12D3KooWabc")
    verify_issued_by(_cert(issued.cert), _cert(ca))
    assert peer_ids(_cert(issued.cert)) == ["12D3KooWabc"]
    assert issued.ca_cert.read_bytes() == ca.read_bytes()
    for key in (tmp_path / "ca" / "ca.key", issued.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    init_ca(tmp_path / "a")
    other = init_ca(tmp_path / "b")
    issued = issue(tmp_path / "a", "node1", tmp_path / "a")
    with pytest.raises(CertError, match="not issued by the CA"):
        verify_issued_by(_cert(issued.cert), _cert(other))


def test_nothing_is_overwritten(tmp_path: Path) -> None:
    init_ca(tmp_path)
    with pytest.raises(CertError, match="never overwritten"):
        init_ca(tmp_path)
    issue(tmp_path, "node1", tmp_path)
    with pytest.raises(CertError, match="never overwritten"):
        issue(tmp_path, "node1", tmp_path)


@pytest.mark.parametrize("name", ["", "ca", "../x", ".hidden"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    init_ca(tmp_path)
    with pytest.raises(CertError, match="plain file name"):
        issue(tmp_path, name, tmp_path)


def test_cli_issues_a_node_certificate_for_the_nodes_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "init", "--dir", str(tmp_path / "ca")]) == 0
    key = tmp_path / "data" / "node.key"
    argv = ["certs", "issue", "n1", "--dir", str(tmp_path / "ca"), "--node-key", str(key)]
    assert main([*argv, "--host", "10.0.0.1", "--json"]) == 0
    peer = load_or_create_identity(key).agent_id
    assert f'"peer_id": "{peer}"' in capsys.readouterr().out
    assert peer_ids(_cert(tmp_path / "ca" / "n1.crt")) == [peer]


def test_cli_errors_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "issue", "n1", "--dir", str(tmp_path)]) == 2
    assert "no CA in" in capsys.readouterr().err
    assert main(["certs", "init", "--dir", str(tmp_path), "--days", "0"]) == 2


async def test_mutual_tls_handshake_needs_a_certificate_from_the_ca(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    server = issue(tmp_path / "ca", "server", tmp_path / "ca")
    client = issue(tmp_path / "ca", "client", tmp_path / "ca")
    init_ca(tmp_path / "rogue")
    rogue = issue(tmp_path / "rogue", "client", tmp_path / "rogue")
    grpc_server = grpc.aio.server()
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    port = grpc_server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(server.key.read_bytes(), server.cert.read_bytes())],
            root_certificates=ca.read_bytes(),
            require_client_auth=True,
        ),
    )
    await grpc_server.start()

    async def check(pair: tuple[Path, Path] | None) -> None:
        creds = grpc.ssl_channel_credentials(
            ca.read_bytes(),
            *((pair[1].read_bytes(), pair[0].read_bytes()) if pair else (None, None)),
        )
        async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

    try:
        await check((client.cert, client.key))
        for pair in (None, (rogue.cert, rogue.key)):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await check(pair)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await grpc_server.stop(None)
