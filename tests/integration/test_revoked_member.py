"""A revoked member (``cluster.revoked``, issue 13) cannot call the members-only
peer listener, over real sockets: its valid CA certificate gets it through the TLS
handshake, and the listener refuses it UNAUTHENTICATED, counted by reason; the
other members are served. A node started with the deny-list refuses the
revoked member's admission to the mesh."""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.certs import init_ca, peer_dns_name
from praxis_grpc.cli import main
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import Dispatch
from praxis_grpc.peers.grpc import dispatch_request
from praxis_grpc.peers.listener import peer_server
from praxis_grpc.peers.service import PeerService, add_to_server
from praxis_grpc.revocation import Revocations
from praxis_grpc.tasks.model import Submission
from praxis_grpc.testing import make_config, running_node
from tests.integration.helpers import until
from tests.integration.test_cluster_mesh import _peer_id, cluster_node
from tests.integration.test_peer_identity import member
from tests.integration.test_peer_session import Owner

# As in test_cluster_mesh: a refused peer's socket is at times left to the
# garbage collector by py-libp2p 0.8.1; collected after each test here.
pytestmark = pytest.mark.filterwarnings("ignore:Exception ignored in.*<socket.socket")


@pytest.fixture(autouse=True)
def collected() -> Iterator[None]:
    yield
    gc.collect()


def dispatch() -> Dispatch:
    return Dispatch(str(uuid.uuid4()), Submission("echo", {"n": 1}), origin_agent_id="entry")


@pytest.mark.parametrize("entry", ["peer id", "serial"])
async def test_a_revoked_member_cannot_call_the_peer_listener(tmp_path: Path, entry: str) -> None:
    init_ca(tmp_path / "ca")
    b, revoked, kept = (member(tmp_path, name) for name in ("b", "r", "k"))
    line = (
        revoked.agent_id
        if entry == "peer id"
        else f"serial={revoked.credentials.cert.serial_number:X}"
    )
    (tmp_path / "revoked").write_text(f"{line}\n")
    tls = tmp_path / "b" / "tls"
    cluster = {"ca_cert": tls / "ca.crt", "node_cert": tls / "b.crt", "node_key": tls / "b.key"}
    config = make_config(tmp_path / "b", name="b", cluster={k: str(v) for k, v in cluster.items()})
    credentials = ClusterCredentials.load(
        tls / "ca.crt",
        tls / "b.crt",
        tls / "b.key",
        peer_id=b.agent_id,
        revoked=Revocations.load(tmp_path / "revoked"),
    )
    metrics = Metrics()
    server, port = peer_server(config, metrics, credentials)
    owner = Owner()
    add_to_server(
        PeerService(owner, max_argument_bytes=4096, max_message_bytes=1 << 20, describe=Agent),
        server,
    )
    await server.start()
    as_b = [("grpc.ssl_target_name_override", peer_dns_name(b.agent_id))]
    try:
        for caller, allowed in ((revoked, False), (kept, True)):
            creds = caller.credentials.channel_credentials()
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, as_b) as channel:
                call = pb_grpc.PeerServiceStub(channel).Dispatch(
                    dispatch_request(dispatch()), timeout=10
                )
                if allowed:
                    assert (await call).task.task_id
                    continue
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "cluster.revoked" in (refused.value.details() or "")
        assert len(owner.dispatched) == 1  # the kept member's only
        labels = {"transport": "grpc", "reason": "revoked"}
        assert metrics.registry.get_sample_value("praxis_peer_calls_refused_total", labels) == 1
    finally:
        await server.stop(None)


async def test_a_node_with_a_deny_list_refuses_the_revoked_member_at_admission(
    tmp_path: Path,
) -> None:
    # cluster.revoked in the config, through the node's start-up: the revoked
    # member is refused admission and its card is never listed.
    assert main(["certs", "init", "--dir", str(tmp_path / "ca")]) == 0
    (tmp_path / "revoked").write_text(f"# n2\n{_peer_id(tmp_path / 'n2')}\n")
    config = cluster_node(tmp_path, "n1", ["system_info"])
    cluster = config.cluster.model_copy(update={"revoked": tmp_path / "revoked"})
    async with contextlib.AsyncExitStack() as stack:
        n1 = await stack.enter_async_context(
            running_node(config.model_copy(update={"cluster": cluster}))
        )
        revoked = cluster_node(tmp_path, "n2", ["calculator"], bootstrap_nodes=n1.p2p_addrs[:1])
        n2 = await stack.enter_async_context(running_node(revoked))
        registry = n1.metrics.registry
        await until(
            lambda: (
                (
                    registry.get_sample_value(
                        "praxis_admission_rejected_total", {"reason": "revoked"}
                    )
                    or 0
                )
                >= 1
            ),
            timeout=20,
        )
        assert n1.directory.get(n2.agent_id) is None
