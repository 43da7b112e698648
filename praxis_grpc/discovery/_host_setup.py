"""Building, supervising and closing the py-libp2p host of a
:class:`~praxis_grpc.discovery.libp2p.MeshHost`, and reading addresses off it.
Trio thread only.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from praxis_grpc.discovery._closing import close_socket
from praxis_grpc.discovery._membership import Membership
from praxis_grpc.discovery._options import HostOptions
from praxis_grpc.discovery._yamux import BatchWindowUpdates

log = logging.getLogger("praxis_grpc.discovery")

_CLOSE_TIMEOUT = 10.0
_RESTART_DELAY = 1.0


class Starter:
    """Starts background loops in a nursery; a loop that fails is logged and restarted."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def __call__(self, name: str, fn: Any, *args: Any) -> None:
        self._nursery.start_soon(self._supervise, name, fn, args, name=name)

    @staticmethod
    async def _supervise(name: str, fn: Any, args: tuple[Any, ...]) -> None:
        while True:
            try:
                await fn(*args)
            except Exception:
                log.exception("%s loop failed; restarting in %.0f s", name, _RESTART_DELAY)
            else:
                return
            await trio.sleep(_RESTART_DELAY)


def new_noise_host(options: HostOptions) -> IHost:
    """A host offering Noise and yamux only, with py-libp2p's auto-dialer off."""
    # new_host() would also offer TLS, SECIO and /plaintext/2.0.0: only Noise here.
    # And only yamux: 0.8.1's mplex corrupts Noise frames under concurrent
    # writes (InvalidTag), and the error escapes into the host's service tree.
    key_pair = options.key_pair
    noise_key = create_x25519_key_pair().private_key
    security = {TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(key_pair, noise_privkey=noise_key)}
    muxers = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    host = new_host(key_pair=key_pair, sec_opt=security, muxer_opt=muxers)
    network = host.get_network()
    network.register_notifee(BatchWindowUpdates())  # one yamux window update per half window
    if isinstance(network, Swarm):
        network.auto_connector = _NoAutoDial(network)
    return host


class _NoAutoDial(AutoConnector):
    """py-libp2p's auto-dialer, never started: the Dialer and Trimmer keep the degree.

    Left running, it dials every peer in the peerstore (SWIM puts every member
    there) whenever the host has fewer than 100 connections and after every
    disconnect, so the degree never stays bounded.
    """

    async def start(self) -> None:
        return None


def listen_multiaddr(options: HostOptions) -> Multiaddr:
    """The TCP multiaddr to listen on."""
    family = "ip6" if ipaddress.ip_address(options.listen_host).version == 6 else "ip4"
    return Multiaddr(f"/{family}/{options.listen_host}/tcp/{options.listen_port}")


def known_addrs(host: IHost, peer_id: ID) -> list[Multiaddr]:
    """``peer_id``'s addresses in the peerstore ([] when unknown or expired)."""
    try:
        return host.get_peerstore().addrs(peer_id)
    except PeerStoreError:  # unknown, or its addresses expired
        return []


def own_address(addrs: list[str]) -> str:
    """The address to announce: the first on a concrete IP, else the first."""
    concrete = [a for a in addrs if "/ip4/0.0.0.0/" not in a and "/ip6/::/" not in a]
    return (concrete or addrs)[0]


def others(host: IHost, addrs: tuple[str, ...]) -> list[PeerInfo]:
    """The peers named by ``addrs``, leaving out this host (one config can serve every node)."""
    infos = [info_from_p2p_addr(Multiaddr(addr)) for addr in addrs]
    return [info for info in infos if info.peer_id != host.get_id()]


async def close_host(host: IHost, membership: Membership) -> None:
    """Close every connection and listener; idempotent, bounded, never raises."""
    membership.mute()
    conns = host.get_network().get_connections()
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT) as scope:
        try:
            await host.close()
        except Exception:
            log.exception("closing the libp2p host failed")
    if scope.cancelled_caught:
        log.warning("closing the libp2p host took over %.0f s; abandoned", _CLOSE_TIMEOUT)
    for conn in conns:  # a close cut short keeps its socket (_closing)
        await close_socket(conn)
