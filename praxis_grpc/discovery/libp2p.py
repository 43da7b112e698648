"""The trio side of peer discovery: one py-libp2p host that joins the mesh.

:class:`MeshHost` runs a Noise-only libp2p host that finds peers (bootstrap
addresses, mDNS, a Kademlia DHT, a rendezvous namespace, and peer exchange),
keeps them honest with pings, exchanges full cards with every new peer over
``/praxis/card/1.0.0`` and gossips cards over GossipSub. It is trio-only: the
bridge runs it under ``trio.run`` in a dedicated thread. Every method and
callback runs in that trio thread.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.discovery.rendezvous import RendezvousService
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service

from praxis_grpc.discovery._admission import Admission, StreamHandler
from praxis_grpc.discovery._dialer import Dialer, Trimmer, keep_connected
from praxis_grpc.discovery._finders import (
    dht_walk,
    exchange_peers,
    peer_exchange_rounds,
    rendezvous_client,
)
from praxis_grpc.discovery._gossip import CardPubsub, new_pubsub
from praxis_grpc.discovery._hooks import PeerHooks
from praxis_grpc.discovery._host_setup import (
    Starter,
    close_host,
    known_addrs,
    listen_multiaddr,
    new_noise_host,
    others,
    own_address,
)
from praxis_grpc.discovery._mdns import run_mdns
from praxis_grpc.discovery._membership import Liveness, Membership, call_safely
from praxis_grpc.discovery._options import HostOptions, MeshCallbacks
from praxis_grpc.discovery._reach import HostReach
from praxis_grpc.discovery._swim import SwimService
from praxis_grpc.discovery._swim_wiring import new_swim, new_trimmer
from praxis_grpc.discovery._wire import (
    CARD_PROTOCOL,
    PEERS_PROTOCOL,
    FrameTooLarge,
    answer_card,
    answer_peers,
    request_card,
)
from praxis_grpc.discovery.base import PeerStatus
from praxis_grpc.discovery.members import MembershipOptions, MemberStatus

if TYPE_CHECKING:
    # libp2p depends on trio-typing, whose stubs shadow trio's own annotations
    # for mypy and spell TaskStatus here.
    from trio_typing import TaskStatus

__all__ = ["CARD_PROTOCOL", "HostOptions", "MeshCallbacks", "MeshHost", "PeerStatus"]

log = logging.getLogger("praxis_grpc.discovery")

_GREET_BACKLOG = 256
_GREET_CONCURRENCY = 16
_SHUTDOWN_TIMEOUT = 15.0
_LEAVE_TIMEOUT = 2.0


class MeshHost:
    """A py-libp2p host that joins the card mesh. Trio thread only.

    Only Noise is offered for transport security (no plaintext, TLS or
    SECIO), and only yamux for multiplexing.
    """

    def __init__(
        self,
        options: HostOptions,
        callbacks: MeshCallbacks,
        membership: MembershipOptions | None = None,
        reach: HostReach | None = None,
    ) -> None:
        """With ``membership``, SWIM is the failure detector (see ``_swim``): only a
        dead or left member is gone, and "disconnected" is reported as not departed.
        Without it, every connected peer is pinged and a lost connection is a departure.
        ``reach`` adds announced and relayed addresses and the peer call protocol."""
        self._options = options
        self._reach = reach
        self._callbacks = callbacks
        self._membership_options = membership
        self._swim: SwimService | None = None
        self._local_card = b""
        self._card_ready = trio.Event()
        self._host: IHost | None = None
        self._pubsub: CardPubsub | None = None
        self._membership: Membership | None = None
        self._trimmer: Trimmer | None = None
        self._greet_limiter = trio.CapacityLimiter(_GREET_CONCURRENCY)
        self._hooks: PeerHooks | None = None

    @property
    def listen_addrs(self) -> list[str]:
        """The multiaddrs (with ``/p2p/<id>``) this host listens on; [] when not running."""
        host = self._host
        if host is None:
            return []
        suffix = f"/p2p/{host.get_id().to_base58()}"
        addrs = [str(addr) + suffix for addr in host.get_transport_addrs()]
        return self._reach.addrs(addrs) if self._reach is not None else addrs

    def set_local_card(self, data: bytes) -> None:
        """Serve ``data`` to peers on the card exchange from now on. Never blocks or raises.

        A card over ``max_card_bytes`` is refused (logged; the previous card stays).
        """
        if len(data) > self._options.max_card_bytes:
            log.error("local card is %d bytes, over max_card_bytes; not served", len(data))
            return
        self._local_card = bytes(data)
        if data:
            self._card_ready.set()

    async def publish(self, data: bytes) -> None:
        """Gossip ``data`` on the topic to every subscribed peer.

        Never raises, so it can run as a fire-and-forget task in the host's
        nursery: a card over ``max_card_bytes``, a call before :meth:`run`
        has started, and pubsub errors are logged and the card dropped.
        """
        pubsub = self._pubsub
        if pubsub is None:
            log.debug("publish before the host started; dropped")
            return
        if len(data) > self._options.max_card_bytes:
            log.error("card of %d bytes is over max_card_bytes; not published", len(data))
            return
        try:
            await pubsub.publish(self._options.topic, data)
        except Exception:
            log.exception("publishing a card failed")

    def peers(self) -> list[PeerStatus]:
        """The peers connected now, with their listen addresses and last ping RTT."""
        host, membership = self._host, self._membership
        if host is None or membership is None:
            return []
        result = []
        for peer_id, state in membership.peers().items():
            result.append(
                PeerStatus(
                    peer_id=peer_id.to_base58(),
                    addresses=tuple(str(addr) for addr in known_addrs(host, peer_id)),
                    direction=state.direction,
                    ping_rtt=state.rtt,
                    connected_at=state.connected_at,
                )
            )
        return result

    async def run(self, task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the host and all discovery; run until cancelled, then close everything.

        Calls ``task_status.started(listen_addrs)`` once listening, subscribed
        and discovering. Raises ``OSError`` if it cannot listen (e.g. the port
        is taken). Cancellation triggers an orderly shutdown: background loops
        stop, every connection is closed, then the libp2p services stop; all
        within about 15 s, after which whatever is left is cancelled outright.
        """
        stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    addrs = await nursery.start(self._serve, stop)
                    task_status.started(addrs)
                    await trio.sleep_forever()
                finally:
                    stop.set()
        finally:
            self._host = self._pubsub = self._membership = self._trimmer = self._swim = None

    async def _serve(self, stop: trio.Event, task_status: TaskStatus[list[str]]) -> None:
        """Run everything until ``stop`` is set, shielded from outside cancellation.

        py-libp2p tears connections down badly when cancelled from outside: a
        connection whose close is cancelled halfway counts as closed but keeps
        its socket. So the host only ever stops through this ordered close.
        """
        options = self._options
        host = new_noise_host(options)
        greet_send, greet_receive = trio.open_memory_channel[ID](_GREET_BACKLOG)
        membership, pubsub, services, dht = self._assemble(host, greet_send)
        dialer = Dialer(
            host, membership, target_peers=options.target_peers, timeout=options.dial_timeout
        )
        trimmer = new_trimmer(
            host, membership, dialer, options=options, reach=self._reach, gate=self._gate
        )
        self._host, self._membership, self._trimmer = host, membership, trimmer
        with trio.CancelScope(shield=True) as machine:
            async with AsyncExitStack() as stack:
                listen = listen_multiaddr(options)
                await stack.enter_async_context(host.run([listen]))
                if not host.get_transport_addrs():  # py-libp2p only logs the failure
                    raise OSError(f"libp2p host could not listen on {listen}")
                stack.push_async_callback(close_host, host, membership)  # on errors too
                for service in services:
                    await stack.enter_async_context(background_trio_service(service))
                await pubsub.wait_until_ready()
                await pubsub.subscribe(options.topic)  # messages arrive via _on_gossip
                swim = self._start_swim(host, membership, greet_send)
                async with trio.open_nursery() as loops:
                    dialer.bind(loops)
                    start = Starter(loops)
                    start("greeter", self._greet_peers, greet_receive, dialer, loops)
                    if self._admission is not None:
                        start("admission", self._admission.run)
                    if swim is not None:
                        start("swim", swim.run)
                    else:
                        liveness = Liveness(
                            host, membership, options.ping_interval, options.ping_timeout
                        )
                        start("liveness", liveness.run)
                    start("trimmer", trimmer.run)
                    if self._reach is not None:
                        start("reach", self._reach.run)
                    self._start_discovery(start, host, dialer, dht)
                    self._pubsub = pubsub
                    log.info("libp2p host %s listening on %s", host.get_id(), self.listen_addrs)
                    task_status.started(self.listen_addrs)
                    await stop.wait()
                    machine.deadline = trio.current_time() + _SHUTDOWN_TIMEOUT
                    if swim is not None:
                        with trio.move_on_after(_LEAVE_TIMEOUT):
                            await swim.leave()
                    self._pubsub = None
                    loops.cancel_scope.cancel()
                await close_host(host, membership)
        if machine.cancelled_caught:
            log.warning("libp2p host shutdown took over %.0f s; cancelled", _SHUTDOWN_TIMEOUT)

    def _start_swim(
        self, host: IHost, membership: Membership, greet: trio.MemorySendChannel[ID]
    ) -> SwimService | None:
        """The SWIM service, serving its protocol (None without membership options)."""
        if self._membership_options is None:
            return None
        self._swim = new_swim(
            host,
            membership,
            greet,
            options=self._options,
            members=self._membership_options,
            address=own_address(self.listen_addrs),
            gate=self._gate,
        )
        return self._swim

    def members(self) -> list[MemberStatus]:
        """Every SWIM member remembered, ourselves included ([] without SWIM)."""
        swim = self._swim
        return swim.members() if swim is not None else []

    def _assemble(
        self, host: IHost, greet: trio.MemorySendChannel[ID]
    ) -> tuple[Membership, CardPubsub, list[Any], KadDHT | None]:
        """Wire notifee, protocol handlers and services into ``host`` (nothing runs yet)."""
        options = self._options
        hooks = self._hooks = PeerHooks(
            host,
            options,
            self._callbacks,
            greet,
            swim=lambda: self._swim,
            trimmer=lambda: self._trimmer,
        )
        membership = Membership(
            host.get_network(), hooks.connected, hooks.disconnected, hooks.transient
        )
        host.get_network().register_notifee(membership)
        host.set_stream_handler(CARD_PROTOCOL, self._gate(self._serve_card))
        host.set_stream_handler(PEERS_PROTOCOL, self._gate(self._serve_peers))
        pubsub, router = new_pubsub(
            host,
            options.topic,
            options.heartbeat_interval,
            options.max_card_bytes,
            self._on_gossip,
            admission=hooks.admission,
            on_repair=options.on_gossip_repair,
        )
        services: list[Any] = [pubsub, router]
        if self._reach is not None:
            services += self._reach.attach(host, self._gate)
        dht = None
        if options.enable_dht:
            # No per-subnet cap: a small mesh often sits in one public subnet.
            dht = KadDHT(host, DHTMode.SERVER, max_peers_per_subnet=0)
            services.append(dht)
        if options.rendezvous and not others(host, options.rendezvous_points):
            RendezvousService(host)
        return membership, pubsub, services, dht

    @property
    def _admission(self) -> Admission | None:
        return self._hooks.admission if self._hooks is not None else None

    def _gate(self, handler: StreamHandler) -> StreamHandler:
        """``handler``, for admitted peers only when admission is on."""
        return handler if self._hooks is None else self._hooks.gate(handler)

    def _start_discovery(
        self, start: Starter, host: IHost, dialer: Dialer, dht: KadDHT | None
    ) -> None:
        options = self._options
        interval, timeout = options.discovery_interval, options.stream_timeout
        for info in others(host, options.bootstrap):
            start("bootstrap", keep_connected, dialer, info, "bootstrap")
        if options.enable_mdns:
            start("mdns", run_mdns, host, dialer, options.listen_host, options.mdns_network)
        if dht is not None:
            walk = partial(dht_walk, interval=interval, round_timeout=max(timeout, 2 * interval))
            start("dht", walk, host, dht, dialer)
        if options.rendezvous:
            client = partial(rendezvous_client, interval=interval, round_timeout=timeout)
            for point in others(host, options.rendezvous_points):
                start("rendezvous point", keep_connected, dialer, point, "rendezvous point")
                start("rendezvous", client, host, dialer, point.peer_id, options.rendezvous)
        if options.peer_exchange:
            rounds = partial(peer_exchange_rounds, interval=interval, exchange_timeout=timeout)
            start("peer exchange", rounds, host, dialer)

    async def _greet_peers(
        self, receive: trio.MemoryReceiveChannel[ID], dialer: Dialer, nursery: trio.Nursery
    ) -> None:
        async for peer_id in receive:
            nursery.start_soon(self._greet, peer_id, dialer)

    async def _greet(self, peer_id: ID, dialer: Dialer) -> None:
        """Exchange cards with a newly connected peer, then ask it for its peers."""
        host, options = self._host, self._options
        if host is None:
            return
        if self._admission is not None and not await self._admission.wait(peer_id):
            return  # a stranger: it gets neither our card nor our peers
        if not self._local_card:
            # Discovery starts (and dials) before the node's card is ready (it
            # names the listen addresses; a restarted node recovers its tasks
            # first). Exchanging nothing would leave the peer without our card
            # until the next connection: its gossip may go out before the peer
            # subscribes, and later statuses are dropped without it.
            with trio.move_on_after(options.stream_timeout):
                await self._card_ready.wait()
        async with self._greet_limiter:
            try:
                with trio.fail_after(options.stream_timeout):
                    card = await request_card(
                        host, peer_id, self._local_card, options.max_card_bytes
                    )
            except FrameTooLarge:
                log.warning("card from %s is over max_card_bytes; dropped", peer_id)
            except Exception as exc:
                log.debug("card exchange with %s failed: %r", peer_id, exc)
            else:
                self._deliver(card, "exchange", peer_id)
                if self._membership is not None:
                    self._membership.promote(peer_id)
            if options.peer_exchange:
                await exchange_peers(host, dialer, peer_id, exchange_timeout=options.stream_timeout)

    async def _serve_card(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        options = self._options
        if self._membership is not None:
            self._membership.promote(peer_id)  # it greets us: a neighbour
        try:
            with trio.fail_after(options.stream_timeout):
                card = await answer_card(stream, self._local_card, options.max_card_bytes)
        except FrameTooLarge:
            log.warning("card from %s is over max_card_bytes; dropped", peer_id)
            return
        except Exception as exc:
            log.debug("serving a card exchange to %s failed: %r", peer_id, exc)
            return
        self._deliver(card, "exchange", peer_id)

    async def _serve_peers(self, stream: INetStream) -> None:
        host = self._host
        requester = stream.muxed_conn.peer_id
        membership = self._membership
        if host is None or membership is None:
            return
        membership.promote(requester)  # only neighbours ask for our peers
        known = [
            PeerInfo(peer_id, addrs)
            for peer_id in membership.peers()
            if peer_id != requester and (addrs := known_addrs(host, peer_id))
        ]
        try:
            with trio.fail_after(self._options.stream_timeout):
                await answer_peers(stream, known)
        except Exception as exc:
            log.debug("serving a peer exchange to %s failed: %r", requester, exc)

    def _on_gossip(self, message: rpc_pb2.Message) -> None:
        host = self._host
        if host is not None and message.from_id != host.get_id().to_bytes():
            self._deliver(message.data, "gossip", ID(message.from_id))

    def _deliver(self, card: bytes, source: str, peer_id: ID) -> None:
        membership = self._membership
        if card and membership is not None and not membership.muted:
            call_safely(self._callbacks.on_card, card, source, peer_id.to_base58())
