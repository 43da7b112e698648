"""Request/response calls over libp2p streams, as the asyncio side sees them. No trio.

One call is one stream of ``/praxis/peer/1.0.0``: the caller writes one
request frame; the callee answers with any number of :data:`ITEM` frames and
ends with exactly one :data:`ERROR` or :data:`END` frame. Frames are
unsigned-varint length-prefixed (the libp2p convention) and bounded by the
reader's limit; the first byte of every response frame is its kind. What the
request and items contain is the business of the two ends (the peer
service's protobuf messages: :mod:`praxis_grpc.peers.libp2p`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["END", "ERROR", "ITEM", "PEER_PROTOCOL", "StreamCallError", "StreamCalls"]

PEER_PROTOCOL = "/praxis/peer/1.0.0"
ITEM = 0
"""A response message; more may follow."""
ERROR = 1
"""The call failed: a ``google.rpc.Status``; the last frame."""
END = 2
"""The call ended normally; the last frame (no payload)."""


class StreamCallError(Exception):
    """The call failed in transport (the peer did not answer).

    ``sent`` is False when the request certainly never reached the peer (it
    could not be dialed, or no stream could be opened to it).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class StreamCalls(Protocol):
    """Opens calls to peers (the libp2p discovery implements it)."""

    def call(self, address: str, request: bytes) -> AsyncIterator[bytes]:
        """Call the peer at ``address`` (a multiaddr ending in ``/p2p/<id>``,
        relayed or not): its response frames, the final one included.

        Raises :class:`StreamCallError` when the peer does not answer or the
        stream breaks before the final frame; closing the iterator early
        resets the stream. May be called concurrently, from the node's loop.
        """
        ...


class StreamService(Protocol):
    """Answers calls (the node's peer service behind the libp2p protocol)."""

    def answer(self, request: bytes) -> AsyncIterator[bytes]:
        """The response frames to ``request``, the final one included. Runs on
        the node's loop; cancelled when the caller goes away."""
        ...
