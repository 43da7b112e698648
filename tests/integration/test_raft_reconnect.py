"""A raft member dials a peer again when its connect hangs (SYNs dropped, as
in a partition), instead of waiting for the kernel's next SYN retransmission
(1, 3, 7 s ... after the dial), so it reaches the peer soon after the heal.

The peer is a listening socket whose accept queue is full: Linux drops the
SYNs it receives until the queue has room again (the "heal")."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from pysyncobj import SyncObj, SyncObjConf  # type: ignore[import-untyped,unused-ignore]
from pysyncobj.tcp_connection import (  # type: ignore[import-untyped,unused-ignore]
    CONNECTION_STATE,
)

from praxis_grpc.consensus._raft_member import close_pipe
from praxis_grpc.consensus._raft_receiver import ReceiverRuleTransport
from tests.integration.helpers import free_addresses, tick_until


@contextlib.contextmanager
def _black_hole(address: str) -> Iterator[socket.socket]:
    """A listener at ``address`` that drops every SYN until one accept()."""
    host, port = address.rsplit(":", 1)
    with socket.socket() as hole:
        hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hole.bind((host, int(port)))
        hole.listen(0)
        with socket.create_connection((host, int(port))):  # fills the accept queue
            yield hole


def test_a_connect_whose_syns_are_dropped_is_dialled_again(tmp_path: Path) -> None:
    # pysyncobj dials only peers whose address sorts below its own.
    peer, own = sorted(free_addresses(2))
    with _black_hole(peer) as hole:
        conf = SyncObjConf(
            autoTick=False,
            raftMinTimeout=0.3,
            raftMaxTimeout=0.6,
            appendEntriesPeriod=0.05,
            connectionTimeout=3.5,
            connectionRetryTime=0.3,
            dynamicMembershipChange=False,
            journalFile=str(tmp_path / "journal"),
            useFork=False,
        )
        member = SyncObj(own, [peer], conf, transportClass=ReceiverRuleTransport)
        try:
            transport = member._SyncObj__transport
            node = transport._nodeAddrToNode[peer]

            def dialled() -> float | None:
                conn = transport._connections.get(node)
                if conn is None or conn.state != CONNECTION_STATE.CONNECTING:
                    return None
                started: float | None = transport._lastConnectAttempt.get(node)
                return started

            tick_until(member, lambda: dialled() is not None, "dialling the peer")
            first = dialled()
            # The SYN is dropped; the member gives up and dials again.
            tick_until(
                member,
                lambda: dialled() not in (None, first),
                "a second dial while the first connect hangs",
                timeout=5.0,
            )
            hole.accept()[0].close()  # the heal: room in the accept queue
            tick_until(
                member,
                lambda: transport._connections[node].state == CONNECTION_STATE.CONNECTED,
                "connected after the heal",
            )
        finally:
            member.destroy()
            close_pipe(member)
