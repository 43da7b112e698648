"""A failed etcd endpoint gets a new channel, so the next use of it dials
afresh instead of reusing a connection whose packets a partition dropped
(after the heal it would stay silent until TCP's next retransmission)."""

from __future__ import annotations

from praxis_grpc.consensus._etcd_endpoints import EtcdEndpoints


async def test_a_failed_endpoint_is_used_next_on_a_new_channel() -> None:
    endpoints = EtcdEndpoints(["127.0.0.1:1", "127.0.0.1:2"])
    try:
        generation, first = endpoints.current
        before = first.channel
        endpoints.failed(generation, TimeoutError("keepalive unanswered"))
        assert endpoints.current[1] is not first
        assert first.channel is not before
        endpoints.failed(generation, TimeoutError("an older report"))  # ignored
        assert endpoints.current[0] == generation + 1
    finally:
        await endpoints.aclose()
