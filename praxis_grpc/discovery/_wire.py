"""Wire format of the praxis stream protocols, with size and time bounds.

The card and peer protocols carry unsigned-varint length-prefixed frames (the libp2p
convention). A frame longer than the reader's limit is never read: the stream
is reset and :class:`FrameTooLarge` raised. None of these functions has a
deadline of its own: callers wrap each exchange in ``trio.fail_after`` (a
stalled peer must not hang us), and a cancelled exchange resets its stream.
"""

from __future__ import annotations

import json
import logging

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import MessageTooLarge
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

log = logging.getLogger("praxis_grpc.discovery")

CARD_PROTOCOL = TProtocol("/praxis/card/1.0.0")
"""Full card exchange: the opener sends its card, then reads the other's."""

PEERS_PROTOCOL = TProtocol("/praxis/peers/1.0.0")
"""Peer exchange: the opener reads one frame, a JSON list of ``.../p2p/<id>`` multiaddrs."""

TRIM_PROTOCOL = TProtocol("/praxis/trim/1.0.0")
"""Trim notice: the opener is about to close the connection to bound its degree; the
other side answers one byte once it has noted that, and does not count the peer gone."""

MAX_SHARED_PEERS = 64
MAX_ADDRS_PER_PEER = 4
MAX_PEER_LIST_BYTES = 64 * 1024
_RESET_TIMEOUT = 1.0


class FrameTooLarge(Exception):
    """The peer announced a frame above the limit; the stream was reset."""


async def abort(stream: INetStream) -> None:
    """Reset ``stream``, even from a cancelled scope; never raises."""
    with trio.CancelScope(shield=True), trio.move_on_after(_RESET_TIMEOUT):
        try:
            await stream.reset()
        except Exception:
            log.debug("resetting a stream failed", exc_info=True)


async def _write_frame(stream: INetStream, data: bytes) -> None:
    await stream.write(encode_uvarint(len(data)) + data)


async def _read_frame(stream: INetStream, max_bytes: int) -> bytes:
    try:
        return await read_varint_prefixed_bytes_limited(stream, max_bytes)
    except MessageTooLarge as exc:
        raise FrameTooLarge(str(exc)) from exc


async def request_card(host: IHost, peer_id: ID, local_card: bytes, max_bytes: int) -> bytes:
    """Open a card stream to ``peer_id``, send ``local_card``, return the peer's card.

    An empty result means the peer has no card yet.

    Raises:
        FrameTooLarge: the peer's card is over ``max_bytes`` (stream reset).
        Exception: any libp2p stream or negotiation error (stream reset).
    """
    stream = await host.new_stream(peer_id, [CARD_PROTOCOL])
    try:
        await _write_frame(stream, local_card)
        card = await _read_frame(stream, max_bytes)
        await stream.close()
    except BaseException:
        await abort(stream)
        raise
    return card


async def answer_card(stream: INetStream, local_card: bytes, max_bytes: int) -> bytes:
    """Serve one inbound card stream: read the opener's card, reply with ``local_card``.

    Raises the same errors as :func:`request_card`; the stream is reset on any error.
    """
    try:
        card = await _read_frame(stream, max_bytes)
        await _write_frame(stream, local_card)
        await stream.close()
    except BaseException:
        await abort(stream)
        raise
    return card


async def request_peers(host: IHost, peer_id: ID) -> list[PeerInfo]:
    """Ask ``peer_id`` which peers it is connected to; malformed entries are skipped."""
    stream = await host.new_stream(peer_id, [PEERS_PROTOCOL])
    try:
        frame = await _read_frame(stream, MAX_PEER_LIST_BYTES)
        await stream.close()
    except BaseException:
        await abort(stream)
        raise
    return decode_peer_list(frame)


async def answer_peers(stream: INetStream, peers: list[PeerInfo]) -> None:
    """Serve one inbound peer-exchange stream with ``peers`` (bounded)."""
    try:
        await _write_frame(stream, encode_peer_list(peers))
        await stream.close()
    except BaseException:
        await abort(stream)
        raise


def encode_peer_list(peers: list[PeerInfo]) -> bytes:
    """At most :data:`MAX_SHARED_PEERS` peers with :data:`MAX_ADDRS_PER_PEER` addresses each."""
    entries: list[str] = []
    for info in peers[:MAX_SHARED_PEERS]:
        suffix = f"/p2p/{info.peer_id.to_base58()}"
        entries.extend(str(without_p2p(addr)) + suffix for addr in info.addrs[:MAX_ADDRS_PER_PEER])
    data = json.dumps(entries).encode()
    while len(data) > MAX_PEER_LIST_BYTES:  # only with absurdly long addresses
        entries = entries[: len(entries) // 2]
        data = json.dumps(entries).encode()
    return data


def decode_peer_list(data: bytes) -> list[PeerInfo]:
    """Inverse of :func:`encode_peer_list`; skips anything that is not a p2p multiaddr."""
    try:
        entries = json.loads(data)
    except ValueError:
        log.warning("peer exchange: reply is not JSON; ignored")
        return []
    if not isinstance(entries, list):
        return []
    grouped: dict[ID, list[Multiaddr]] = {}
    for entry in entries[: MAX_SHARED_PEERS * MAX_ADDRS_PER_PEER]:
        if not isinstance(entry, str):
            continue
        try:
            info = info_from_p2p_addr(Multiaddr(entry))
        except Exception:
            log.debug("peer exchange: skipping %r", entry)
            continue
        grouped.setdefault(info.peer_id, []).extend(info.addrs)
    return [PeerInfo(peer_id, addrs) for peer_id, addrs in grouped.items()]


def without_p2p(addr: Multiaddr) -> Multiaddr:
    """``addr`` with any trailing ``/p2p/<id>`` removed."""
    text = str(addr)
    index = text.find("/p2p/")
    return Multiaddr(text[:index]) if index > 0 else addr
