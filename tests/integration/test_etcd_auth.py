"""The etcd backend against a real etcd with ``auth enable``: a member that
authenticates (username / password_file) campaigns and commits; one without
the user, or with a wrong password, does not start, and says why without
the password. And against an etcd serving TLS with ``--client-cert-auth``:
only a member with a client certificate of the CA gets in."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from praxis_grpc.certs import init_ca, issue
from praxis_grpc.config import EtcdConfig
from praxis_grpc.consensus.base import ConsensusError
from praxis_grpc.consensus.etcd import EtcdConsensus
from praxis_grpc.testing.etcd_cluster import EtcdCluster, find_etcd
from tests.integration.conftest import require_etcd
from tests.integration.helpers import free_addresses, until

PASSWORD = "s3cret-etcd-password"


@pytest.fixture(scope="module")
def etcd_with_auth() -> Iterator[str]:
    """One etcd member with a ``root`` user and auth enabled; its endpoint."""
    require_etcd()
    with EtcdCluster(1) as cluster, grpc.insecure_channel(cluster.endpoints[0]) as channel:
        auth = rpc_pb2_grpc.AuthStub(channel)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password=PASSWORD), timeout=5)
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="root"), timeout=5)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
        auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=5)
        yield cluster.endpoints[0]


def member(endpoint: str, **fields: Any) -> EtcdConsensus:
    settings = EtcdConfig(endpoints=[endpoint], lease_ttl=2, commit_timeout=2.0, **fields)
    return EtcdConsensus(settings, agent_id="agent-0", grpc_address="127.0.0.1:7000")


async def test_a_member_with_the_password_campaigns_and_commits(
    etcd_with_auth: str, tmp_path: Path
) -> None:
    secret = tmp_path / "etcd-password"
    secret.write_text(PASSWORD + "\n")
    leader = member(etcd_with_auth, username="root", password_file=secret)
    async with asyncio.timeout(10):
        await leader.start()
    try:
        await until(lambda: leader.leadership().is_self)
        await leader.commit("k", b"v", term=leader.leadership().term)
        assert (await leader.snapshot())["k"] == b"v"
    finally:
        await leader.aclose()


@pytest.mark.parametrize("fields", [{}, {"username": "root", "password": "wrong-password"}])
async def test_a_member_without_the_users_password_does_not_start(
    etcd_with_auth: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(ConsensusError) as raised:
        async with asyncio.timeout(10):
            await member(etcd_with_auth, **fields).start()
    message = str(raised.value)
    assert "ha.consensus.etcd.username" in message
    assert "wrong-password" not in message
    assert PASSWORD not in message


async def test_an_unreadable_password_file_names_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConsensusError, match=r"ha\.consensus\.etcd\.password_file .*absent"):
        await member("127.0.0.1:1", username="root", password_file=missing).start()


def test_a_password_needs_a_username_and_never_shows_in_repr() -> None:
    with pytest.raises(ValueError, match="password needs username"):
        EtcdConfig(password="x")
    assert "hidden-value" not in repr(EtcdConfig(username="u", password="hidden-value"))


@pytest.fixture
def etcd_with_tls(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """One etcd member serving TLS and requiring client certificates of a
    fresh CA: its endpoint and the CA's directory (ca, client certificate)."""
    require_etcd()
    pki = tmp_path / "pki"
    init_ca(pki)
    issue(pki, "etcd", pki, hosts=["127.0.0.1"])
    issue(pki, "member", pki)
    client, peer = free_addresses(2)
    argv = [
        str(find_etcd()),
        "--name=tls0",
        f"--data-dir={tmp_path / 'etcd'}",
        f"--listen-client-urls=https://{client}",
        f"--advertise-client-urls=https://{client}",
        f"--listen-peer-urls=http://{peer}",
        f"--initial-advertise-peer-urls=http://{peer}",
        f"--initial-cluster=tls0=http://{peer}",
        f"--cert-file={pki / 'etcd.crt'}",
        f"--key-file={pki / 'etcd.key'}",
        f"--trusted-ca-file={pki / 'ca.crt'}",
        "--client-cert-auth",
        "--log-outputs=stderr",
    ]
    log = (tmp_path / "etcd.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield client, pki
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


async def _started(endpoint: str, **fields: Any) -> EtcdConsensus:
    """A member started on the etcd just launched, once it answers (bounded)."""
    deadline = time.monotonic() + 15
    while True:
        started = member(endpoint, **fields)
        try:
            await started.start()
            return started
        except ConsensusError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_tls_to_etcd_with_a_client_certificate(etcd_with_tls: tuple[str, Path]) -> None:
    endpoint, pki = etcd_with_tls
    tls = {"ca": pki / "ca.crt", "cert": pki / "member.crt", "key": pki / "member.key"}
    good = await _started(endpoint, tls=tls)
    try:
        await good.snapshot()
    finally:
        await good.aclose()
    for refused in (member(endpoint, tls={"ca": pki / "ca.crt"}), member(endpoint)):
        with pytest.raises(ConsensusError, match="no etcd endpoint answered"):
            await refused.start()
