"""A pubsub stream whose protocol negotiation fails, or whose hello finds it
reset or broken, is opened again while the peer stays connected (py-libp2p
0.8.1 gave up on it for good, so after a partition a coordinator never again
received a worker's cards). No sockets: a stand-in host and trio's mock clock."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
import trio
import trio.testing
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamError, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub

from praxis_grpc.discovery._gossip import new_pubsub


@pytest.mark.parametrize(
    "failure",
    [
        StreamFailure("failed to open a stream"),  # the protocol negotiation
        StreamReset("Cannot write to stream; stream is reset"),  # the hello's write
        StreamError("Write operation failed"),
    ],
)
def test_a_failed_opening_of_the_pubsub_stream_is_retried(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    repairs: list[str] = []
    pubsub, _ = new_pubsub(
        MagicMock(), "cards", 1.0, 4096, lambda message: None, on_repair=repairs.append
    )
    peer = ID(b"\x00\x04peer")
    attempts: list[ID] = []

    async def negotiate(self: Pubsub, peer_id: ID) -> None:
        attempts.append(peer_id)
        if len(attempts) < 3:
            raise failure

    monkeypatch.setattr(Pubsub, "_handle_new_peer", negotiate)
    monkeypatch.setattr(pubsub, "_peer_is_connected", lambda peer_id: True)

    async def main() -> None:
        await pubsub._handle_new_peer_with_retry(peer)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert attempts == [peer, peer, peer]
    assert repairs == ["stream_retried", "stream_retried"]
