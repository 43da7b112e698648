"""What a :class:`~praxis_grpc.discovery.libp2p.MeshHost` is given and what it reports."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from libp2p.crypto.keys import KeyPair
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from praxis_grpc.discovery._admission import AdmissionOptions

_MDNS_NETWORK = re.compile(r"[a-z0-9]{1,11}")
_POSITIVE = (
    "heartbeat_interval",
    "discovery_interval",
    "ping_interval",
    "ping_timeout",
    "stream_timeout",
    "dial_timeout",
    "max_card_bytes",
    "max_peers",
    "target_peers",
)


@dataclass(frozen=True)
class HostOptions:
    """Everything a :class:`MeshHost` needs; validated on construction (``ValueError``)."""

    key_pair: KeyPair
    """The node's Ed25519 identity (``praxis_grpc.identity``); its peer id is the agent id."""
    listen_host: str = "127.0.0.1"
    """IP address to listen on."""
    listen_port: int = 0
    """TCP port; 0 picks a free one."""
    bootstrap: tuple[str, ...] = ()
    """Multiaddrs ending in ``/p2p/<id>``, dialed at start and redialed whenever lost."""
    enable_mdns: bool = False
    """Announce and find peers with mDNS on the listening interface."""
    enable_dht: bool = False
    """Run a Kademlia DHT (server mode) and dial every peer in its routing table."""
    rendezvous: str = ""
    """Rendezvous namespace; "" turns rendezvous off."""
    rendezvous_points: tuple[str, ...] = ()
    """Multiaddrs of rendezvous servers. None given (or only this host), and a namespace
    set: this host serves rendezvous itself."""
    topic: str = "praxis/cards/1"
    """GossipSub topic the cards travel on."""
    heartbeat_interval: float = 1.0
    """GossipSub heartbeat, seconds."""
    max_card_bytes: int = 64 * 1024
    """Cards above this size are neither sent nor delivered."""
    peer_exchange: bool = True
    """Ask peers for their peers (``/praxis/peers/1.0.0``) and dial them."""
    mdns_network: str = ""
    """Private mDNS label (1-11 of ``[a-z0-9]``): only hosts with the same label find
    each other. "" uses the standard libp2p service ``_p2p._udp.local``."""
    discovery_interval: float = 5.0
    """Seconds between rendezvous, DHT and peer-exchange rounds."""
    ping_interval: float = 1.0
    """Seconds between pings to each connected peer."""
    ping_timeout: float = 2.0
    """A ping slower than this fails; two failures in a row close the peer's connections.
    On a CPU-starved host slow pings look like dead peers: raise it there."""
    stream_timeout: float = 5.0
    """Bound on each card or peer exchange, and each rendezvous round."""
    dial_timeout: float = 10.0
    """Bound on each dial."""
    target_peers: int = 8
    """Discovery stops dialing (and its rounds back off) at this many connected peers."""
    max_peers: int = 12
    """Above this many connected peers, the newest unprotected ones are trimmed back to
    ``target_peers`` (bootstrap and rendezvous points are kept, as are peers connected
    for less than ``trim_grace``)."""
    trim_grace: float = 5.0
    """Seconds a new connection is safe from trimming."""
    admission: AdmissionOptions | None = None
    """Admit only peers with a cluster CA certificate naming them (``_admission``);
    None: an open mesh, every peer that connects is served."""
    on_gossip_repair: Callable[[str], None] | None = None
    """Called with the kind of each repair of pubsub peer state (``_gossip``); must
    not block (trio thread)."""

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.listen_host)
        except ValueError:
            raise ValueError(f"listen_host: {self.listen_host!r} is not an IP address") from None
        if not 0 <= self.listen_port <= 65535:
            raise ValueError(f"listen_port: {self.listen_port} is out of range")
        for field in ("bootstrap", "rendezvous_points"):
            for index, addr in enumerate(getattr(self, field)):
                try:
                    info_from_p2p_addr(Multiaddr(addr))
                except Exception:
                    raise ValueError(
                        f"{field}[{index}]: {addr!r} is not a /p2p/ multiaddr"
                    ) from None
        if self.mdns_network and not _MDNS_NETWORK.fullmatch(self.mdns_network):
            raise ValueError(f"mdns_network: {self.mdns_network!r} is not 1-11 of [a-z0-9]")
        for field in _POSITIVE:
            if getattr(self, field) <= 0:
                raise ValueError(f"{field}: must be positive")
        if not self.topic:
            raise ValueError("topic: must not be empty")
        if self.target_peers > self.max_peers:
            raise ValueError("target_peers: must not exceed max_peers")


class MeshCallbacks(Protocol):
    """What a :class:`~praxis_grpc.discovery.libp2p.MeshHost` reports.

    Every method is called in the trio thread and must return quickly without
    blocking; an exception is logged and otherwise ignored. No callback is
    made once :meth:`~praxis_grpc.discovery.libp2p.MeshHost.run` starts shutting down.
    """

    def on_card(self, data: bytes, source: str, peer_id: str) -> None:
        """Card bytes from ``peer_id`` (its origin; a gossip message is signed by it).

        ``source`` is "gossip" or "exchange". The same card may arrive more
        than once (both sides of a new connection open an exchange).
        """
        ...

    def on_peer_connected(self, peer_id: str) -> None:
        """The first connection to ``peer_id`` opened (or it answers pings again)."""
        ...

    def on_peer_disconnected(self, peer_id: str, departed: bool) -> None:
        """The last connection to ``peer_id`` closed, or it missed two pings in a row.

        ``departed`` is False when the connection was trimmed (by this host or,
        as it said before closing, by the peer): the peer is still up.
        """
        ...
