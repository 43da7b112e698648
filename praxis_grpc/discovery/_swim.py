"""SWIM membership on libp2p: the trio side of :mod:`praxis_grpc.membership`.

:class:`SwimService` runs this node's :class:`~praxis_grpc.membership.Membership`
in the host's trio thread. One driver task sleeps until the state machine's next
deadline or until something wakes it; every input (a frame, a hint from the
host) is handed to the state machine at once from the task that received it
(trio runs one task at a time, so the machine is never entered twice).

Messages travel on ``/praxis/swim/1.0.0``: each node opens one stream per
member it talks to and writes unsigned-varint length-prefixed frames on it;
replies come back on the other side's own stream. The sender of a frame is the
peer the Noise channel authenticated, never a field of the message. Sending
only queues on a bounded per-member queue served by a writer task; a full
queue drops (SWIM copes with loss), a writer idle for a while closes its stream.

SWIM talks to every member, but a node keeps connections only to its
neighbours (bounded degree). A frame for a member we are not connected to
dials a *transient* connection (see ``_membership``): it is not counted in
the degree, and the writer that dialed it closes it once idle for
:func:`transient_idle` seconds, as memberlist's probes use UDP and hold nothing.
That idle time spans two probe rounds over every member, so steady-state probes
find their connection open. A probe that must dial first (TCP, Noise, yamux,
identify and admission in pure Python, seconds on a starved machine) is timed
from when its stream opens (:meth:`SwimService.ready`, ``Membership.connected``),
within ``membership.connect_timeout``: the dial is not counted against
``probe_timeout``, which made every probe of a non-neighbour during a join a
likely false suspicion.

Certain evidence: a member whose listen port refuses a TCP connection is
dead. The host's "disconnected" and a failed stream open are only *hints*
that make us look (a refusal check on the address the member signed); a
timeout is never evidence. Silence is left to the probe path (suspect, then
dead after the suspicion timeout).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from praxis_grpc.discovery._closing import close_peer
from praxis_grpc.discovery._membership import Membership as Connections
from praxis_grpc.discovery._wire import abort
from praxis_grpc.discovery.members import MembershipOptions, MemberStatus
from praxis_grpc.membership import Ack, Membership, Message, Payload, Ping, State
from praxis_grpc.membership.codec import decode_message, encode_message

log = logging.getLogger("praxis_grpc.discovery")

SWIM_PROTOCOL = TProtocol("/praxis/swim/1.0.0")
MAX_FRAME_BYTES = 4 * 1024 * 1024
"""A push-pull of a 10,000-member cluster fits; anything larger resets the stream."""
QUEUE_FRAMES = 64
"""Frames waiting for one member before new ones are dropped."""
IDLE_SECONDS = 30.0
"""A writer that had nothing to send this long closes its stream."""
TRANSIENT_IDLE_SECONDS = 2.0
"""Same for a member that is not a neighbour, at the least (see :func:`transient_idle`);
the prober then closes its connection."""
MAX_TRANSIENT_IDLE_SECONDS = IDLE_SECONDS
"""Same, at the most: the bound on how many probe connections a node holds."""


def transient_idle(members: int, probe_interval: float) -> float:
    """Seconds a writer to a non-neighbour waits idle before closing its probe connection:
    two probe rounds over ``members`` members, within the bounds above."""
    rounds = 2 * members * probe_interval
    return min(MAX_TRANSIENT_IDLE_SECONDS, max(TRANSIENT_IDLE_SECONDS, rounds))


_ADDRESS_TTL = 600
_KINDS = {"Ping": "ping", "Ack": "ack", "PingReq": "ping_req", "Nack": "nack"}
_GONE = (State.DEAD, State.LEFT)
_REFUSED = (errno.ECONNREFUSED, errno.ECONNRESET)


class Libp2pKeys:
    """Signs with this node's Ed25519 key; verifies with the key inside a peer id."""

    def __init__(self, key_pair: KeyPair) -> None:
        self._key = key_pair.private_key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def verify(self, signer: str, data: bytes, signature: bytes) -> bool:
        try:
            public = ID.from_base58(signer).extract_public_key()
            return public is not None and bool(public.verify(data, signature))
        except Exception:  # not a peer id, no inline key, malformed signature
            return False


class SwimService:
    """SWIM for one libp2p host; trio thread only.

    Args:
        host: the running host (already listening).
        connections: who is a neighbour; told which dials are probes.
        address: our multiaddr (with ``/p2p/``), carried in our alive claims.
        options: timing, starting incarnation and where events go.
        keys: signer and verifier (the host's own key).
        on_revived: called with a member that came back after we held it dead
            or left (the host then exchanges cards with it again).
        on_gone: run (as a task) for a member that died or left: the host closes
            its connections, which frees a slot and ends any write stuck on it.
        on_rtt: called with a member and the round trip of a ping it acked.
        open_timeout: bound on opening a stream (a dial may be needed).
    """

    def __init__(
        self,
        host: IHost,
        connections: Connections,
        *,
        address: str,
        options: MembershipOptions,
        keys: Libp2pKeys,
        on_revived: Callable[[ID], None],
        on_gone: Callable[[ID], Awaitable[None]],
        on_rtt: Callable[[ID, float], None],
        open_timeout: float,
    ) -> None:
        self._host = host
        self._connections = connections
        self._events = options.events
        self._config = options.config
        self._on_revived = on_revived
        self._on_gone = on_gone
        self._on_rtt = on_rtt
        self._open_timeout = open_timeout
        self.local = host.get_id().to_base58()
        self._membership = Membership(
            self.local,
            address=address,
            incarnation=options.incarnation,
            config=options.config,
            transport=self,
            signer=keys,
            verifier=keys,
            events=self,
            rng=random.SystemRandom(),
            on_probe=options.events.on_probe,
        )
        self._states: dict[str, State] = {}
        self._addresses: dict[str, str] = {}
        self._outboxes: dict[str, trio.MemorySendChannel[bytes]] = {}
        self._pings: dict[tuple[str, int], float] = {}
        self._open: set[str] = set()  # members a writer holds an open stream to
        self._checking: set[str] = set()
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._started = False
        self._leaving = False
        self._spread = trio.Event()  # set once our leave is fully piggybacked
        self._writers = 0
        self._flushed = trio.Event()  # set once leaving and every writer is done

    # -- running --------------------------------------------------------------

    async def run(self) -> None:
        """Drive the state machine and its writers until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if not self._started:
                self._started = True
                self._membership.start(trio.current_time())
            try:
                while True:
                    with trio.move_on_at(self._membership.next_deadline()):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    self._membership.tick(trio.current_time())
                    if self._leaving and self._membership.leave_spread:
                        self._spread.set()
            finally:
                self._nursery = None  # closing: start nothing more in it

    async def leave(self) -> None:
        """Announce that we leave; return once that is piggybacked and written.

        Unbounded while members keep asking for our state: bound it from outside.
        Nothing is sent afterwards.
        """
        self._leaving = True
        self._membership.leave(trio.current_time())
        self._wake.set()
        await self._spread.wait()
        for outbox in self._outboxes.values():
            outbox.close()  # its writer sends what is queued, then ends
        self._outboxes.clear()
        if self._writers == 0:
            self._flushed.set()
        await self._flushed.wait()

    def members(self) -> list[MemberStatus]:
        """Every member remembered, ourselves included."""
        now = trio.current_time()
        return [
            MemberStatus(m.member, m.state, m.incarnation, m.address, now - m.since, m.learnt)
            for m in self._membership.members()
        ]

    # -- hints from the host ---------------------------------------------------

    def peer_connected(self, peer_id: ID) -> None:
        """A connection opened: sync state with a peer we did not know or held gone.

        That is how a node joins (its bootstrap peers connect) and how a healed
        partition learns who is alive on the other side.
        """
        member = peer_id.to_base58()
        if self._membership.state_of(member) in (None, *_GONE):
            self._membership.join(trio.current_time(), [member])
            self._wake.set()

    def peer_disconnected(self, peer_id: ID) -> None:
        """The last connection closed: look whether its process is gone (a hint only)."""
        self._check_refused(peer_id.to_base58())

    # -- inbound -------------------------------------------------------------

    async def serve(self, stream: INetStream) -> None:
        """Read frames from one inbound stream until it ends."""
        sender = stream.muxed_conn.peer_id.to_base58()  # authenticated by Noise
        try:
            while True:
                frame = await read_varint_prefixed_bytes_limited(stream, MAX_FRAME_BYTES)
                self.deliver(sender, frame)
        except Exception as exc:
            log.debug("swim stream from %s ended: %r", sender, exc)
        finally:
            await abort(stream)

    def deliver(self, sender: str, frame: bytes) -> None:
        """Hand one frame from ``sender`` (as authenticated) to the state machine."""
        try:
            message = decode_message(frame)
        except ValueError as exc:
            self._events.on_message("malformed", "dropped")
            log.debug("undecodable swim frame from %s: %s", sender, exc)
            return
        self._events.on_message(_kind(message), "received")
        now = trio.current_time()
        if isinstance(message, Ack):
            sent = self._pings.pop((sender, message.seq), None)
            if sent is not None:
                self._on_rtt(ID.from_base58(sender), now - sent)
        self._membership.receive(now, sender, message)
        self._wake.set()

    # -- Transport -------------------------------------------------------------

    def ready(self, to: str) -> bool:
        """A writer to ``to`` holds an open stream: a frame goes out without a dial or
        a stream negotiation (else :meth:`Membership.connected` follows the open)."""
        return to in self._open

    def send(self, to: str, message: Message) -> None:
        kind = _kind(message)
        outbox = self._outboxes.get(to)
        if outbox is None:
            if self._nursery is None or self._spread.is_set():
                self._events.on_message(kind, "dropped")
                return
            outbox, queue = trio.open_memory_channel[bytes](QUEUE_FRAMES)
            self._outboxes[to] = outbox
            self._writers += 1
            self._nursery.start_soon(self._write, to, outbox, queue)
        try:
            outbox.send_nowait(encode_message(message))
        except trio.WouldBlock:
            self._events.on_message(kind, "dropped")
            return
        if isinstance(message, Ping) and message.target == to:
            if len(self._pings) > 4 * QUEUE_FRAMES:
                self._pings.clear()
            self._pings[(to, message.seq)] = trio.current_time()
        self._events.on_message(kind, "sent")

    async def _write(
        self,
        member: str,
        outbox: trio.MemorySendChannel[bytes],
        queue: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        stream: INetStream | None = None
        peer_id = ID.from_base58(member)
        try:
            while True:
                frame: bytes | None = None
                neighbour = self._connections.is_neighbour(peer_id)
                transient = transient_idle(len(self._states), self._config.probe_interval)
                with trio.move_on_after(IDLE_SECONDS if neighbour else transient):
                    try:
                        frame = await queue.receive()
                    except trio.EndOfChannel:  # leaving, and all is sent
                        return
                if frame is None:  # idle: give the stream (and a probe connection) back
                    await self._release(peer_id, stream)
                    stream = None
                    return
                stream = await self._send_frame(member, stream, frame)
                if stream is None:
                    self._open.discard(member)
        finally:
            self._open.discard(member)
            if self._outboxes.get(member) is outbox:
                del self._outboxes[member]
            if stream is not None:
                await abort(stream)
            self._writers -= 1
            if self._writers == 0 and self._spread.is_set():
                self._flushed.set()

    async def _send_frame(
        self, member: str, stream: INetStream | None, frame: bytes
    ) -> INetStream | None:
        """Write ``frame``, on a new stream if ``stream`` is None or broken; the stream to keep.

        A stream breaks when the other side closed the transient connection it
        ran on: one retry on a fresh stream, so that no frame is lost to that.
        """
        for retry in (False, True):
            if stream is None:
                stream = await self._open_stream(member)
                if stream is None:
                    return None  # this frame is lost; the next one tries again
                self._open.add(member)
                # A probe's timeout starts now that its ping goes out, not at the dial.
                self._membership.connected(trio.current_time(), member)
                self._wake.set()
            try:
                with trio.fail_after(self._open_timeout):
                    await stream.write(encode_uvarint(len(frame)) + frame)
                return stream
            except Exception as exc:
                log.debug("swim write to %s failed: %r", member, exc)
                await abort(stream)
                stream = None
                if isinstance(exc, trio.TooSlowError):
                    return None
                if retry:
                    self._check_refused(member)
        return None

    async def _release(self, peer_id: ID, stream: INetStream | None) -> None:
        """Close an idle writer's stream, and the connection if a probe of ours dialed it."""
        if stream is not None:
            await abort(stream)
        if self._connections.probed(peer_id):
            await close_peer(self._host.get_network(), peer_id, self._open_timeout)

    async def _open_stream(self, member: str) -> INetStream | None:
        peer_id = ID.from_base58(member)
        if not self._host.get_network().get_connections(peer_id):
            self._connections.expect_probe(peer_id)  # this dial is a transient connection
        try:
            with trio.fail_after(self._open_timeout):
                return await self._host.new_stream(peer_id, [SWIM_PROTOCOL])
        except trio.TooSlowError:
            self._connections.probe_failed(peer_id)
            return None  # a timeout is no evidence
        except Exception as exc:
            log.debug("swim stream to %s failed: %r", member, exc)
            self._connections.probe_failed(peer_id)
            self._check_refused(member)
            return None

    def _check_refused(self, member: str) -> None:
        address = self._addresses.get(member)
        nursery = self._nursery
        if address is None or nursery is None or member in self._checking:
            return
        if self._membership.state_of(member) in (None, *_GONE):
            return
        self._checking.add(member)
        nursery.start_soon(self._refusal_check, member, address)

    async def _refusal_check(self, member: str, address: str) -> None:
        """Declare ``member`` dead if the address it signed refuses a TCP connection."""
        try:
            target = _tcp_target(address)
            if target is None:
                return
            family, host, port = target
            refused = False
            with trio.move_on_after(self._open_timeout), trio.socket.socket(family) as sock:
                try:
                    await sock.connect((host, port))
                except OSError as exc:
                    refused = exc.errno in _REFUSED
            if refused:
                log.info("member %s refuses connections at %s; it is dead", member, address)
                self._membership.connection_refused(trio.current_time(), member)
                self._wake.set()
        finally:
            self._checking.discard(member)

    # -- MembershipEvents ------------------------------------------------------

    def on_member(self, member: str, state: State, incarnation: int, address: str) -> None:
        previous = self._states.get(member)
        self._states[member] = state
        peer_id = ID.from_base58(member)
        if state is State.ALIVE and _tcp_target(address) is not None:
            self._addresses[member] = address
            try:
                self._host.get_peerstore().add_addrs(peer_id, [Multiaddr(address)], _ADDRESS_TTL)
            except Exception:
                log.debug("member %s announced a bad address %r", member, address)
        if state is State.ALIVE and previous in _GONE:
            self._on_revived(peer_id)
        if state in _GONE and self._nursery is not None:
            self._nursery.start_soon(self._on_gone, peer_id)
        self._events.on_member(member, state, incarnation)

    def on_payload(self, payload: Payload) -> None:
        return None  # cards and statuses travel on the card protocols, not here


def _kind(message: Message) -> str:
    name = type(message).__name__
    return _KINDS.get(name) or ("push_pull" if name == "PushPull" else "gossip")


def _tcp_target(address: str) -> tuple[int, str, int] | None:
    """(family, host, port) of ``/ip4|ip6/<ip>/tcp/<port>/...`` on a concrete IP, else None."""
    parts = address.split("/")
    if len(parts) < 5 or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        return None
    try:
        ip, port = ipaddress.ip_address(parts[2]), int(parts[4])
    except ValueError:
        return None
    if ip.is_unspecified:
        return None
    return (trio.socket.AF_INET if ip.version == 4 else trio.socket.AF_INET6), str(ip), port
