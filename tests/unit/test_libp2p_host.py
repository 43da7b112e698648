"""MeshHost on real loopback sockets: cards, gossip, Noise only, liveness, discovery.

Each test is a plain function that drives trio with ``trio.run`` under a hard
``trio.fail_after`` bound (pytest-asyncio only handles ``async def`` tests).
Conditions are awaited with :func:`until`, never with fixed sleeps.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from multiaddr import Multiaddr

from praxis_grpc.discovery._wire import decode_peer_list, encode_peer_list, request_card
from praxis_grpc.discovery.libp2p import HostOptions, MeshHost

LOOPBACK = Multiaddr("/ip4/127.0.0.1/tcp/0")
FAST = {"discovery_interval": 0.3, "ping_interval": 0.3}


@dataclass
class Recorder:
    """MeshCallbacks that remember everything."""

    cards: list[tuple[bytes, str, str]] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)

    def on_card(self, data: bytes, source: str, peer_id: str) -> None:
        self.cards.append((data, source, peer_id))

    def on_peer_connected(self, peer_id: str) -> None:
        self.connected.append(peer_id)

    def on_peer_disconnected(self, peer_id: str, departed: bool) -> None:
        self.disconnected.append(peer_id)
        if not departed:
            self.trimmed.append(peer_id)

    def got(self, data: bytes, source: str, peer_id: str) -> bool:
        return (data, source, peer_id) in self.cards


@dataclass
class Node:
    host: MeshHost
    events: Recorder
    addr: str
    scope: trio.CancelScope

    @property
    def peer_id(self) -> str:
        return self.addr.rsplit("/p2p/", 1)[1]

    def peer_ids(self) -> set[str]:
        return {status.peer_id for status in self.host.peers()}

    def knows_subscribers(self, *others: Node) -> bool:
        # White box: the publisher's pubsub must have seen the subscriptions.
        pubsub = self.host._pubsub
        if pubsub is None:
            return False
        subscribed = {str(peer) for peer in pubsub.peer_topics.get("praxis/cards/1", set())}
        return all(other.peer_id in subscribed for other in others)


async def start_node(nursery: trio.Nursery, card: bytes = b"", **overrides: Any) -> Node:
    options = HostOptions(key_pair=create_new_key_pair(), **{**FAST, **overrides})
    events = Recorder()
    host = MeshHost(options, events)
    host.set_local_card(card)
    scope = trio.CancelScope()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await host.run(task_status=task_status)

    addrs = await nursery.start(run)
    return Node(host, events, addrs[0], scope)


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout:g} s: {what}")


def fully_connected(*nodes: Node) -> bool:
    return all(node.peer_ids() >= {o.peer_id for o in nodes if o is not node} for node in nodes)


def run_trio(test: Callable[[trio.Nursery], Awaitable[None]], limit: float = 30.0) -> None:
    """Run ``test`` with a nursery, then stop every host; all within ``limit`` seconds."""

    async def main() -> None:
        with trio.fail_after(limit):
            async with trio.open_nursery() as nursery:
                await test(nursery)
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_bootstrap_peers_exchange_cards_and_report_the_connection() -> None:
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery, card=b"card-a")
        b = await start_node(nursery, card=b"card-b", bootstrap=(a.addr,))

        await until(lambda: a.events.got(b"card-b", "exchange", b.peer_id), "a has b's card")
        await until(lambda: b.events.got(b"card-a", "exchange", a.peer_id), "b has a's card")
        assert a.events.connected == [b.peer_id]
        assert b.events.connected == [a.peer_id]
        assert a.addr.startswith("/ip4/127.0.0.1/tcp/")
        assert a.host.listen_addrs == [a.addr]
        await until(lambda: all(s.ping_rtt is not None for s in a.host.peers()), "a pinged b")
        [status] = a.host.peers()
        assert status.peer_id == b.peer_id
        assert status.direction == "inbound"
        assert status.ping_rtt is not None
        assert 0 <= status.ping_rtt < 1
        assert time.time() - 30 < status.connected_at <= time.time()
        assert any(addr.startswith("/ip4/127.0.0.1/tcp/") for addr in status.addresses)
        assert [s.direction for s in b.host.peers()] == ["outbound"]

    run_trio(test)


def test_a_peer_gets_the_card_of_a_node_that_connected_before_its_card_was_ready() -> None:
    # A node starts discovery (and dials its bootstrap peers) before its card
    # is ready: the card names the listen addresses, and a restarted node
    # recovers its tasks first. Its card must still reach the peers it
    # connected to; the gossip of it may go out before the peers subscribe.
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery, card=b"card-a")
        b = await start_node(nursery, bootstrap=(a.addr,))
        await until(lambda: b.events.got(b"card-a", "exchange", a.peer_id), "b has a's card")
        b.host.set_local_card(b"card-b")
        await until(lambda: a.events.got(b"card-b", "exchange", b.peer_id), "a has b's card")

    run_trio(test)


def test_gossip_reaches_every_other_peer() -> None:
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery)
        b = await start_node(nursery, bootstrap=(a.addr,))
        c = await start_node(nursery, bootstrap=(a.addr,))
        await until(lambda: fully_connected(a, b, c), "full mesh")
        await until(lambda: a.knows_subscribers(b, c), "a sees b and c subscribed")

        await a.host.publish(b"hello")

        await until(lambda: b.events.got(b"hello", "gossip", a.peer_id), "b got the gossip")
        await until(lambda: c.events.got(b"hello", "gossip", a.peer_id), "c got the gossip")
        assert not any(card == b"hello" for card, _, _ in a.events.cards)

    run_trio(test)


def test_gossip_relays_more_than_ten_messages_per_second() -> None:
    # py-libp2p's default spam protection drops >10 msgs/s per forwarder and topic:
    # 30 nodes heartbeating once a second are 29 msgs/s through each relay.
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery, peer_exchange=False)
        b = await start_node(nursery, bootstrap=(a.addr,), peer_exchange=False)
        c = await start_node(nursery, bootstrap=(b.addr,), peer_exchange=False)
        await until(lambda: a.knows_subscribers(b) and b.knows_subscribers(c), "a-b-c chain")
        assert a.peer_id not in c.peer_ids()

        burst = [f"card {i}".encode() for i in range(60)]
        for data in burst:  # 40 msgs/s
            await a.host.publish(data)
            await trio.sleep(0.025)

        await until(
            lambda: all(c.events.got(data, "gossip", a.peer_id) for data in burst),
            "c got the whole burst through b",
        )

    run_trio(test)


def test_a_plaintext_dialer_cannot_connect_but_noise_can() -> None:
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery)
        target = info_from_p2p_addr(Multiaddr(a.addr))
        key = create_new_key_pair()
        plaintext = new_host(key_pair=key, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key)})
        default = new_host()  # py-libp2p's default also offers /plaintext/2.0.0
        key = create_new_key_pair()
        noise = new_host(
            key_pair=key,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(
                    key, noise_privkey=create_x25519_key_pair().private_key
                )
            },
        )
        async with plaintext.run([LOOPBACK]), default.run([LOOPBACK]), noise.run([LOOPBACK]):
            with pytest.raises(SwarmException):
                await plaintext.connect(target)
            assert a.events.connected == []
            assert a.host.peers() == []

            # The dialer works: a default host accepts it.
            await plaintext.connect(PeerInfo(default.get_id(), default.get_addrs()))
            assert default.get_id() in plaintext.get_connected_peers()

            await noise.connect(target)
            # A peer is reported once it greets (a card exchange), not on a bare connection.
            await request_card(noise, target.peer_id, b"", 64 * 1024)
            noise_id = noise.get_id().to_base58()
            await until(lambda: a.events.connected == [noise_id], "a reports the noise peer")
            for host in (plaintext, default, noise):
                await host.close()  # exiting run() alone leaks their sockets

    run_trio(test)


def test_a_stopped_peer_is_reported_disconnected_once() -> None:
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery)
        b = await start_node(nursery, bootstrap=(a.addr,))
        await until(lambda: fully_connected(a, b), "connected")

        b.scope.cancel()

        await until(lambda: a.events.disconnected == [b.peer_id], "a reports b gone")
        assert a.host.peers() == []
        assert b.events.disconnected == []  # no callbacks while shutting down

    run_trio(test)


async def blackhole_proxy(
    nursery: trio.Nursery, target: str, frozen: trio.Event
) -> trio.SocketListener:
    """A TCP relay to ``target`` that silently stops relaying once ``frozen`` is set.

    The sockets stay open, like a peer killed without FIN/RST or cut off by a
    partition: only pings can tell.
    """
    port = int(Multiaddr(target).value_for_protocol("tcp"))

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while not frozen.is_set():
            data = await source.receive_some(65536)
            if not data or frozen.is_set():
                break
            await sink.send_all(data)
        await trio.sleep_forever()

    async def relay(client: trio.SocketStream) -> None:
        if frozen.is_set():
            await trio.sleep_forever()
        server = await trio.open_tcp_stream("127.0.0.1", port)
        async with client, server, trio.open_nursery() as pumps:
            pumps.start_soon(pump, client, server)
            pumps.start_soon(pump, server, client)

    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, relay, 0, host="127.0.0.1")
    )
    [listener] = listeners
    return listener


def test_a_peer_that_stops_answering_pings_is_dropped() -> None:
    async def test(nursery: trio.Nursery) -> None:
        fast: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 0.5, "peer_exchange": False}
        a = await start_node(nursery, **fast)
        frozen = trio.Event()
        proxy = await blackhole_proxy(nursery, a.addr, frozen)
        port = proxy.socket.getsockname()[1]
        via_proxy = f"/ip4/127.0.0.1/tcp/{port}/p2p/{a.peer_id}"
        b = await start_node(nursery, bootstrap=(via_proxy,), **fast)
        await until(lambda: fully_connected(a, b), "connected through the proxy")

        frozen.set()

        await until(lambda: a.events.disconnected == [b.peer_id], "a drops b", timeout=5)
        await until(lambda: b.events.disconnected == [a.peer_id], "b drops a", timeout=5)

    run_trio(test)


def test_an_oversized_card_is_not_delivered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="praxis_grpc.discovery")
    big = b"x" * (100 * 1024)

    def rejections(peer_id: str) -> int:
        return sum(
            "over max_card_bytes" in r.getMessage() and peer_id in r.getMessage()
            for r in caplog.records
        )

    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery, card=b"card-a")
        b = await start_node(nursery, card=big, bootstrap=(a.addr,), max_card_bytes=256 * 1024)
        # Both exchanges (a's request, b's request) hit a's 64 KiB limit.
        await until(lambda: rejections(b.peer_id) >= 2, "a refused b's card twice")
        await until(lambda: b.events.got(b"card-a", "exchange", a.peer_id), "b has a's card")

        await until(lambda: b.knows_subscribers(a), "b sees a subscribed")
        await b.host.publish(big)
        await b.host.publish(b"small-b")
        await until(lambda: a.events.got(b"small-b", "gossip", b.peer_id), "a got small-b")

        assert [card for card, _, _ in a.events.cards] == [b"small-b"]
        assert rejections(b.peer_id) == 3

    run_trio(test)


def test_bootstrap_chain_ends_fully_connected() -> None:
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery)
        b = await start_node(nursery, bootstrap=(a.addr,))
        c = await start_node(nursery, bootstrap=(b.addr,))
        await until(lambda: fully_connected(a, b, c), "a, b and c all connected")

    run_trio(test)


def test_mdns_alone_connects_three_hosts() -> None:
    network = secrets.token_hex(5)  # a private service type: other meshes stay out

    async def test(nursery: trio.Nursery) -> None:
        nodes = [
            await start_node(nursery, enable_mdns=True, mdns_network=network, peer_exchange=False)
            for _ in range(3)
        ]
        await until(lambda: fully_connected(*nodes), "mDNS meshes all three", timeout=20)

    run_trio(test, limit=40)


def test_rendezvous_alone_connects_the_registrants() -> None:
    async def test(nursery: trio.Nursery) -> None:
        point = await start_node(nursery, rendezvous="praxis-test")  # serves rendezvous
        client: dict[str, Any] = {"rendezvous": "praxis-test", "peer_exchange": False}
        b = await start_node(nursery, rendezvous_points=(point.addr,), **client)
        c = await start_node(nursery, rendezvous_points=(point.addr,), **client)
        await until(lambda: fully_connected(point, b, c), "b and c found each other")

    run_trio(test)


def test_dht_alone_connects_peers_of_peers() -> None:
    async def test(nursery: trio.Nursery) -> None:
        dht: dict[str, Any] = {"enable_dht": True, "peer_exchange": False}
        a = await start_node(nursery, **dht)
        b = await start_node(nursery, bootstrap=(a.addr,), **dht)
        c = await start_node(nursery, bootstrap=(a.addr,), **dht)
        await until(lambda: fully_connected(a, b, c), "b and c found each other", timeout=20)

    run_trio(test, limit=40)


def test_a_taken_port_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def test(nursery: trio.Nursery) -> None:
            expected = pytest.RaisesExc(OSError, match="could not listen")
            with pytest.RaisesGroup(expected, flatten_subgroups=True):
                await start_node(nursery, listen_port=port)

        run_trio(test)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"listen_host": "localhost"}, "listen_host"),
        ({"listen_port": 70000}, "listen_port"),
        ({"bootstrap": ("/ip4/127.0.0.1/tcp/1",)}, "bootstrap[0]"),
        ({"rendezvous_points": ("nonsense",)}, "rendezvous_points[0]"),
        ({"mdns_network": "Has_Upper"}, "mdns_network"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"max_card_bytes": -1}, "max_card_bytes"),
    ],
)
def test_host_options_are_validated(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        HostOptions(key_pair=create_new_key_pair(), **overrides)


def test_peer_lists_round_trip_and_tolerate_garbage() -> None:
    peer = info_from_p2p_addr(Multiaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{_peer_id()}"))
    [decoded] = decode_peer_list(encode_peer_list([peer]))
    assert decoded.peer_id == peer.peer_id
    assert [str(a) for a in decoded.addrs] == ["/ip4/10.0.0.1/tcp/4001"]
    assert decode_peer_list(b"not json") == []
    assert decode_peer_list(b'{"a": 1}') == []
    assert decode_peer_list(b'[1, "/ip4/1.2.3.4/tcp/1", "junk"]') == []


def _peer_id() -> str:
    return ID.from_pubkey(create_new_key_pair().public_key).to_base58()


BOUNDED: dict[str, Any] = {"target_peers": 2, "max_peers": 3, "trim_grace": 0.3}


def test_a_bounded_degree_is_kept_and_gossip_still_reaches_everyone() -> None:
    # Before the bound every node connected to every peer it learnt (max_peers only
    # limited its own dials): the bootstrap peer of 4 others held 4 connections.
    async def test(nursery: trio.Nursery) -> None:
        a = await start_node(nursery, **BOUNDED)
        nodes = [a] + [await start_node(nursery, bootstrap=(a.addr,), **BOUNDED) for _ in range(4)]
        await until(lambda: len(a.peer_ids()) == 4 or bool(a.events.trimmed), "a over its bound")
        rounds = 0

        def everyone_heard_everyone() -> bool:
            return all(
                o.events.got(f"hello {i} {rounds}".encode(), "gossip", n.peer_id)
                for i, n in enumerate(nodes)
                for o in nodes
                if o is not n
            )

        def bounded_and_heard() -> bool:
            return all(len(n.peer_ids()) <= 3 for n in nodes) and everyone_heard_everyone()

        with trio.move_on_after(20):
            while not bounded_and_heard():
                rounds += 1
                for index, node in enumerate(nodes):
                    await node.host.publish(f"hello {index} {rounds}".encode())
                with trio.move_on_after(1.0):
                    while not everyone_heard_everyone():
                        await trio.sleep(0.05)
        assert bounded_and_heard(), [len(n.peer_ids()) for n in nodes]
        assert a.events.trimmed
        for node in nodes:  # every lost connection was a trim, never a departure
            assert set(node.events.disconnected) <= set(node.events.trimmed)

    run_trio(test, limit=40)
