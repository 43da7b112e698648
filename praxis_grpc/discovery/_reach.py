"""How a :class:`~praxis_grpc.discovery.libp2p.MeshHost` is reached, beyond
its listen address. Trio thread only.

- ``announce_addrs`` replace the listen addresses in what the host advertises
  (a port-forwarded or containerised node);
- circuit relay v2 (:mod:`praxis_grpc.discovery._relay`) adds
  ``/p2p-circuit`` addresses for a node behind NAT;
- ``/praxis/peer/1.0.0`` carries the peer service's calls
  (:mod:`praxis_grpc.discovery.streams`), so an agent without a reachable
  gRPC endpoint still gets its tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

import grpc
import trio
from google.rpc import status_pb2
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from praxis_grpc.call_slots import PerPeerSlots
from praxis_grpc.discovery._admission import StreamHandler
from praxis_grpc.discovery._dialback import Reachability
from praxis_grpc.discovery._holepunch import HolePunching, HolePunchOptions
from praxis_grpc.discovery._peer_stream import answer_call, refuse_call
from praxis_grpc.discovery._relay import Relaying, RelayOptions, is_circuit
from praxis_grpc.discovery.streams import ERROR, PEER_PROTOCOL, StreamCallError

__all__ = ["HostReach", "ReachOptions", "StartAnswer"]

log = logging.getLogger("praxis_grpc.discovery")

StartAnswer = Callable[[bytes, trio.MemorySendChannel[bytes]], Callable[[], None]]
"""Starts answering a request on the node's loop (see ``answer_call``); returns a stopper."""


@dataclass(frozen=True)
class ReachOptions:
    """``p2p.announce_addrs``, relaying, and the peer call protocol's bounds."""

    relay: RelayOptions = field(default_factory=RelayOptions)
    announce_addrs: tuple[str, ...] = ()
    """Multiaddrs without ``/p2p/`` advertised instead of the listen ones."""
    max_call_bytes: int = 4 * 1024 * 1024
    """The largest frame of a peer call, either way."""
    call_timeout: float = 10.0
    """Bound on dialing a peer and opening a call stream, and on reading a request."""
    check_reachability: bool = False
    """Ask peers to dial back (``_dialback``) to learn whether this host is reachable."""
    reachability: str = ""
    """"public" or "private": taken as the verdict instead of asking peers
    (``p2p.reachability``); "" to ask when ``check_reachability``."""
    hole_punching: bool = False
    """Upgrade relayed connections to direct ones (:mod:`._holepunch`)."""
    max_calls_per_peer: int = 2048
    """Peer calls in progress at once from one peer (``cluster.max_calls_per_peer``);
    one more is answered RESOURCE_EXHAUSTED without reading its request."""
    on_call_refused: Callable[[], None] = lambda: None
    """Called (trio thread, must not block) for each call refused for that bound."""


class HostReach:
    """The reach of one host; built in the trio thread, attached once.

    ``on_addrs`` (trio thread, must not block) gets the advertised addresses
    whenever they change; ``start_answer`` answers calls (None: the peer call
    protocol is not served).
    """

    def __init__(
        self,
        options: ReachOptions,
        on_addrs: Callable[[list[str]], None],
        start_answer: StartAnswer | None,
        on_reachability: Callable[[str], None] | None = None,
        on_holepunch: Callable[[str], None] | None = None,
    ) -> None:
        """``on_reachability`` (trio thread, must not block) gets "public",
        "private" or "unknown" as the dial-back verdict changes;
        ``on_holepunch`` each hole punch outcome (see :class:`HolePunching`)."""
        self._on_holepunch = on_holepunch or (lambda _outcome: None)
        self._holepunch: HolePunching | None = None
        self._options = options
        self._on_addrs = on_addrs
        self._on_reachability = on_reachability or (lambda _state: None)
        self._reachability: Reachability | None = None
        self._start_answer = start_answer
        self._host: IHost | None = None
        self._relaying: Relaying | None = None
        self._listen: list[str] = []
        self._calls = PerPeerSlots(options.max_calls_per_peer)
        refused = status_pb2.Status(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            message=f"{options.max_calls_per_peer} peer calls from this peer are in progress "
            "here already (cluster.max_calls_per_peer)",
        )
        self._refusal = bytes([ERROR]) + refused.SerializeToString()

    @property
    def relays(self) -> tuple[str, ...]:
        """The configured relays (the host keeps its connections to them)."""
        return self._options.relay.relays

    def protects(self, fixed: frozenset[ID]) -> Container[ID]:
        """``fixed`` and, live, every peer whose connection carries a relay
        reservation (a relay this host reserved on, found in cards included; a
        client holding a reservation on this relay): peers the trimmer keeps."""
        return _Protected(fixed, self)

    def keeps(self, peer_id: ID) -> bool:
        """Whether the connection to ``peer_id`` carries a relay reservation."""
        return self._relaying is not None and self._relaying.keeps(peer_id)

    def attach(
        self, host: IHost, gate: Callable[[StreamHandler], StreamHandler] = lambda h: h
    ) -> list[Any]:
        """Serve the protocols on ``host``; the services to run with it.
        ``gate`` wraps the handlers of praxis protocols (admission: members only)."""
        self._host = host
        if self._start_answer is not None:
            host.set_stream_handler(TProtocol(PEER_PROTOCOL), gate(self._answer))
        # Every host answers dial-backs; only those with NAT traversal ask for them.
        self._reachability = Reachability(host, self._reachability_changed, gate)
        # Every host can dial /p2p-circuit addresses (an agent behind NAT it is
        # not connected to); only relay clients and relays run the protocol.
        self._relaying = Relaying(host, self._options.relay, self._relay_addrs_changed, gate)
        if self._options.hole_punching:
            self._holepunch = HolePunching(host, HolePunchOptions(), self._on_holepunch, gate)
        return self._relaying.services() if self._options.relay.enabled else []

    async def run(self) -> None:
        """Keep the relay reservations, check reachability and punch holes
        (returns at once with none configured)."""
        if self._options.reachability:
            self._reachability_changed(self._options.reachability)
        async with trio.open_nursery() as nursery:
            if self._relaying is not None and self._options.relay.enabled:
                nursery.start_soon(self._relaying.run)
            if self._holepunch is not None:
                nursery.start_soon(self._holepunch.run)
            if (
                self._reachability is not None
                and self._options.check_reachability
                and not self._options.reachability
            ):
                nursery.start_soon(self._reachability.run, self._direct_addrs)

    def _reachability_changed(self, state: str) -> None:
        if self._relaying is not None:
            self._relaying.set_reachability(state)
        self._on_reachability(state)

    def offer_relays(self, addrs: list[str]) -> None:
        """Relays members advertise (see :meth:`Relaying.offer`)."""
        if self._relaying is not None:
            self._relaying.offer(addrs)

    def _direct_addrs(self) -> list[str]:
        return [a for a in self.addrs(self._listen) if not is_circuit(a)]

    def addrs(self, listen: list[str]) -> list[str]:
        """What the host advertises, given its listen addresses (with ``/p2p/``)."""
        self._listen = listen
        if self._options.announce_addrs and self._host is not None:
            suffix = f"/p2p/{self._host.get_id().to_base58()}"
            listen = [addr + suffix for addr in self._options.announce_addrs]
        circuits = self._relaying.circuit_addrs if self._relaying is not None else []
        return [*listen, *circuits]

    def _relay_addrs_changed(self, _circuits: list[str]) -> None:
        self._on_addrs(self.addrs(self._listen))

    async def open(self, address: str) -> INetStream:
        """A call stream to the peer ``address`` names, dialing it first (through
        its relay for a circuit address) when not connected.

        Raises:
            StreamCallError: (``sent=False``) it cannot be reached.
        """
        host = self._host
        if host is None:
            raise StreamCallError("the libp2p host is not running", sent=False)
        try:
            info = info_from_p2p_addr(Multiaddr(address))
        except Exception as exc:
            raise StreamCallError(f"{address!r} is not a peer address", sent=False) from exc
        try:
            with trio.fail_after(self._options.call_timeout):
                if not host.get_network().connections.get(info.peer_id):
                    if is_circuit(address) and self._relaying is not None:  # via its relay
                        await self._relaying.dial(address)
                    else:
                        await host.connect(info)
                return await host.new_stream(info.peer_id, [TProtocol(PEER_PROTOCOL)])
        except Exception as exc:
            conns = host.get_network().connections.get(info.peer_id) or []
            kinds = [type(getattr(c, "muxed_conn", c)).__name__ for c in conns]
            raise StreamCallError(
                f"cannot open a call to {address} ({len(conns)} connections: {kinds}): {exc!r}",
                sent=False,
            ) from exc

    async def _answer(self, stream: INetStream) -> None:
        assert self._start_answer is not None
        options = self._options
        peer = stream.muxed_conn.peer_id.to_base58()
        if not self._calls.acquire(peer):
            options.on_call_refused()
            await refuse_call(stream, self._refusal)
            return
        try:
            await answer_call(
                stream, options.max_call_bytes, options.call_timeout, self._start_answer
            )
        finally:
            self._calls.release(peer)


class _Protected(Container[ID]):
    """A fixed set of peers plus those :meth:`HostReach.keeps`, as they are when asked."""

    def __init__(self, fixed: frozenset[ID], reach: HostReach) -> None:
        self._fixed = fixed
        self._reach = reach

    def __contains__(self, peer_id: object) -> bool:
        if peer_id in self._fixed:
            return True
        return isinstance(peer_id, ID) and self._reach.keeps(peer_id)
