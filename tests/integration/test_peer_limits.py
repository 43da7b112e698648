"""Per-peer bounds on the members-only peer listener (issue 13), over real sockets:
a member that floods it with calls is refused RESOURCE_EXHAUSTED past
``cluster.max_calls_per_peer``, counted, while another member is still served.
(The libp2p handler's bound: tests/unit/test_peer_call_limits.py.)"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.certs import init_ca, peer_dns_name
from praxis_grpc.errors import ResourceExhausted
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import Accepted, Dispatch
from praxis_grpc.peers.grpc import GrpcPeerClient, PeerTarget, dispatch_request
from praxis_grpc.peers.listener import peer_server
from praxis_grpc.peers.service import PeerService, add_to_server
from praxis_grpc.tasks.model import Submission
from praxis_grpc.testing import make_config
from tests.integration.helpers import until
from tests.integration.test_peer_identity import member
from tests.integration.test_peer_session import Owner

LIMIT = 2
FLOOD = "flood"


class Held(Owner):
    """Holds the flooder's dispatches until ``release``; answers the others at once."""

    async def dispatch(self, dispatch: Dispatch) -> Accepted:
        self.hold = dispatch.origin_agent_id == FLOOD
        return await super().dispatch(dispatch)


def dispatch(origin: str) -> Dispatch:
    return Dispatch(str(uuid.uuid4()), Submission("echo", {"n": 1}), origin_agent_id=origin)


def refused(metrics: Metrics) -> float:
    labels = {"transport": "grpc", "reason": "per_peer_limit"}
    return metrics.registry.get_sample_value("praxis_peer_calls_refused_total", labels) or 0.0


async def test_a_flooding_member_is_refused_past_its_bound_and_another_is_served(
    tmp_path: Path,
) -> None:
    init_ca(tmp_path / "ca")
    b, flooder, other = (member(tmp_path, name) for name in ("b", "c", "d"))
    tls = tmp_path / "b" / "tls"
    cluster = {"ca_cert": tls / "ca.crt", "node_cert": tls / "b.crt", "node_key": tls / "b.key"}
    config = make_config(
        tmp_path / "b",
        name="b",
        cluster={**{k: str(v) for k, v in cluster.items()}, "max_calls_per_peer": LIMIT},
    )
    metrics = Metrics()
    server, port = peer_server(config, metrics, b.credentials)
    owner = Held()
    add_to_server(
        PeerService(owner, max_argument_bytes=4096, max_message_bytes=1 << 20, describe=Agent),
        server,
    )
    await server.start()
    address = f"127.0.0.1:{port}"
    as_b = [("grpc.ssl_target_name_override", peer_dns_name(b.agent_id))]
    channel = grpc.aio.secure_channel(address, flooder.credentials.channel_credentials(), as_b)
    served = GrpcPeerClient(
        other.agent_id,
        credentials=other.credentials.channel_credentials(),
        resolve=lambda _address: PeerTarget(address, b.agent_id),
    )
    calls: list[asyncio.Task[object]] = []
    try:
        stub = pb_grpc.PeerServiceStub(channel)
        calls = [
            asyncio.ensure_future(stub.Dispatch(dispatch_request(dispatch(FLOOD)), timeout=30))
            for _ in range(LIMIT)
        ]
        await until(lambda: len(owner.dispatched) == LIMIT, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as over:
            await stub.Dispatch(dispatch_request(dispatch(FLOOD)), timeout=10)
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "cluster.max_calls_per_peer" in (over.value.details() or "")
        assert len(owner.dispatched) == LIMIT  # the refused call never reached the service
        assert refused(metrics) == 1
        # Another member is served meanwhile (its session stream takes one of its own slots).
        sent = dispatch("entry")
        accepted = await served.dispatch("b:1", sent, call_timeout=10)
        assert accepted.task.task_id == sent.task_id
        # Past the flood, the flooder's slots come back.
        owner.release.set()
        await asyncio.gather(*calls)
        answer = await stub.Dispatch(dispatch_request(dispatch("entry")), timeout=10)
        assert answer.task.task_id
        assert refused(metrics) == 1
        # The refusal reaches a PeerClient as the domain error, not a lost peer.
        owner.release.clear()
        calls = [
            asyncio.ensure_future(stub.Dispatch(dispatch_request(dispatch(FLOOD)), timeout=30))
            for _ in range(LIMIT)
        ]
        await until(lambda: len(owner.dispatched) == 2 * LIMIT + 2, timeout=10)
        flooding = GrpcPeerClient(
            flooder.agent_id,
            credentials=flooder.credentials.channel_credentials(),
            resolve=lambda _address: PeerTarget(address, b.agent_id),
        )
        try:
            with pytest.raises(ResourceExhausted):
                await flooding.dispatch("b:1", dispatch("entry"), call_timeout=10)
        finally:
            await flooding.aclose()
        owner.release.set()
        await asyncio.gather(*calls)
    finally:
        owner.release.set()
        for call in calls:
            call.cancel()
        await served.aclose()
        await channel.close(None)
        await server.stop(None)
