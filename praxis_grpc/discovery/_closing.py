"""Closing a peer's connections within a bound, without leaking their sockets.

py-libp2p 0.8.1 closes a yamux connection in order: under its stream lock it
writes GO_AWAY (waiting for the connection's write lock), and only then closes
the socket. ``SwarmConn.close`` marks the connection closed before any of that.
A close cancelled halfway (a bound on closing a peer that stopped reading,
say a SIGSTOPped one whose socket buffers are full, holds the write lock
forever) therefore leaves a connection that counts as closed but keeps its
socket open until the garbage collector finds it: "ResourceWarning: unclosed
<trio.socket.socket ...>", and an fd held meanwhile. :func:`close_peer` bounds
the orderly close and then closes the sockets of what is left directly (the
secure session's close goes straight to the socket, taking no lock).
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import INetConn, INetwork
from libp2p.peer.id import ID

log = logging.getLogger("praxis_grpc.discovery")

_FORCE_TIMEOUT = 1.0


async def close_peer(network: INetwork, peer_id: ID, within: float) -> None:
    """Close every connection to ``peer_id``: in order within ``within`` seconds, then the
    sockets of those left. Never raises (but is cancellable before the forced close)."""
    conns = list(network.get_connections(peer_id))
    with trio.move_on_after(within) as scope:
        try:
            await network.close_peer(peer_id)
        except Exception:
            log.debug("closing the connections to %s failed", peer_id, exc_info=True)
    if scope.cancelled_caught:
        log.debug("closing %s took over %.1f s; closing its sockets", peer_id, within)
    for conn in conns:
        await close_socket(conn)


async def close_socket(conn: INetConn) -> None:
    """Close ``conn``'s socket directly (idempotent, shielded, bounded; never raises)."""
    secured = getattr(conn.muxed_conn, "secured_conn", None)
    if secured is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(_FORCE_TIMEOUT):
        try:
            await secured.close()
        except Exception:
            log.debug("closing a socket failed", exc_info=True)
