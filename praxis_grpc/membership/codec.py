"""Membership messages as bytes, for transports that carry bytes (the libp2p adaptor).

Each signed item travels as its signed body plus its signature, so what is
verified is exactly what was received. :func:`decode_message` accepts any
bytes: malformed input raises ``ValueError`` and never allocates beyond the
input's size.
"""

from __future__ import annotations

import struct

from praxis_grpc.membership.claims import Item, parse_body
from praxis_grpc.membership.messages import Ack, Gossip, Message, Nack, Ping, PingReq, PushPull

MAX_ITEMS = 100_000
_HEAD = struct.Struct(">BQ")
_COUNT = struct.Struct(">I")
_SIG = struct.Struct(">H")
_TAGS: dict[type, int] = {Ping: 1, Ack: 2, PingReq: 3, Nack: 4, Gossip: 5, PushPull: 6}


def encode_message(message: Message) -> bytes:
    """``message`` as bytes."""
    seq = message.seq if isinstance(message, Ping | Ack | PingReq | Nack) else 0
    if isinstance(message, PushPull):
        seq = int(message.reply)
    parts = [_HEAD.pack(_TAGS[type(message)], seq)]
    if isinstance(message, Ping | PingReq):
        target = message.target.encode()
        parts.append(_SIG.pack(len(target)) + target)
    if isinstance(message, Ping | Ack | Gossip | PushPull):
        parts.append(_COUNT.pack(len(message.items)))
        for item in message.items:
            body = item.body()
            parts.append(_COUNT.pack(len(body)) + body + _SIG.pack(len(item.signature)))
            parts.append(item.signature)
    return b"".join(parts)


def decode_message(data: bytes) -> Message:
    """The message :func:`encode_message` made.

    Raises:
        ValueError: ``data`` is not a well-formed message.
    """
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise ValueError("membership message: truncated header")
    tag, seq = _HEAD.unpack_from(view)
    at = _HEAD.size
    target = ""
    if tag in (1, 3):
        target, at = _text(view, at)
    items: tuple[Item, ...] = ()
    if tag in (1, 2, 5, 6):
        items, at = _items(view, at)
    if at != len(view):
        raise ValueError("membership message: trailing bytes")
    if tag == 1:
        return Ping(seq, target, items)
    if tag == 2:
        return Ack(seq, items)
    if tag == 3:
        return PingReq(seq, target)
    if tag == 4:
        return Nack(seq)
    if tag == 5:
        return Gossip(items)
    if tag == 6:
        return PushPull(items, reply=bool(seq))
    raise ValueError(f"membership message: unknown tag {tag}")


def _text(view: memoryview, at: int) -> tuple[str, int]:
    length, at = _unpack(_SIG, view, at)
    return bytes(_take(view, at, length)).decode(), at + length


def _items(view: memoryview, at: int) -> tuple[tuple[Item, ...], int]:
    count, at = _unpack(_COUNT, view, at)
    if count > MAX_ITEMS:
        raise ValueError(f"membership message: {count} items is too many")
    items = []
    for _ in range(count):
        length, at = _unpack(_COUNT, view, at)
        body = bytes(_take(view, at, length))
        at += length
        sig_length, at = _unpack(_SIG, view, at)
        signature = bytes(_take(view, at, sig_length))
        at += sig_length
        items.append(parse_body(body, signature))
    return tuple(items), at


def _unpack(spec: struct.Struct, view: memoryview, at: int) -> tuple[int, int]:
    value: int = spec.unpack_from(_take(view, at, spec.size))[0]
    return value, at + spec.size


def _take(view: memoryview, at: int, length: int) -> memoryview:
    if at + length > len(view):
        raise ValueError("membership message: truncated")
    return view[at : at + length]
