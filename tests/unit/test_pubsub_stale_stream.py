"""Gossip flows both ways again after a peer's old connection closes while a newer one is up.

After a partition heals, a peer dials again before the connection from before
the cut is torn down; the pubsub stream on the old connection then fails at its
next write. py-libp2p 0.8.1 forgot the peer's subscriptions on that failure,
although the peer had announced them on its stream over the new connection and
never repeats them: the node never sent it anything again and queued every
message for it ("pending message queue ... exceeded limit"). Real hosts on
loopback; the second connection and the close are made by hand.
"""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from multiaddr import Multiaddr

from tests.unit.test_libp2p_host import fully_connected, run_trio, start_node, until


def test_gossip_reaches_a_peer_whose_old_connection_closed_after_it_dialled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def test(nursery: trio.Nursery) -> None:
        repairs: list[str] = []
        a = await start_node(
            nursery, card=b"card-a", peer_exchange=False, on_gossip_repair=repairs.append
        )
        b = await start_node(
            nursery,
            card=b"card-b",
            bootstrap=(a.addr,),
            peer_exchange=False,
            on_gossip_repair=repairs.append,
        )
        await until(lambda: fully_connected(a, b), "a and b connected")
        await until(lambda: a.knows_subscribers(b) and b.knows_subscribers(a), "subscriptions")
        a_id, b_id = ID.from_base58(a.peer_id), ID.from_base58(b.peer_id)
        a_host, b_host = a.host._host, b.host._host
        assert a_host is not None
        assert b_host is not None
        a_net, b_net = a_host.get_network(), b_host.get_network()
        [old] = b_net.get_connections(a_id)
        b_pubsub = b.host._pubsub
        assert b_pubsub is not None
        announced: list[ID] = []  # subscriptions b receives, from whom

        def handle_subscription(origin: ID, message: rpc_pb2.RPC.SubOpts) -> None:
            announced.append(origin)
            type(b_pubsub).handle_subscription(b_pubsub, origin, message)

        monkeypatch.setattr(b_pubsub, "handle_subscription", handle_subscription)

        await b_net.dial_addr(Multiaddr(a.addr.rsplit("/p2p/", 1)[0]), a_id)
        await until(lambda: len(a_net.get_connections(b_id)) == 2, "a sees the new connection")
        await old.close()
        await until(lambda: len(a_net.get_connections(b_id)) == 1, "a sees the old one close")

        # Each side finds its pubsub stream on the old connection dead at its
        # next write, then opens one on the new connection with a hello that
        # announces its subscriptions: a first, and b only once a's hello is in.
        await a.host.publish(b"from-a")
        await until(lambda: a_id in announced, "a's hello on the new connection reaches b")
        await b.host.publish(b"from-b")
        await until(lambda: a.events.got(b"from-b", "gossip", b.peer_id), "a gets b's card", 5)
        await until(lambda: b.events.got(b"from-a", "gossip", a.peer_id), "b gets a's card", 5)
        assert a.knows_subscribers(b)
        assert b.knows_subscribers(a)
        assert "subscriptions_kept" in repairs  # what praxis_gossip_repairs_total counts

    run_trio(test)
