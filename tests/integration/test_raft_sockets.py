"""A raft member closes every socket it accepts: the one a redialling peer
supersedes at once, and on ``destroy()`` any its transport forgot.

pysyncobj 0.3.17 maps a peer to its newest connection without closing the one
before, which stayed open (an fd per reconnection after a partition) until the
garbage collector found it, failing some later test with "ResourceWarning:
unclosed <socket.socket …>". The test plays the peer over plain sockets,
speaking pysyncobj's framing (a length-prefixed zlib'd pickle; no secret).
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf  # type: ignore[import-untyped,unused-ignore]
from pysyncobj.transport import TCPTransport  # type: ignore[import-untyped,unused-ignore]

from praxis_grpc.consensus._raft_member import close_pipe
from praxis_grpc.consensus._raft_receiver import ReceiverRuleTransport
from praxis_grpc.consensus._raft_sockets import registered_connections
from tests.integration.helpers import free_addresses, tick_until


@contextlib.contextmanager
def _as_peer(member_address: str, peer_address: str) -> Iterator[socket.socket]:
    """A connection to the member that names itself ``peer_address``, as pysyncobj's
    dialling side does first thing."""
    host, port = member_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        data = zlib.compress(pickle.dumps(peer_address), 3)
        sock.sendall(struct.pack("i", len(data)) + data)
        yield sock


def _closed_by_member(sock: socket.socket, member: Any | None) -> bool:
    """Whether the member closed its end of ``sock`` (reads until EOF, ticking
    the member unless it is destroyed: None)."""
    sock.setblocking(False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if member is not None:
            member.doTick(0.01)
        else:
            time.sleep(0.01)
        try:
            if sock.recv(65536) == b"":
                return True
        except BlockingIOError:
            continue
        except ConnectionResetError:
            return True
    return False


def _member(tmp_path: Path, own: str, peer: str, transport: type[Any]) -> Any:
    # The lower address only accepts: the member never dials the peer the test plays.
    conf = SyncObjConf(
        autoTick=False,
        raftMinTimeout=300,
        raftMaxTimeout=600,
        connectionTimeout=600,
        dynamicMembershipChange=False,
        journalFile=str(tmp_path / "journal"),
        useFork=False,
    )
    member = SyncObj(own, [peer], conf, transportClass=transport)
    member.waitBinded()
    return member


def _destroy(member: Any) -> None:
    member.destroy()
    close_pipe(member)


def test_a_peer_that_dials_again_has_its_old_connection_closed(tmp_path: Path) -> None:
    own, peer = sorted(free_addresses(2))
    member = _member(tmp_path, own, peer, ReceiverRuleTransport)
    transport = member._SyncObj__transport
    node = transport._nodeAddrToNode[peer]
    try:
        with _as_peer(own, peer) as first:
            tick_until(member, lambda: node in transport._connections, "the peer is connected")
            old = transport._connections[node]
            with _as_peer(own, peer):
                tick_until(
                    member,
                    lambda: transport._connections.get(node) not in (None, old),
                    "the peer's new connection replaces the old",
                )
                assert old.fileno() is None, "the superseded connection is still open"
                assert _closed_by_member(first, member)
                assert len(registered_connections(member._poller)) == 1
    finally:
        _destroy(member)
    gc.collect()  # a socket left open fails the test here (ResourceWarning)


class _Forgetful(ReceiverRuleTransport):
    """pysyncobj's own handshake, which forgets a superseded connection."""

    _onIncomingMessageReceived = TCPTransport._onIncomingMessageReceived


def test_destroy_closes_the_connections_the_transport_forgot(tmp_path: Path) -> None:
    own, peer = sorted(free_addresses(2))
    member = _member(tmp_path, own, peer, _Forgetful)
    transport = member._SyncObj__transport
    node = transport._nodeAddrToNode[peer]
    destroyed = False
    try:
        with _as_peer(own, peer) as first:
            tick_until(member, lambda: node in transport._connections, "the peer is connected")
            old = transport._connections[node]
            with _as_peer(own, peer) as second:
                tick_until(
                    member,
                    lambda: transport._connections.get(node) not in (None, old),
                    "the peer's new connection replaces the old",
                )
                assert old.fileno() is not None  # forgotten, still open
                _destroy(member)
                destroyed = True
                assert registered_connections(member._poller) == []
                assert _closed_by_member(first, None)
                assert _closed_by_member(second, None)
    finally:
        if not destroyed:
            _destroy(member)
    gc.collect()
