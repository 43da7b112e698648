"""Hole punching (``p2p.hole_punching``): upgrade a relayed connection to a
direct one, the DCUtR way, without ever touching the relayed one. Trio thread only.

Two peers connected only through a relay run ``/libp2p/dcutr`` (DCUtR's
messages) over that relayed connection: the initiator (the smaller peer id,
so exactly one session per pair) sends CONNECT with the addresses it expects
to be reachable at, the other answers CONNECT with its own, the initiator
measures that round trip, sends SYNC and waits half of it; the other dials
on receiving SYNC. Both dial from their listen port (``SO_REUSEPORT``) to the
other's addresses at the same moment, so each NAT sees an outgoing packet
before the peer's arrives (TCP simultaneous open). At most
:attr:`HolePunchOptions.attempts` exchanges per session and one session per
peer as long as the host stays connected to it (and at most as many exchanges
answered per peer meanwhile); each dial is bounded by
:attr:`HolePunchOptions.dial_timeout` and its socket closed when it fails.
Once direct, new streams to the peer take the direct connection (the swarm
prefers direct connections); the relayed one stays open either way.

Why not py-libp2p 0.8.1's ``DCUtRProtocol`` (tried on the branch
``wt-nat-dcutr-experiment``, see the README): both peers initiate at once
(two sessions dialing the same 4-tuple from the same port: ``EADDRNOTAVAIL``),
its attempt budget is reset whenever any connection to the peer closes, each
session first dials the peer's private addresses, it writes the addresses it
learns into the peer's address book for 10 minutes, and its dials go through
``Swarm.dial_addr``, which retries and, on a peer-id mismatch, clears the
peer's whole address book. Here the dials are single attempts
(``Swarm.dial_addr_as_responder``, ``Swarm._dial_addr_single_attempt``) and
nothing is written into the peerstore.

Which address a peer is reachable at: its NAT's address as peers observe it
(identify's observed addresses) with its own listen port, i.e. a NAT that
keeps the source port where it can (Linux masquerade, most home routers).
A symmetric NAT maps every destination to a new port: the dials fail, the
outcome is "failed", and the relayed connection carries on.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import read_dcutr_msg
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.utils import write_delimited_msg
from multiaddr import Multiaddr

from praxis_grpc.discovery._admission import StreamHandler
from praxis_grpc.discovery._notifee import QuietNotifee

__all__ = [
    "DCUTR_PROTOCOL",
    "HolePunchOptions",
    "HolePunching",
    "dial_targets",
    "initiates",
    "predicted_addrs",
    "sync_delay",
]

log = logging.getLogger("praxis_grpc.discovery")

DCUTR_PROTOCOL = TProtocol("/libp2p/dcutr")
MAX_ADDRS = 8
"""Addresses sent in, and taken from, a CONNECT message."""
MAX_SYNC_DELAY = 2.0


@dataclass(frozen=True)
class HolePunchOptions:
    """Bounds of hole punching."""

    attempts: int = 3
    """Exchanges (each followed by dials) per session before giving up."""
    dial_timeout: float = 3.0
    """Bound on each attempt's dials (a TCP SYN is retransmitted after 1 s)."""
    io_timeout: float = 5.0
    """Bound on each message of the exchange over the relayed connection."""
    interval: float = 2.0
    """How often the host looks for peers it reaches only through a relay."""


class _Skipped(Exception):
    """Nothing to punch with: no address to offer or to dial, or the peer does not run it."""


def initiates(own: ID, peer: ID) -> bool:
    """Whether this host starts the session with ``peer`` (the smaller id does:
    one session per pair, so two never dial the same 4-tuple at once)."""
    return own.to_bytes() < peer.to_bytes()


def sync_delay(rtt: float) -> float:
    """How long the initiator waits after SYNC: half the measured round trip
    (the SYNC's way to the peer), at most :data:`MAX_SYNC_DELAY`."""
    return min(max(rtt / 2, 0.0), MAX_SYNC_DELAY)


def _ip_tcp(addr: str) -> tuple[str, int] | None:
    """(ip, port) of ``/ip4|ip6/<ip>/tcp/<port>[/p2p/<id>]``; None for anything else."""
    parts = addr.split("/")
    if len(parts) < 5 or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        return None
    if len(parts) > 5 and not (len(parts) == 7 and parts[5] == "p2p"):
        return None
    try:
        ip = ipaddress.ip_address(parts[2])
        port = int(parts[4])
    except ValueError:
        return None
    if (ip.version == 4) != (parts[1] == "ip4") or not 0 < port < 65536:
        return None
    return str(ip), port


def predicted_addrs(observed: Iterable[str], listen: Iterable[str]) -> list[str]:
    """The addresses to offer: each IP peers observed this host at (its NAT's
    public side) with each listen port of the same family; relayed observations
    and loopback are left out; at most :data:`MAX_ADDRS`, first seen first."""
    ports = [p for p in (_ip_tcp(a) for a in listen) if p is not None]
    out: list[str] = []
    for addr in observed:
        seen = _ip_tcp(addr)
        if seen is None or ipaddress.ip_address(seen[0]).is_loopback:
            continue
        family = "ip6" if ":" in seen[0] else "ip4"
        for ip, port in ports:
            if (":" in ip) == (family == "ip6"):
                candidate = f"/{family}/{seen[0]}/tcp/{port}"
                if candidate not in out:
                    out.append(candidate)
    return out[:MAX_ADDRS]


def dial_targets(offered: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """The peer's offered addresses worth dialing: plain ``/ip*/tcp`` ones
    (no relay, no DNS, no loopback), not in ``exclude`` (the relay's own
    addresses), at most :data:`MAX_ADDRS`."""
    excluded = {p for p in (_ip_tcp(a) for a in exclude) if p is not None}
    out: list[str] = []
    for addr in offered:
        target = _ip_tcp(addr)
        if target is None or target in excluded or ipaddress.ip_address(target[0]).is_loopback:
            continue
        family = "ip6" if ":" in target[0] else "ip4"
        text = f"/{family}/{target[0]}/tcp/{target[1]}"
        if text not in out:
            out.append(text)
    return out[:MAX_ADDRS]


def _relayed(conn: Any) -> bool:
    with suppress(Exception):
        if conn.get_connection_type() == ConnectionType.RELAYED:
            return True
    actual = getattr(conn, "_actual_transport_addresses", None)
    addrs = actual if actual is not None else conn.get_transport_addresses()
    return any("/p2p-circuit" in str(a) for a in addrs)


class HolePunching:
    """Hole punching on one host (see the module docstring).

    ``on_outcome`` (trio thread, must not block: a counter) gets the outcome
    of every session this host initiates: "direct" (now directly connected),
    "failed" (the relayed connection stays) or "skipped" (nothing to punch
    with: no observed address, or the peer does not run hole punching).
    """

    def __init__(
        self,
        host: IHost,
        options: HolePunchOptions,
        on_outcome: Callable[[str], None],
        gate: Callable[[StreamHandler], StreamHandler] = lambda h: h,
    ) -> None:
        self._host = host
        self._options = options
        self._on_outcome = on_outcome
        self._tried: set[ID] = set()
        self._answering: set[ID] = set()
        self._answered: dict[ID, int] = {}
        """Exchanges answered per peer while connected to it: at most ``attempts``,
        so a peer cannot make this host dial addresses of its choice again and again."""
        self._appeared: dict[ID, trio.Event] = {}
        """Set when a direct connection to the peer appears while dialing it."""
        host.set_stream_handler(DCUTR_PROTOCOL, gate(self._answer))
        host.get_network().register_notifee(_Connections(self._connected))

    def direct(self, peer: ID) -> bool:
        """Whether the host holds an open direct (not relayed) connection to ``peer``."""
        conns = self._host.get_network().connections.get(peer) or []
        return any(not c.is_closed and not _relayed(c) for c in conns)

    def _relayed_only(self) -> list[ID]:
        own = self._host.get_id()
        found = []
        for peer, conns in list(self._host.get_network().connections.items()):
            live = [c for c in conns if not c.is_closed]
            if peer != own and live and all(_relayed(c) for c in live):
                found.append(peer)
        return found

    async def run(self) -> None:
        """Punch, one session at a time, towards every peer reached only through
        a relay that this host initiates with; forever."""
        own = self._host.get_id()
        while True:
            await trio.sleep(self._options.interval)
            connected = self._host.get_network().connections
            # A peer the host lost every connection to gets a new session next time.
            self._tried = {p for p in self._tried if connected.get(p)}
            self._answered = {p: n for p, n in self._answered.items() if connected.get(p)}
            for peer in self._relayed_only():
                if peer in self._tried or not initiates(own, peer):
                    continue
                self._tried.add(peer)
                outcome = await self._session(peer)
                log.info("hole punch to %s: %s", peer, outcome)
                self._on_outcome(outcome)

    async def _session(self, peer: ID) -> str:
        for attempt in range(self._options.attempts):
            try:
                await self._attempt(peer)
            except _Skipped as exc:
                log.debug("hole punch to %s skipped: %s", peer, exc)
                return "skipped"
            except Exception as exc:
                log.debug("hole punch to %s, attempt %d: %r", peer, attempt + 1, exc)
            if self.direct(peer):
                return "direct"
        return "failed"

    def _own_addrs(self) -> list[str]:
        manager = getattr(self._host, "_observed_addr_manager", None)
        observed = [str(a) for a in manager.addrs(min_observers=1)] if manager is not None else []
        listen = [str(a) for a in self._host.get_addrs() if "/p2p-circuit" not in str(a)]
        return predicted_addrs(observed, listen)

    def _source(self) -> tuple[str, int] | None:
        for addr in self._host.get_addrs():
            found = _ip_tcp(str(addr))
            if found is not None:
                return found
        return None

    def _relay_addrs(self, peer: ID) -> list[str]:
        """The addresses of the relays ``peer`` is reached through (never dialed as the peer)."""
        out: list[str] = []
        for conn in self._host.get_network().connections.get(peer) or []:
            for addr in conn.get_transport_addresses():
                head = str(addr).split("/p2p-circuit")[0]
                if head != str(addr) and "/p2p/" in head:
                    with suppress(Exception):
                        relay = ID.from_base58(head.rsplit("/p2p/", 1)[1])
                        out += [str(a) for a in self._host.get_peerstore().addrs(relay)]
        return out

    async def _attempt(self, peer: ID) -> None:
        ours = self._own_addrs()
        if not ours:
            raise _Skipped("no observed address to offer")
        options = self._options
        try:
            stream = await self._host.new_stream(peer, [DCUTR_PROTOCOL])
        except Exception as exc:
            raise _Skipped(f"cannot open {DCUTR_PROTOCOL}: {exc!r}") from exc
        try:
            with trio.fail_after(options.io_timeout):
                sent = time.monotonic()
                await write_delimited_msg(stream, _message(HolePunch.CONNECT, ours))
                reply = await read_dcutr_msg(stream, HolePunch)
                rtt = time.monotonic() - sent
                if reply.type != HolePunch.CONNECT:
                    raise ValueError(f"expected CONNECT, got {reply.type}")
                await write_delimited_msg(stream, _message(HolePunch.SYNC, []))
        finally:
            with suppress(Exception):
                await stream.close()
        targets = dial_targets(_decode(reply.ObsAddrs), self._relay_addrs(peer))
        if not targets:
            raise _Skipped("the peer offered no address to dial")
        await trio.sleep(sync_delay(rtt))
        # We are DCUtR's initiator: the spec's server side of a simultaneous open.
        await self._dial(peer, targets, as_responder=True)

    async def _answer(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        answered = self._answered.get(peer, 0)
        if peer in self._answering or answered >= self._options.attempts or self.direct(peer):
            await stream.reset()
            return
        self._answered[peer] = answered + 1
        self._answering.add(peer)
        try:
            with trio.fail_after(self._options.io_timeout):
                connect = await read_dcutr_msg(stream, HolePunch)
                if connect.type != HolePunch.CONNECT:
                    return
                await write_delimited_msg(stream, _message(HolePunch.CONNECT, self._own_addrs()))
                sync = await read_dcutr_msg(stream, HolePunch)
                if sync.type != HolePunch.SYNC:
                    return
            targets = dial_targets(_decode(connect.ObsAddrs), self._relay_addrs(peer))
            if targets:
                await self._dial(peer, targets, as_responder=False)
        except Exception as exc:
            log.debug("answering a hole punch from %s: %r", peer, exc)
        finally:
            self._answering.discard(peer)
            with suppress(Exception):
                await stream.close()

    async def _dial(self, peer: ID, targets: list[str], *, as_responder: bool) -> None:
        """Dial every target from the listen port until a direct connection to
        ``peer`` appears (the peer's dial may land on our listener instead), for
        at most dial_timeout; the dials still running are then cancelled."""
        source = self._source()
        appeared = self._appeared.setdefault(peer, trio.Event())
        try:
            with trio.move_on_after(self._options.dial_timeout):
                async with trio.open_nursery() as nursery:
                    for target in targets:
                        nursery.start_soon(self._dial_one, peer, target, source, as_responder)
                    await appeared.wait()
                    nursery.cancel_scope.cancel()
        finally:
            self._appeared.pop(peer, None)

    async def _dial_one(
        self, peer: ID, target: str, source: tuple[str, int] | None, as_responder: bool
    ) -> None:
        network: Any = self._host.get_network()
        addr = Multiaddr(f"{target}/p2p/{peer.to_base58()}")
        try:
            # Single attempts: Swarm.dial_addr retries and clears the peer's
            # address book on a peer-id mismatch.
            if as_responder:
                await network.dial_addr_as_responder(addr, peer, source)
            else:
                await network._dial_addr_single_attempt(addr, peer, source)
        except Exception as exc:
            log.debug("hole punch dial %s: %r", target, exc)
        else:
            self._connected(peer)

    def _connected(self, peer: ID) -> None:
        if peer in self._appeared and self.direct(peer):
            self._appeared[peer].set()


class _Connections(QuietNotifee):
    """Tells of every new connection (the peer's punch may arrive on the listener)."""

    def __init__(self, on_connected: Callable[[ID], None]) -> None:
        self._on_connected = on_connected

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._on_connected(conn.muxed_conn.peer_id)


def _message(kind: Any, addrs: list[str]) -> HolePunch:
    message = HolePunch()
    message.type = kind
    message.ObsAddrs.extend(Multiaddr(a).to_bytes() for a in addrs)
    return message


def _decode(raw: Iterable[bytes]) -> list[str]:
    out = []
    for data in list(raw)[:MAX_ADDRS]:
        with suppress(Exception):
            out.append(str(Multiaddr(data)))
    return out
