"""mDNS discovery on top of py-libp2p's zeroconf broadcaster and listener.

py-libp2p's ``MDNSDiscovery`` is not used as is for two reasons. Its
``start()`` registers the service with a blocking zeroconf call (about 1.6 s
of probing and announcing) on the trio thread, and its listener writes
discovered addresses into the peerstore from zeroconf's own thread, while the
peerstore is only safe to touch from the trio thread. Here registration runs
in a worker thread, and the listener writes into :class:`_Inbox`, which only
hands the addresses over to the trio thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Sequence
from functools import partial

import trio
from libp2p.abc import IHost
from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
from libp2p.discovery.mdns.listener import PeerListener
from libp2p.discovery.mdns.mdns import SERVICE_TYPE
from libp2p.discovery.mdns.utils import stringGen
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr
from zeroconf import InterfaceChoice, Zeroconf

from praxis_grpc.discovery._dialer import Dialer

log = logging.getLogger("praxis_grpc.discovery")

_TTL = 120
_CLOSE_TIMEOUT = 5.0


class _Inbox:
    """Stands in for the peerstore py-libp2p's mDNS listener writes to.

    zeroconf calls it from its own thread; each discovery is passed to the
    trio thread through the trio token and a bounded channel (dropped, with a
    log line, if the trio side is behind; the next announcement repeats it).
    """

    def __init__(
        self, token: trio.lowlevel.TrioToken, send: trio.MemorySendChannel[PeerInfo]
    ) -> None:
        self._token = token
        self._send = send

    def add_addrs(self, peer_id: ID, addrs: Sequence[Multiaddr], ttl: int) -> None:
        info = PeerInfo(peer_id, list(addrs))
        with contextlib.suppress(trio.RunFinishedError):  # the host has stopped
            self._token.run_sync_soon(self._offer, info)

    def clear_addrs(self, peer_id: ID) -> None:
        """A peer left; its connection (if any) ends on its own."""

    def _offer(self, info: PeerInfo) -> None:
        try:
            self._send.send_nowait(info)
        except trio.WouldBlock:
            log.warning("mDNS: discovery backlog full; dropped %s", info.peer_id)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def service_type(network: str) -> str:
    """The DNS-SD service type: the libp2p default, or a private one per network label."""
    return f"_p2p-{network}._udp.local." if network else SERVICE_TYPE


def _interfaces(listen_host: str) -> InterfaceChoice | list[str]:
    # A node listening on one IPv4 address announces only there (127.0.0.1
    # keeps a test mesh on loopback); a wildcard or IPv6 host uses every interface.
    try:
        address = ipaddress.ip_address(listen_host)
    except ValueError:
        return InterfaceChoice.All
    if address.version == 4 and not address.is_unspecified:
        return [listen_host]
    return InterfaceChoice.All


async def run_mdns(host: IHost, dialer: Dialer, listen_host: str, network: str) -> None:
    """Announce this host over mDNS and dial every peer announced; runs until cancelled."""
    send, receive = trio.open_memory_channel[PeerInfo](64)
    inbox = _Inbox(trio.lowlevel.current_trio_token(), send)
    kind = service_type(network)
    name = f"{stringGen(32)}.{kind}"
    port = _tcp_port(host)
    zeroconf = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=_interfaces(listen_host)))
    broadcaster: PeerBroadcaster | None = None
    listener: PeerListener | None = None
    try:
        listener = PeerListener(
            peerstore=inbox,  # type: ignore[arg-type]  # duck-typed: add_addrs/clear_addrs
            zeroconf=zeroconf,
            service_type=kind,
            service_name=name,
            ttl=_TTL,
        )
        broadcaster = PeerBroadcaster(
            zeroconf=zeroconf,
            service_type=kind,
            service_name=name,
            peer_id=host.get_id().to_base58(),
            port=port,
            host=host,
        )
        await trio.to_thread.run_sync(broadcaster.register)
        log.info("mDNS: announcing %s as %s", host.get_id(), kind)
        async for info in receive:
            dialer.dial_soon(info, "mdns")
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            # The trio-typing stubs that libp2p pulls in predate abandon_on_cancel.
            await trio.to_thread.run_sync(  # type: ignore[call-arg]
                partial(_close, zeroconf, broadcaster, listener), abandon_on_cancel=True
            )


def _tcp_port(host: IHost) -> int:
    for addr in host.get_transport_addrs():
        port = addr.value_for_protocol("tcp")
        if port:
            return int(port)
    return 0


def _close(
    zeroconf: Zeroconf, broadcaster: PeerBroadcaster | None, listener: PeerListener | None
) -> None:
    try:
        if broadcaster is not None:
            broadcaster.unregister()
        if listener is not None:
            listener.stop()
    finally:
        zeroconf.close()
