"""A cluster with admission (issue 13): in-process nodes on real libp2p hosts and real
gRPC over loopback, with a CA and node certificates made by ``praxis certs``.

Delegation runs over the members-only peer listener (mutual TLS); a client without a
cluster certificate cannot even finish the TLS handshake, one with a CA certificate
that names no member is UNAUTHENTICATED, and a member cannot relay in another's name.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as peer_pb
from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as peer_grpc
from praxis_grpc._gen.praxis.v1 import agent_service_pb2 as agent_pb
from praxis_grpc._gen.praxis.v1 import agent_service_pb2_grpc as agent_grpc
from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.certs import issue
from praxis_grpc.cli import main
from praxis_grpc.node import Node, StartupError
from praxis_grpc.testing import make_config, running_node
from tests.integration.helpers import until

# py-libp2p 0.8.1 now and then leaves the socket of a connection closed while the
# other side closes it too (a refused stranger) to the garbage collector; it is
# collected after each test here, so no later test is blamed for it.
pytestmark = pytest.mark.filterwarnings("ignore:Exception ignored in.*<socket.socket")


@pytest.fixture(autouse=True)
def collected() -> Iterator[None]:
    yield
    gc.collect()


def cluster_node(root: Path, name: str, builtins: list[str], **p2p: Any) -> Any:
    """The config of a member: ``praxis certs issue`` names its node key's peer id."""
    data = root / name
    argv = ["certs", "issue", name, "--dir", str(root / "ca"), "--out", str(data / "tls")]
    assert main([*argv, "--node-key", str(data / "node.key")]) == 0
    return make_config(
        data,
        name=name,
        metrics={"enabled": False},
        tools={"builtins": builtins},
        cards={"heartbeat": "200ms", "ttl": "3s"},
        p2p={"enabled": True, "rendezvous": "", "disconnect_grace": "300ms", **p2p},
        cluster={**_cluster(data / "tls", name), "admission_timeout": "2s"},
    )


def _cluster(tls: Path, name: str) -> Mapping[str, str]:
    return {
        "ca_cert": str(tls / "ca.crt"),
        "node_cert": str(tls / f"{name}.crt"),
        "node_key": str(tls / f"{name}.key"),
    }


def add(a: float, b: float) -> pb.SubmitTaskRequest:
    arguments = struct_pb2.Struct()
    arguments.update({"expression": f"{a} + {b}"})
    return pb.SubmitTaskRequest(tool="calculator", arguments=arguments, wait=True)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    assert main(["certs", "init", "--dir", str(tmp_path / "ca")]) == 0
    return tmp_path / "ca"


async def test_three_members_delegate_over_mutual_tls(tmp_path: Path, ca: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        n1 = await stack.enter_async_context(
            running_node(cluster_node(tmp_path, "n1", ["system_info"]))
        )
        seed = n1.p2p_addrs[:1]
        n2 = await stack.enter_async_context(
            running_node(cluster_node(tmp_path, "n2", ["system_info"], bootstrap_nodes=seed))
        )
        n3 = await stack.enter_async_context(
            running_node(cluster_node(tmp_path, "n3", ["calculator"], bootstrap_nodes=seed))
        )
        nodes = (n1, n2, n3)
        await until(lambda: all(len(n.directory) == 3 for n in nodes), timeout=20)
        # Every card, direct or relayed, came with its agent's certificate.
        for node in nodes:
            for reason in ("no_certificate", "untrusted_certificate", "foreign_certificate"):
                sample = node.metrics.registry.get_sample_value(
                    "praxis_cards_rejected_total", {"reason": reason}
                )
                assert not sample, (reason, sample)
        card = n1.directory.get(n3.agent_id)
        assert card is not None
        assert card.peer_tls_address == n3.endpoints.peer
        assert card.peer_tls_address != card.grpc_address
        async with grpc.aio.insecure_channel(n1.endpoints.grpc) as channel:
            response = await pb_grpc.TaskServiceStub(channel).SubmitTask(add(2, 3), timeout=20)
        task = response.task
        assert task.state == types_pb2.TASK_STATE_COMPLETED, task.error
        assert task.owner_agent_id == n3.agent_id
        assert dict(task.result)["result"] == 5
        # Another member described through n1: Describe over the members-only listener.
        async with grpc.aio.insecure_channel(n1.endpoints.grpc) as channel:
            described = await agent_grpc.AgentServiceStub(channel).GetAgent(
                agent_pb.GetAgentRequest(agent_id=n3.agent_id), timeout=20
            )
        assert (described.agent.agent_id, described.agent.name) == (n3.agent_id, "n3")
        # The public port no longer serves the peer service.
        async with grpc.aio.insecure_channel(n3.endpoints.grpc) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await peer_grpc.PeerServiceStub(channel).RelayGet(
                    peer_pb.RelayGetRequest(relayed_by=n1.agent_id, task_id=task.task_id),
                    timeout=5,
                )
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_stranger_node_gets_no_card_in_and_no_task(tmp_path: Path, ca: Path) -> None:
    # The first attack of issue 13: a node with a fresh key bootstraps from a member
    # and offers the calculator with every slot free.
    async with contextlib.AsyncExitStack() as stack:
        member = await stack.enter_async_context(
            running_node(cluster_node(tmp_path, "n1", ["system_info"]))
        )
        stranger_config = make_config(
            tmp_path / "s",
            name="s",
            metrics={"enabled": False},
            tools={"builtins": ["calculator"]},
            tasks={"max_concurrency": 1000},
            cards={"heartbeat": "200ms", "ttl": "3s"},
            p2p={"enabled": True, "rendezvous": "", "bootstrap_nodes": member.p2p_addrs[:1]},
        )
        stranger = await stack.enter_async_context(running_node(stranger_config))
        registry = member.metrics.registry
        await until(
            lambda: (
                (
                    registry.get_sample_value(
                        "praxis_admission_rejected_total", {"reason": "no_certificate"}
                    )
                    or 0
                )
                >= 1
            ),
            timeout=20,
        )
        assert member.directory.get(stranger.agent_id) is None
        assert stranger.directory.get(member.agent_id) is None
        async with grpc.aio.insecure_channel(member.endpoints.grpc) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.TaskServiceStub(channel).SubmitTask(add(1, 1), timeout=10)
        assert info.value.code() != grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(stranger.endpoints.grpc) as channel:
            listed = await pb_grpc.TaskServiceStub(channel).ListTasks(
                pb.ListTasksRequest(page_size=10), timeout=5
            )
        assert list(listed.tasks) == []  # nothing was dispatched to it


async def test_the_peer_service_takes_members_only(tmp_path: Path, ca: Path) -> None:
    outsider = issue(ca, "client", tmp_path / "client")  # a CA certificate, but no peer id
    async with contextlib.AsyncExitStack() as stack:
        n1 = await stack.enter_async_context(
            running_node(cluster_node(tmp_path, "n1", ["calculator"]))
        )
        peer = n1.endpoints.peer
        assert peer is not None
        request = peer_pb.RelayGetRequest(
            relayed_by=n1.agent_id, task_id="00000000-0000-4000-8000-000000000000"
        )
        ca_pem = (ca / "ca.crt").read_bytes()

        async def call(credentials: grpc.ChannelCredentials, relay: Any = request) -> Any:
            async with grpc.aio.secure_channel(peer, credentials) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await peer_grpc.PeerServiceStub(channel).RelayGet(relay, timeout=5)
            return info.value

        # No client certificate: the TLS handshake itself fails.
        error = await call(grpc.ssl_channel_credentials(root_certificates=ca_pem))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        # Plaintext: nothing to talk to either.
        async with grpc.aio.insecure_channel(peer) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as plain:
                await peer_grpc.PeerServiceStub(channel).RelayGet(request, timeout=5)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        # A certificate from the CA that names no member.
        client = grpc.ssl_channel_credentials(
            root_certificates=ca_pem,
            private_key=outsider.key.read_bytes(),
            certificate_chain=outsider.cert.read_bytes(),
        )
        error = await call(client)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        # A member relaying in another member's name.
        n2 = cluster_node(tmp_path, "n2", ["calculator"])
        tls = tmp_path / "n2" / "tls"
        member = grpc.ssl_channel_credentials(
            root_certificates=ca_pem,
            private_key=(tls / "n2.key").read_bytes(),
            certificate_chain=(tls / "n2.crt").read_bytes(),
        )
        error = await call(member)  # relayed_by names n1, the certificate n2
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert n2.cluster.enabled
        # In its own name the same member gets through to the handler (no such task).
        own = peer_pb.RelayGetRequest(relayed_by=_peer_id(tmp_path / "n2"), task_id=request.task_id)
        error = await call(member, own)
        assert error.code() not in {
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAVAILABLE,
        }


async def test_a_node_whose_certificate_is_not_its_own_does_not_start(
    tmp_path: Path, ca: Path
) -> None:
    config = cluster_node(tmp_path, "n1", ["calculator"])
    other = tmp_path / "other.key"
    argv = ["certs", "issue", "stolen", "--dir", str(ca), "--out", str(tmp_path / "o")]
    assert main([*argv, "--node-key", str(other)]) == 0
    stolen = config.model_copy(
        update={
            "cluster": config.cluster.model_copy(
                update={
                    "node_cert": tmp_path / "o" / "stolen.crt",
                    "node_key": tmp_path / "o" / "stolen.key",
                }
            )
        }
    )
    with pytest.raises(StartupError, match=r"cluster\.node_cert: .* not this node's"):
        await Node(stolen).start()


def _peer_id(data_dir: Path) -> str:
    from praxis_grpc.identity import load_or_create_identity

    return load_or_create_identity(data_dir / "node.key").agent_id
