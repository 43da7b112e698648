"""pysyncobj 0.3.17's TCP transport without the sockets it forgets.

Two paths leave a connected socket that nothing closes:

- A peer that dials again (its side of the old connection timed out, or was
  given up after a partition) is accepted, and once it names itself the
  transport maps the peer to the new connection, dropping the old one from
  its table without closing it. The old socket stays registered with the
  poller and is closed only if its far end ever sends FIN or RST: after a
  partition or a peer's crash, never (one fd per reconnection).
- ``destroy()`` closes the connections in its table, not those it forgot, and
  the member's poller then keeps them until the garbage collector finds the
  cycle: "ResourceWarning: unclosed <socket.socket …>" at some later,
  unrelated moment, and an fd held meanwhile.

:class:`TidyTransport` closes a superseded connection when its successor
names the peer, and on ``destroy()`` every connection still registered with
the poller. Both run on pysyncobj's thread, like the transport.
"""

from __future__ import annotations

from typing import Any

from pysyncobj.tcp_connection import TcpConnection  # type: ignore[import-untyped,unused-ignore]
from pysyncobj.transport import TCPTransport  # type: ignore[import-untyped,unused-ignore]

__all__ = ["TidyTransport", "registered_connections"]


class TidyTransport(TCPTransport):  # type: ignore[misc]  # pysyncobj is untyped
    """:class:`pysyncobj.transport.TCPTransport` that closes every socket it opens or accepts."""

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        before = dict(self._connections)
        super()._onIncomingMessageReceived(conn, message)
        for node, old in before.items():
            if old is not conn and self._connections.get(node) is conn:
                _close_quietly(old)

    def destroy(self) -> None:
        super().destroy()
        for conn in registered_connections(self._syncObj._poller):
            _close_quietly(conn)


def registered_connections(poller: Any) -> list[Any]:
    """The open connections whose sockets ``poller`` watches (pysyncobj's poll
    and select pollers keep them in a private fd -> callback map)."""
    callbacks: dict[int, Any] = {}
    for name in ("_PollPoller__descrToCallbacks", "_SelectPoller__descrToCallbacks"):
        callbacks.update(getattr(poller, name, None) or {})
    found: list[Any] = []
    for callback in callbacks.values():
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, TcpConnection) and owner.fileno() is not None and owner not in found:
            found.append(owner)
    return found


def _close_quietly(conn: Any) -> None:
    """Close ``conn`` without its callbacks (the transport is done with it: no
    node-disconnected event, no reconnect)."""
    conn.setOnMessageReceivedCallback(None)
    conn.setOnDisconnectedCallback(None)
    conn.disconnect()
