"""Discovery loops that learn peers from other peers: rendezvous, Kademlia, peer exchange.

Each loop only *learns* peers and hands them to the :class:`Dialer`; none of
them dials directly. Every loop runs until cancelled, logs its failures and
keeps going. Once the host has its target degree a round learns nothing worth
dialing, so the rounds are skipped; below it a round runs, but one that
changed nothing will most likely find nothing the next time either (a mesh
smaller than the target degree never reaches it). Either way the interval
doubles (up to :data:`MAX_BACKOFF_FACTOR` times) while the set of connected
peers stays the same; any change starts over at ``interval``.
"""

from __future__ import annotations

import logging
import random
import time
from functools import partial

import trio
from libp2p.abc import IHost
from libp2p.discovery.rendezvous import RendezvousClient
from libp2p.discovery.rendezvous.config import DEFAULT_DISCOVER_LIMIT
from libp2p.kad_dht import KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from praxis_grpc.discovery._dialer import Dialer
from praxis_grpc.discovery._wire import request_peers

log = logging.getLogger("praxis_grpc.discovery")

REGISTRATION_TTL = 300
"""Seconds a rendezvous registration lives; refreshed at half of that."""

PEER_EXCHANGE_FANOUT = 3
"""Connected peers asked for their peers on each periodic peer-exchange round."""

MAX_BACKOFF_FACTOR = 16
"""A discovery round is at most this many ``interval``s after the previous one."""


class Pacer:
    """Spaces discovery rounds: ``interval`` after a change of the connected peers,
    doubling up to :data:`MAX_BACKOFF_FACTOR` x while they stay the same."""

    def __init__(self, host: IHost, dialer: Dialer, interval: float) -> None:
        self._host = host
        self._dialer = dialer
        self._interval = interval
        self._delay = interval
        self._last: frozenset[ID] = frozenset()

    def wanted(self) -> bool:
        """Whether a round should dial (the host is below its target degree)."""
        return self._dialer.below_target()

    def next_delay(self) -> float:
        """Seconds until the next round."""
        connected = frozenset(self._dialer.neighbours())
        if connected != self._last:
            self._delay = self._interval
        else:
            self._delay = min(self._delay * 2, self._interval * MAX_BACKOFF_FACTOR)
        self._last = connected
        return self._delay


async def rendezvous_client(
    host: IHost,
    dialer: Dialer,
    point: ID,
    namespace: str,
    *,
    interval: float,
    round_timeout: float,
) -> None:
    """Register under ``namespace`` at ``point`` and dial the other registrants.

    Registration is renewed at half its TTL and again whenever the connection
    to the point comes back (a restarted point has forgotten us). Discovery
    runs while below the target degree, paced by :class:`Pacer`. The
    connection to the point itself is kept by
    :func:`~praxis_grpc.discovery._dialer.keep_connected`.
    """
    client = RendezvousClient(host, point)
    pacer = Pacer(host, dialer, interval)
    renew_at = 0.0
    until = 0.0
    while True:
        if not dialer.is_connected(point):
            renew_at = 0.0
        elif time.monotonic() >= renew_at or (pacer.wanted() and time.monotonic() >= until):
            try:
                with trio.fail_after(round_timeout):
                    if time.monotonic() >= renew_at:
                        ttl = await client.register(namespace, REGISTRATION_TTL)
                        renew_at = time.monotonic() + ttl / 2
                    found: list[PeerInfo] = []
                    if pacer.wanted():
                        found, _cookie = await client.discover(namespace, DEFAULT_DISCOVER_LIMIT)
            except Exception as exc:
                log.warning("rendezvous at %s (%s) failed: %r", point, namespace, exc)
            else:
                for info in found:
                    dialer.dial_soon(info, "rendezvous")
            until = time.monotonic() + pacer.next_delay()
        await trio.sleep(interval)


async def dht_walk(
    host: IHost, dht: KadDHT, dialer: Dialer, *, interval: float, round_timeout: float
) -> None:
    """While below the target degree, refresh the Kademlia routing table and dial its peers.

    Connected peers that serve the DHT join the routing table; a self lookup
    then learns the peers our peers know (with their addresses), so a node
    that starts with one bootstrap peer finds the others. Paced by :class:`Pacer`.
    """
    pacer = Pacer(host, dialer, interval)
    while True:
        if not pacer.wanted():
            await trio.sleep(pacer.next_delay())
            continue
        try:
            for peer_id in host.get_connected_peers():
                await dht.add_peer(peer_id)
            with trio.move_on_after(round_timeout):
                await dht.peer_routing.refresh_routing_table()
        except Exception:
            log.exception("DHT routing table refresh failed")
        for peer_id in dht.routing_table.get_peer_ids():
            dialer.dial_soon(PeerInfo(peer_id, []), "dht")
        await trio.sleep(pacer.next_delay())


async def exchange_peers(
    host: IHost, dialer: Dialer, peer_id: ID, *, exchange_timeout: float
) -> None:
    """Ask ``peer_id`` for its peers and dial the ones we do not know; never raises."""
    try:
        with trio.fail_after(exchange_timeout):
            found = await request_peers(host, peer_id)
    except Exception as exc:
        log.debug("peer exchange with %s failed: %r", peer_id, exc)
        return
    # In random order: every node that joins through the same peer gets the same
    # list, and dialing it in order piles them all onto its first few entries.
    random.shuffle(found)
    for info in found:
        dialer.dial_soon(info, f"peer exchange via {peer_id}")


async def peer_exchange_rounds(
    host: IHost, dialer: Dialer, *, interval: float, exchange_timeout: float
) -> None:
    """While below the target degree, run :func:`exchange_peers` with a few random
    connected peers; rounds paced by :class:`Pacer`."""
    pacer = Pacer(host, dialer, interval)
    while True:
        await trio.sleep(pacer.next_delay())
        if not pacer.wanted():
            continue
        connected = dialer.neighbours()
        chosen = random.sample(connected, min(PEER_EXCHANGE_FANOUT, len(connected)))
        async with trio.open_nursery() as nursery:
            for peer_id in chosen:
                nursery.start_soon(
                    partial(exchange_peers, exchange_timeout=exchange_timeout),
                    host,
                    dialer,
                    peer_id,
                )
