"""Hole punching's pure decisions: who initiates, what is offered and dialed, when."""

from __future__ import annotations

from typing import Any, cast

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from praxis_grpc.discovery._holepunch import (
    DCUTR_PROTOCOL,
    MAX_ADDRS,
    MAX_SYNC_DELAY,
    HolePunching,
    HolePunchOptions,
    dial_targets,
    initiates,
    predicted_addrs,
    sync_delay,
)

PEER = "/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBYr2dEY9wX7o"


def _id() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


def test_exactly_one_of_two_peers_initiates() -> None:
    for _ in range(20):
        a, b = _id(), _id()
        assert initiates(a, b) != initiates(b, a)
        assert not initiates(a, a)


def test_offered_addresses_are_the_observed_ip_with_the_listen_port() -> None:
    observed = [
        "/ip4/172.20.1.2/tcp/59566",  # the relay saw the NAT's side of another socket
        "/ip4/172.20.1.2/tcp/40000",
        "/p2p/relay/p2p-circuit/p2p/self",  # relayed observations say nothing
        "/ip4/127.0.0.1/tcp/5",
        "/ip6/2001:db8::1/tcp/7",
    ]
    listen = ["/ip4/192.168.1.2/tcp/35159" + PEER, "/ip4/10.0.0.1/tcp/bad"]
    assert predicted_addrs(observed, listen) == ["/ip4/172.20.1.2/tcp/35159"]
    assert predicted_addrs([], listen) == []
    many = [f"/ip4/203.0.113.{i}/tcp/1" for i in range(MAX_ADDRS + 4)]
    assert len(predicted_addrs(many, listen)) == MAX_ADDRS


def test_only_plain_tcp_addresses_other_than_the_relay_are_dialed() -> None:
    relay = "/ip4/10.200.0.1/tcp/4001" + PEER
    offered = [
        "/ip4/172.20.2.2/tcp/33781",
        "/ip4/172.20.2.2/tcp/33781" + PEER,  # the same address twice
        "/ip4/10.200.0.1/tcp/4001",  # the relay itself: never dialed as the peer
        "/dns4/example.org/tcp/1",
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/172.20.2.2/udp/1/quic-v1",
        "/ip4/1.2.3.4/tcp/0",
        "/ip4/1.2.3.4/tcp/70000",
        "/ip4/::1/tcp/1",
        "/ip6/2001:db8::2/tcp/9",
        "garbage",
    ]
    assert dial_targets(offered, [relay]) == ["/ip4/172.20.2.2/tcp/33781", "/ip6/2001:db8::2/tcp/9"]
    assert len(dial_targets([f"/ip4/203.0.113.{i}/tcp/1" for i in range(20)])) == MAX_ADDRS


def test_the_initiator_waits_half_the_round_trip_bounded() -> None:
    assert sync_delay(0.084) == 0.042
    assert sync_delay(-1.0) == 0.0
    assert sync_delay(60.0) == MAX_SYNC_DELAY


class _Stream:
    """A DCUtR stream from ``peer`` whose first read fails (the exchange ends at once)."""

    def __init__(self, peer: ID) -> None:
        self.muxed_conn = type("Conn", (), {"peer_id": peer})()
        self.was_reset = self.was_read = False

    async def read(self, n: int = -1) -> bytes:
        self.was_read = True
        raise ConnectionError("closed")

    async def reset(self) -> None:
        self.was_reset = True

    async def close(self) -> None:
        pass


class _Host:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.network = type(
            "Net", (), {"connections": {}, "register_notifee": lambda self, n: None}
        )()

    def set_stream_handler(self, protocol: str, handler: Any) -> None:
        self.handlers[protocol] = handler

    def get_network(self) -> Any:
        return self.network


def test_a_peer_gets_at_most_attempts_exchanges_answered_while_connected() -> None:
    """Answering makes this host dial what the peer offers: a peer that opens
    exchange after exchange gets only ``attempts`` of them answered."""
    host, peer = _Host(), _id()
    HolePunching(cast(Any, host), HolePunchOptions(attempts=3), lambda _: None)  # registers
    streams = [_Stream(peer) for _ in range(5)]

    async def answer_all() -> None:
        for stream in streams:
            await host.handlers[DCUTR_PROTOCOL](stream)

    trio.run(answer_all)
    assert [s.was_read for s in streams] == [True, True, True, False, False]
    assert [s.was_reset for s in streams] == [False, False, False, True, True]
