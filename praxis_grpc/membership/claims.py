"""Signed statements the membership layer spreads: claims about members and app payloads.

Every item carries the signature of the one who makes it: an alive or left
claim is signed by the member itself, a suspect or dead claim by its accuser,
an app payload by its origin. :meth:`Claim.body` and :meth:`Payload.body` are
the exact bytes signed; they are also the items' wire form (see ``codec``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_MAGIC = b"praxis-swim/1"
_INT = struct.Struct(">Q")
_SHORT = struct.Struct(">H")
_LONG = struct.Struct(">I")
# Largest app payload accepted, in bytes (the data, not the envelope).
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_NAME_BYTES = 1024


class State(enum.IntEnum):
    """What a member is believed to be; also the kind of a :class:`Claim`."""

    ALIVE = 1
    SUSPECT = 2
    DEAD = 3
    LEFT = 4


@dataclass(frozen=True, slots=True)
class Claim:
    """``accuser`` says ``member`` is in ``kind`` at ``incarnation``.

    For ALIVE and LEFT the accuser is the member itself; ``address`` is the
    member's opaque transport address (alive claims only).
    """

    kind: State
    member: str
    incarnation: int
    accuser: str
    address: str = ""
    signature: bytes = b""

    @property
    def signer(self) -> str:
        """Whose signature makes this claim count."""
        return self.accuser

    @property
    def well_formed(self) -> bool:
        """Alive and left claims must be made by the member about itself."""
        self_claim = self.kind in (State.ALIVE, State.LEFT)
        return (self.accuser == self.member) == self_claim and self.incarnation >= 0

    def body(self) -> bytes:
        """The bytes the signer signs."""
        return b"".join(
            (
                _MAGIC,
                bytes((0, int(self.kind))),
                _text(self.member),
                _INT.pack(self.incarnation),
                _text(self.accuser),
                _text(self.address),
            )
        )

    def size(self) -> int:
        """Approximate encoded size, for packet budgets."""
        return 40 + len(self.member) + len(self.accuser) + len(self.address) + len(self.signature)


@dataclass(frozen=True, slots=True)
class Payload:
    """Version ``version`` of the application's bytes under ``key``, from ``origin``."""

    origin: str
    key: str
    version: int
    data: bytes
    signature: bytes = b""

    @property
    def signer(self) -> str:
        """Whose signature makes this payload count."""
        return self.origin

    def body(self) -> bytes:
        """The bytes the origin signs."""
        return b"".join(
            (
                _MAGIC,
                bytes((1, 0)),
                _text(self.origin),
                _text(self.key),
                _INT.pack(self.version),
                _LONG.pack(len(self.data)),
                self.data,
            )
        )

    def size(self) -> int:
        """Approximate encoded size, for packet budgets."""
        return 40 + len(self.origin) + len(self.key) + len(self.data) + len(self.signature)


Item = Claim | Payload


def parse_body(body: bytes, signature: bytes) -> Item:
    """The item whose :meth:`body` is ``body``.

    Raises:
        ValueError: ``body`` is not a well-formed item.
    """
    reader = _Reader(body)
    if reader.take(len(_MAGIC)) != _MAGIC:
        raise ValueError("membership item: bad magic")
    tag, kind = reader.take(2)
    item: Item
    if tag == 0:
        item = Claim(
            kind=State(kind),
            member=reader.text(),
            incarnation=reader.integer(),
            accuser=reader.text(),
            address=reader.text(),
            signature=signature,
        )
    elif tag == 1:
        origin, key, version = reader.text(), reader.text(), reader.integer()
        length = _LONG.unpack(reader.take(4))[0]
        if length > MAX_PAYLOAD_BYTES:
            raise ValueError(f"membership payload: data of {length} bytes is too large")
        item = Payload(origin, key, version, reader.take(length), signature)
    else:
        raise ValueError(f"membership item: unknown tag {tag}")
    reader.finish()
    return item


def _text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"membership item: name of {len(raw)} bytes is too long")
    return _SHORT.pack(len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, count: int) -> bytes:
        end = self._at + count
        if end > len(self._data):
            raise ValueError("membership item: truncated")
        chunk = self._data[self._at : end]
        self._at = end
        return chunk

    def text(self) -> str:
        length = _SHORT.unpack(self.take(2))[0]
        return self.take(length).decode()

    def integer(self) -> int:
        value: int = _INT.unpack(self.take(8))[0]
        return value

    def finish(self) -> None:
        if self._at != len(self._data):
            raise ValueError("membership item: trailing bytes")
