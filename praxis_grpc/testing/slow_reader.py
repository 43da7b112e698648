"""A hostile HTTP/2 client over a raw socket, for abuse tests and benchmarks.

Just enough HTTP/2 (RFC 9113) and HPACK (literal header fields only, RFC 7541
6.2.2) to open gRPC calls the way a client that never reads its responses
would: it announces a zero flow-control window (``SETTINGS_INITIAL_WINDOW_SIZE
0``) and never sends a WINDOW_UPDATE, so the server can send headers but no
response DATA. It answers SETTINGS and (unless told not to) PING frames, so
keepalive alone cannot tell it from a healthy but busy client.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

__all__ = ["SlowReader", "grpc_frame"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_SETTINGS_ENABLE_PUSH, _SETTINGS_INITIAL_WINDOW_SIZE = 0x2, 0x4
_MAX_FRAME = 16_384


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    header = struct.pack(">I", len(payload))[1:] + bytes((kind, flags))
    return header + struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    # "Literal Header Field without Indexing -- New Name", no Huffman coding.
    encoded_name, encoded_value = name.encode(), value.encode()
    return (
        b"\x00"
        + _hpack_int(len(encoded_name), 7)
        + encoded_name
        + _hpack_int(len(encoded_value), 7)
        + encoded_value
    )


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


class SlowReader:
    """One HTTP/2 connection that opens calls and never accepts response data.

    Use :meth:`connect`, :meth:`call` (any number of times), then
    :meth:`close`. :attr:`closed_by_server` becomes true once the server
    closed the connection (EOF or a reset), :attr:`goaway` once it sent
    GOAWAY; :attr:`reset_streams` holds the streams it reset (RST_STREAM).
    With ``answer_pings`` false it acknowledges SETTINGS but not PING.
    """

    def __init__(self, host: str, port: int, *, answer_pings: bool = True) -> None:
        self._host, self._port = host, port
        self._answer_pings = answer_pings
        self.reset_streams: set[int] = set()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._next_stream = 1
        self.closed_by_server = False
        self.goaway = False

    async def connect(self, window: int = 0) -> None:
        """Open the connection and announce the initial stream window ``window``."""
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        settings = struct.pack(">HI", _SETTINGS_ENABLE_PUSH, 0)
        settings += struct.pack(">HI", _SETTINGS_INITIAL_WINDOW_SIZE, window)
        self._writer.write(PREFACE + frame(_SETTINGS, 0, 0, settings))
        await self._writer.drain()
        self._pump = asyncio.create_task(self._answer_control_frames())

    async def call(self, path: str, message: bytes, end_stream: bool = True) -> int:
        """Open a call of ``path`` (``/pkg.Service/Method``) carrying ``message``.

        Returns:
            The stream id.
        """
        assert self._writer is not None
        stream_id = self._next_stream
        self._next_stream += 2
        headers = b"".join(
            _literal(name, value)
            for name, value in (
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", f"{self._host}:{self._port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            )
        )
        out = [frame(_HEADERS, _END_HEADERS, stream_id, headers)]
        body = grpc_frame(message)
        for start in range(0, len(body), _MAX_FRAME):
            last = start + _MAX_FRAME >= len(body)
            flags = _END_STREAM if last and end_stream else 0
            out.append(frame(_DATA, flags, stream_id, body[start : start + _MAX_FRAME]))
        self._writer.write(b"".join(out))
        await self._writer.drain()
        return stream_id

    async def _answer_control_frames(self) -> None:
        assert self._reader is not None
        assert self._writer is not None
        try:
            while True:
                header = await self._reader.readexactly(9)
                length = int.from_bytes(header[:3], "big")
                kind, flags = header[3], header[4]
                payload = await self._reader.readexactly(length)
                if kind == _SETTINGS and not flags & _ACK:
                    self._writer.write(frame(_SETTINGS, _ACK, 0))
                elif kind == _PING and not flags & _ACK and self._answer_pings:
                    self._writer.write(frame(_PING, _ACK, 0, payload))
                elif kind == _RST_STREAM:
                    self.reset_streams.add(int.from_bytes(header[5:9], "big") & 0x7FFFFFFF)
                elif kind == _GOAWAY:
                    self.goaway = True
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_server = True

    async def close(self) -> None:
        """Close the socket (without a GOAWAY, as a vanished client would)."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
