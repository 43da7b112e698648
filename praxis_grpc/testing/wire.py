"""Protobuf wire format and process probes, by hand, for tests and benches
that must send bytes protobuf itself would refuse to build (too deep,
malformed) or check on processes they started."""

from __future__ import annotations

import os

__all__ = ["alive", "length_delimited", "varint", "varint_field"]


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (negative values as their 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` of wire type 2 (a string, bytes or message) holding ``payload``."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    """Field ``number`` of wire type 0 (an integer or bool) holding ``value``."""
    return varint(number << 3) + varint(value)


def alive(pid: int) -> bool:
    """True while a process with ``pid`` exists (a zombie counts until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
