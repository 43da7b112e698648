"""The bounded-degree rules of ``discovery/``, without sockets.

A SWIM probe's connection is transient (not a neighbour, not counted in the
degree) and the prober closes it once its writer goes idle; trimming keeps
``target_peers`` neighbours, never trims a protected peer or one younger than
``trim_grace``; yamux credits its sender once per half window, not per read.
The libp2p side is faked: these rules are pure bookkeeping over the host's
connection events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from praxis_grpc.discovery._dialer import Trimmer
from praxis_grpc.discovery._finders import Pacer
from praxis_grpc.discovery._membership import Membership
from praxis_grpc.discovery._swim import (
    MAX_TRANSIENT_IDLE_SECONDS,
    TRANSIENT_IDLE_SECONDS,
    Libp2pKeys,
    SwimService,
    transient_idle,
)
from praxis_grpc.discovery._yamux import BatchedYamuxStream, BatchWindowUpdates
from praxis_grpc.discovery.members import MembershipOptions
from praxis_grpc.membership import MembershipConfig, Ping, State


def new_id() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


@dataclass
class FakeConn:
    """What Membership reads of a libp2p connection."""

    peer_id: ID
    direction: Direction
    is_closed: bool = False

    @property
    def muxed_conn(self) -> FakeConn:
        return self


@dataclass
class FakeNetwork:
    """Connections by peer, and which peers were closed."""

    conns: dict[ID, list[FakeConn]] = field(default_factory=dict)
    closed: list[ID] = field(default_factory=list)

    def get_connections(self, peer_id: ID) -> list[FakeConn]:
        return self.conns.get(peer_id, [])

    async def close_peer(self, peer_id: ID) -> None:
        self.closed.append(peer_id)
        self.conns.pop(peer_id, None)


@dataclass
class Events:
    connected: list[ID] = field(default_factory=list)
    disconnected: list[ID] = field(default_factory=list)
    transient: list[ID] = field(default_factory=list)


def membership(network: FakeNetwork, events: Events) -> Membership:
    return Membership(
        network,  # type: ignore[arg-type]
        events.connected.append,
        events.disconnected.append,
        events.transient.append,
    )


async def open_conn(
    members: Membership, network: FakeNetwork, peer_id: ID, direction: Direction
) -> FakeConn:
    conn = FakeConn(peer_id, direction)
    network.conns.setdefault(peer_id, []).append(conn)
    await members.connected(network, conn)  # type: ignore[arg-type]
    return conn


async def close_conn(members: Membership, network: FakeNetwork, conn: FakeConn) -> None:
    conn.is_closed = True
    await members.disconnected(network, conn)  # type: ignore[arg-type]


async def test_a_probe_connection_is_transient_and_not_a_neighbour() -> None:
    network, events = FakeNetwork(), Events()
    members = membership(network, events)
    probed = new_id()
    members.expect_probe(probed)
    conn = await open_conn(members, network, probed, Direction.OUTBOUND)
    assert members.is_transient(probed)
    assert members.probed(probed)
    assert not members.is_neighbour(probed)
    assert members.peers() == {}
    assert events.transient == [probed]
    assert events.connected == []
    await close_conn(members, network, conn)  # no departure: it never was a neighbour
    assert events.disconnected == []
    assert not members.is_transient(probed)


async def test_an_ordinary_dial_is_a_neighbour_and_an_inbound_one_after_cards() -> None:
    network, events = FakeNetwork(), Events()
    members = membership(network, events)
    dialed, dialer = new_id(), new_id()
    await open_conn(members, network, dialed, Direction.OUTBOUND)
    inbound = await open_conn(members, network, dialer, Direction.INBOUND)
    assert set(members.peers()) == {dialed}
    assert members.is_transient(dialer)
    assert not members.probed(dialer)  # not ours to close
    members.promote(dialer)  # it asked for our card
    assert set(members.peers()) == {dialed, dialer}
    assert events.connected == [dialed, dialer]
    await close_conn(members, network, inbound)
    assert events.disconnected == [dialer]


async def test_a_failed_probe_dial_does_not_make_the_next_dial_transient() -> None:
    network, events = FakeNetwork(), Events()
    members = membership(network, events)
    peer = new_id()
    members.expect_probe(peer)
    members.probe_failed(peer)
    await open_conn(members, network, peer, Direction.OUTBOUND)
    assert members.is_neighbour(peer)


@dataclass
class FakeStream:
    written: list[bytes] = field(default_factory=list)

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class FakeHost:
    """The host calls SwimService makes; a probe dial opens a transient connection."""

    peer_id: ID
    network: FakeNetwork
    members: Membership | None = None
    streams: list[FakeStream] = field(default_factory=list)

    def get_id(self) -> ID:
        return self.peer_id

    def get_network(self) -> FakeNetwork:
        return self.network

    def get_peerstore(self) -> Any:
        return self

    def add_addrs(self, peer_id: ID, addrs: Any, ttl: int) -> None:
        return None

    async def new_stream(self, peer_id: ID, protocols: Any) -> FakeStream:
        if not self.network.get_connections(peer_id):
            assert self.members is not None
            await open_conn(self.members, self.network, peer_id, Direction.OUTBOUND)
        stream = FakeStream()
        self.streams.append(stream)
        return stream


@dataclass
class Quiet:
    def on_member(self, member: str, state: State, incarnation: int) -> None:
        return None

    def on_probe(self, outcome: str) -> None:
        return None

    def on_message(self, kind: str, direction: str) -> None:
        return None


async def noop(peer_id: ID) -> None:
    return None


def swim_service(host: FakeHost, members: Membership) -> SwimService:
    key_pair = create_new_key_pair()
    return SwimService(
        host,  # type: ignore[arg-type]
        members,
        address="/ip4/127.0.0.1/tcp/1/p2p/" + host.peer_id.to_base58(),
        options=MembershipOptions(MembershipConfig(), 1, Quiet()),
        keys=Libp2pKeys(key_pair),
        on_revived=lambda peer_id: None,
        on_gone=noop,
        on_rtt=lambda peer_id, rtt: None,
        open_timeout=5.0,
    )


@pytest.mark.parametrize("neighbour", [False, True])
def test_the_prober_closes_its_transient_connection_once_idle(neighbour: bool) -> None:
    """A frame to a non-neighbour dials a transient connection, closed after
    TRANSIENT_IDLE_SECONDS without frames; a neighbour's connection is kept."""

    async def main() -> None:
        network, events = FakeNetwork(), Events()
        members = membership(network, events)
        host = FakeHost(new_id(), network, members)
        target = new_id()
        if neighbour:
            await open_conn(members, network, target, Direction.OUTBOUND)
        swim = swim_service(host, members)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(swim.run)
            await trio.testing.wait_all_tasks_blocked()
            swim.send(target.to_base58(), Ping(seq=1, target=target.to_base58()))
            await trio.testing.wait_all_tasks_blocked()
            assert host.streams
            assert host.streams[0].written
            assert members.is_neighbour(target) is neighbour
            assert members.probed(target) is not neighbour
            await trio.sleep(TRANSIENT_IDLE_SECONDS + 0.1)
            assert network.closed == ([] if neighbour else [target])
            nursery.cancel_scope.cancel()
        assert events.disconnected == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_probe_connection_outlives_the_members_next_probe() -> None:
    """Held two probe rounds over every member (a probe that must dial misses its
    timeout), at least TRANSIENT_IDLE_SECONDS and at most MAX_TRANSIENT_IDLE_SECONDS."""
    assert transient_idle(1, 0.5) == TRANSIENT_IDLE_SECONDS
    assert transient_idle(20, 0.5) == 20.0  # a 20-node mesh revisits a member every 10 s
    assert transient_idle(1000, 0.5) == MAX_TRANSIENT_IDLE_SECONDS


def trimmer(members: Membership, *, protected: frozenset[ID] = frozenset()) -> Trimmer:
    return Trimmer(
        None,  # type: ignore[arg-type]  # excess() never touches the host
        members,
        None,  # type: ignore[arg-type]
        target_peers=8,
        max_peers=12,
        grace=5.0,
        timeout=1.0,
        protected=protected,
    )


def neighbours(ages: list[float]) -> tuple[Membership, list[ID]]:
    """A Membership with one neighbour per age (seconds since it connected), oldest first."""
    members = membership(FakeNetwork(), Events())
    ids = []
    now = time.time()
    for age in ages:
        peer = new_id()
        members.mark_connected(peer, "outbound")
        members.peers()[peer].connected_at = now - age
        ids.append(peer)
    return members, ids


def test_no_trim_at_or_below_max_peers() -> None:
    members, _ = neighbours([60.0] * 12)
    assert trimmer(members).excess() == []


def test_trim_keeps_target_peers_and_cuts_the_newest() -> None:
    ages = [100.0 - i for i in range(14)]  # oldest first
    members, ids = neighbours(ages)
    excess = trimmer(members).excess()
    assert len(excess) == 14 - 8
    assert set(excess) == set(ids[8:])  # the six newest go


def test_trim_spares_connections_younger_than_the_grace_and_protected_ones() -> None:
    ages = [100.0] * 8 + [50.0, 40.0] + [4.0, 3.0, 2.0, 1.0]  # 14: four inside the grace
    members, ids = neighbours(ages)
    protected = frozenset({ids[9]})
    excess = trimmer(members, protected=protected).excess()
    # Six over the target, but only old unprotected ones may go: the newest of those first.
    assert ids[9] not in excess
    assert not set(excess) & set(ids[10:])
    assert excess[:1] == [ids[8]]
    assert len(excess) == 6
    assert set(excess) <= set(ids[:9])


class _Conn:
    """Enough of a Yamux connection for a stream's window bookkeeping."""

    def __init__(self) -> None:
        self.stream_buffers: dict[int, bytearray] = {1: bytearray()}
        self.frames: list[bytes] = []

    def rtt(self) -> float:
        return 0.0

    async def _write_frame(self, data: bytes) -> None:
        self.frames.append(data)


async def _read_messages(stream: YamuxStream, conn: _Conn, count: int, size: int) -> None:
    for _ in range(count):
        conn.stream_buffers[1].extend(b"x" * size)
        stream.recv_window -= size  # what handle_incoming does for a DATA frame
        del conn.stream_buffers[1][:size]  # what read() does, before it credits the sender
        await stream._auto_tune_and_send_window_update(bytes_read=size)


@pytest.mark.parametrize(("stream_class", "updates"), [(YamuxStream, 100), (BatchedYamuxStream, 0)])
def test_small_reads_send_no_window_update_until_half_the_window(
    stream_class: type[YamuxStream], updates: int
) -> None:
    """py-libp2p's stream answers each read with a WINDOW_UPDATE frame; the batched
    stream credits nothing for 100 small messages, then one update past half the window."""

    async def main() -> None:
        conn = _Conn()
        stream = stream_class(1, conn, is_initiator=True)  # type: ignore[arg-type]
        await _read_messages(stream, conn, 100, 200)
        assert len(conn.frames) == updates
        if stream_class is BatchedYamuxStream:
            await _read_messages(stream, conn, 1, stream.target_recv_window // 2)
            assert len(conn.frames) == 1
            assert stream.recv_window == stream.target_recv_window  # all credited back

    trio.run(main)


def test_every_yamux_connection_added_makes_batched_streams() -> None:
    """The notifee converts a new connection's streams, and those registered later."""

    async def main() -> None:
        muxed = Yamux(_Secured(), new_id())  # type: ignore[arg-type]
        muxed.streams[1] = YamuxStream(1, muxed, is_initiator=True)
        await BatchWindowUpdates().connected(None, _WithMuxed(muxed))  # type: ignore[arg-type]
        muxed.streams[3] = YamuxStream(3, muxed, is_initiator=True)
        assert {type(s) for s in muxed.streams.values()} == {BatchedYamuxStream}

    trio.run(main)


@dataclass
class _WithMuxed:
    muxed_conn: Yamux


class _Secured:
    is_initiator = True


@dataclass
class _Neighbours:
    """What :class:`Pacer` reads of a dialer."""

    peers: list[ID]
    target: int = 8

    def neighbours(self) -> list[ID]:
        return list(self.peers)

    def below_target(self) -> bool:
        return len(self.peers) < self.target


def test_discovery_rounds_back_off_below_the_target_degree_when_nothing_changes() -> None:
    """A mesh smaller than the target degree never reaches it: its rounds back off
    like those of a node at its target, and start over when the peers change."""
    dialer = _Neighbours([new_id(), new_id()])
    pacer = Pacer(None, dialer, 5.0)  # type: ignore[arg-type]
    assert pacer.wanted()
    delays = [pacer.next_delay() for _ in range(7)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0, 80.0, 80.0]
    dialer.peers.append(new_id())
    assert pacer.next_delay() == 5.0
    assert pacer.next_delay() == 10.0
