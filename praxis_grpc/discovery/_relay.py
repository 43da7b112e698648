"""Circuit relay v2 for a :class:`~praxis_grpc.discovery.libp2p.MeshHost`. Trio thread only.

A node behind NAT cannot be dialed. It keeps a reservation on one or more
relays (``p2p.relays``) and advertises ``<relay>/p2p-circuit/p2p/<self>``:
whoever dials that address reaches it through the relay, which forwards the
(still end-to-end Noise-encrypted) connection. A node with
``p2p.relay_service`` serves reservations and circuits to others, within limits.

Every node with relaying configured also accepts relayed connections (the
circuit "stop" side) and can dial ``/p2p-circuit`` addresses.

py-libp2p 0.8.1 workarounds: its ``CircuitV2Transport.reserve`` starts a
refresher that renews only in the last 30 s of a reservation and never
notices that a relay died, and its auto-relay discovery dials every peer it
knows. So :class:`Relaying` makes each reservation itself (the transport's
reservation request, one stream per attempt), renews it at half its
lifetime, watches the connection to the relay, and replaces a lost relay with
the next configured one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from multiaddr import Multiaddr

from praxis_grpc.discovery._admission import StreamHandler

__all__ = ["RelayOptions", "Relaying", "is_circuit"]

log = logging.getLogger("praxis_grpc.discovery")

_RETRY_INTERVAL = 2.0
"""Seconds between checks of the relays (lost connection, missing reservation)."""
_CLOSE_TIMEOUT = 5.0


async def _close(stream: INetStream) -> None:
    """Close a hop stream, shielded: a write cancelled halfway would corrupt the
    connection's Noise session (see ``_peer_stream.write_frame``)."""
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
        try:
            await stream.close()
        except Exception:
            log.debug("closing a hop stream failed", exc_info=True)


def is_circuit(addr: str) -> bool:
    """True for a relayed (``/p2p-circuit``) multiaddr."""
    return "/p2p-circuit" in addr


@dataclass(frozen=True)
class RelayOptions:
    """Relaying of one host (``p2p.relays``, ``p2p.relay_service`` and its limits)."""

    relays: tuple[str, ...] = ()
    """Multiaddrs (``.../p2p/<id>``) of relays to keep a reservation on
    (unless this host is found public)."""
    discover: bool = False
    """Without ``relays``: once found private, reserve on relays offered by
    :meth:`Relaying.offer` (members whose cards advertise the relay service)."""
    serve: bool = False
    """Serve reservations and circuits to other nodes (hop)."""
    reservations_wanted: int = 2
    """Reservations held at once (at most the number of relays)."""
    max_reservations: int = 128
    reservation_ttl: float = 3600.0
    max_circuits: int = 64
    max_circuit_duration: float = 3600.0
    max_circuit_bytes: int = 1024**3
    dial_timeout: float = 10.0

    @property
    def enabled(self) -> bool:
        """Whether the host needs the circuit protocol at all."""
        return self.serve or self.discover or bool(self.relays)


class Relaying:
    """The circuit relay v2 parts of one host: the protocol service, the
    transport that dials ``/p2p-circuit`` addresses, and the reservations.

    ``on_addrs`` is called (trio thread, must not block) with the host's
    circuit addresses whenever they change.
    """

    def __init__(
        self,
        host: IHost,
        options: RelayOptions,
        on_addrs: Callable[[list[str]], None],
        gate: Callable[[StreamHandler], StreamHandler] = lambda handler: handler,
    ) -> None:
        """``gate`` wraps the hop handler (reservations and circuits): with admission,
        a relay serves members only, so a stranger neither reserves nor opens a circuit."""
        self._host = host
        self._options = options
        self._on_addrs = on_addrs
        limits = RelayLimits(
            duration=math.ceil(options.max_circuit_duration),
            data=options.max_circuit_bytes,
            max_circuit_conns=options.max_circuits,
            max_reservations=options.max_reservations,
            reservation_ttl=math.ceil(options.reservation_ttl),
        )
        self.protocol = CircuitV2Protocol(host, limits, allow_hop=options.serve)
        # run() registers the handler it finds on the instance: the gated one.
        hop = gate(self.protocol._handle_hop_stream)
        self.protocol._handle_hop_stream = hop  # type: ignore[method-assign,assignment]
        roles = (
            RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if options.serve else RelayRole(0))
        )
        self._transport = CircuitV2Transport(host, self.protocol, RelayConfig(roles=roles))
        self._configured = self._infos(options.relays)
        self._relays = list(self._configured)
        self._reachability = "unknown"
        self._renew_at: dict[ID, float] = {}
        self._addrs: list[str] = []

    def _infos(self, addrs: Iterable[str]) -> list[PeerInfo]:
        infos = [info_from_p2p_addr(Multiaddr(addr)) for addr in addrs]
        return [info for info in infos if info.peer_id != self._host.get_id()]

    def set_reachability(self, state: str) -> None:
        """This host's reachability ("unknown", "public", "private"): a public host
        holds no reservation; a private one reserves on configured or offered
        relays; an unknown one only on configured ones."""
        self._reachability = state

    def offer(self, addrs: list[str]) -> None:
        """Relays discovered in cards (one ``.../p2p/<id>`` address each), used
        when none is configured. A relay no longer offered loses its reservation."""
        if self._configured or not self._options.discover:
            return
        try:
            self._relays = self._infos(addrs)
        except Exception:
            log.warning("relay addresses offered are not peer addresses: %s", addrs)

    def keeps(self, peer_id: ID) -> bool:
        """Whether the connection to ``peer_id`` carries a reservation: this
        host's on that relay, or (serving) that peer's on this host."""
        if peer_id in self._renew_at:
            return True
        return self._options.serve and self.protocol.resource_manager.has_reservation(peer_id)

    @property
    def _wanted(self) -> bool:
        if self._reachability == "public":
            return False
        return bool(self._configured) or self._reachability == "private"

    def services(self) -> list[Any]:
        """The libp2p services to run for the host's lifetime."""
        return [self.protocol]

    @property
    def circuit_addrs(self) -> list[str]:
        """``<relay>/p2p-circuit/p2p/<self>`` for every relay holding a reservation."""
        return list(self._addrs)

    async def dial(self, addr: str) -> None:
        """Connect to the peer at the circuit address ``addr`` through its relay.

        Raises:
            ConnectionError: the relay is unreachable or refused the circuit.
        """
        maddr = Multiaddr(addr)
        relay_addr, _ = self._transport.parse_circuit_ma(maddr)
        relay = info_from_p2p_addr(relay_addr)
        if not self._host.get_network().connections.get(relay.peer_id):
            await self._host.connect(relay)
        await self._transport.dial(maddr)

    async def run(self) -> None:
        """Keep ``reservations_wanted`` reservations, renewed; until cancelled."""
        while True:
            await self._tend()
            await trio.sleep(_RETRY_INTERVAL)

    async def _tend(self) -> None:
        network = self._host.get_network()
        offered = {relay.peer_id for relay in self._relays}
        for peer_id in list(self._renew_at):
            if not self._wanted or peer_id not in offered:
                log.info("reservation on relay %s dropped (%s)", peer_id, self._reachability)
                del self._renew_at[peer_id]
            elif not network.connections.get(peer_id):
                log.warning("relay %s lost; reservation dropped", peer_id)
                del self._renew_at[peer_id]
        if not self._wanted:
            self._publish()
            return
        wanted = min(self._options.reservations_wanted, len(self._relays))
        now = time.monotonic()
        for relay in self._relays:
            renew_at = self._renew_at.get(relay.peer_id)
            if renew_at is None and len(self._renew_at) >= wanted:
                continue
            if renew_at is not None and renew_at > now:
                continue
            await self._reserve(relay)
        self._publish()

    async def _reserve(self, relay: PeerInfo) -> None:
        try:
            with trio.fail_after(self._options.dial_timeout):
                if not self._host.get_network().connections.get(relay.peer_id):
                    await self._host.connect(relay)
                stream = await self._host.new_stream(relay.peer_id, [HOP_PROTOCOL])
                try:
                    ok = await self._transport._make_reservation(stream, relay.peer_id)
                finally:
                    await _close(stream)
        except Exception as exc:
            log.debug("reservation on relay %s failed: %r", relay.peer_id, exc)
            ok = False
        if not ok:
            self._renew_at.pop(relay.peer_id, None)
            return
        expires = self._transport._reservations.get(relay.peer_id, 0)
        lifetime = max(expires - time.time(), _RETRY_INTERVAL)
        self._renew_at[relay.peer_id] = time.monotonic() + lifetime / 2
        log.info("reserved a slot on relay %s for %.0f s", relay.peer_id, lifetime)

    def _publish(self) -> None:
        own = self._host.get_id().to_base58()
        addrs = [
            f"{addr}/p2p-circuit/p2p/{own}"
            for relay in self._relays
            if relay.peer_id in self._renew_at
            for addr in [f"{relay.addrs[0]}/p2p/{relay.peer_id.to_base58()}"]
        ]
        if addrs != self._addrs:
            log.info("relayed addresses now %s", addrs)
            self._addrs = addrs
            self._on_addrs(list(addrs))
