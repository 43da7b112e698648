"""The card pubsub's RPCs after the hello carry no signed peer record (each cost the
receiver one or two Ed25519 verifications per RPC); the hello still does."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.utils.varint import decode_varint_with_size

from praxis_grpc.discovery._gossip import new_pubsub


@dataclass
class _Stream:
    """What ``Pubsub.write_msg`` writes to."""

    written: list[bytes] = field(default_factory=list)

    async def write(self, data: bytes) -> None:
        self.written.append(data)


def _written_rpc(data: bytes) -> rpc_pb2.RPC:
    size, prefix = decode_varint_with_size(data)
    return rpc_pb2.RPC.FromString(data[prefix : prefix + size])


@pytest.mark.parametrize("ours", [True, False])
def test_rpcs_after_the_hello_carry_no_signed_peer_record(ours: bool) -> None:
    async def main() -> None:
        host = new_host(key_pair=create_new_key_pair())
        pubsub, _ = new_pubsub(host, "praxis/cards/1", 1.0, 65536, lambda _m: None)
        writer = pubsub.write_msg if ours else lambda s, r: Pubsub.write_msg(pubsub, s, r)
        hello = pubsub.get_hello_packet()
        assert hello.HasField("senderRecord")  # written directly, not through write_msg
        rpc = rpc_pb2.RPC(publish=[rpc_pb2.Message(data=b"status", topicIDs=["praxis/cards/1"])])
        rpc.senderRecord = hello.senderRecord  # what py-libp2p attaches to every RPC
        stream = _Stream()
        assert await writer(stream, rpc)  # type: ignore[arg-type]
        sent = _written_rpc(stream.written[0])
        assert sent.publish[0].data == b"status"
        assert sent.HasField("senderRecord") is not ours

    trio.run(main)
