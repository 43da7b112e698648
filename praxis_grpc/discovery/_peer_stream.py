"""The trio side of ``/praxis/peer/1.0.0`` calls (see :mod:`praxis_grpc.discovery.streams`).

Frames are moved, not understood: the callee's answers come from the node's
loop through a memory channel, the caller's go back to it through a callback.
Only the first byte of a response frame (its kind) is looked at, to find the
last one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import INetStream
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited

from praxis_grpc.discovery._wire import abort
from praxis_grpc.discovery.streams import END, ERROR, StreamCallError

__all__ = ["answer_call", "close_stream", "make_call", "refuse_call", "write_frame"]

log = logging.getLogger("praxis_grpc.discovery")

_WRITE_TIMEOUT = 10.0


def is_final(frame: bytes) -> bool:
    """True for the frame that ends a call."""
    return not frame or frame[0] in (ERROR, END)


async def write_frame(stream: INetStream, frame: bytes) -> None:
    # Shielded: a write cancelled halfway leaves a partial Noise frame on the
    # connection, and the peer then fails to decrypt everything after it
    # ("Failed authentication of message") and drops the whole connection.
    with trio.CancelScope(shield=True), trio.fail_after(_WRITE_TIMEOUT):
        await stream.write(encode_uvarint(len(frame)) + frame)


async def close_stream(stream: INetStream) -> None:
    """Close ``stream`` (a write of its own: shielded like :func:`write_frame`)."""
    with trio.CancelScope(shield=True), trio.move_on_after(_WRITE_TIMEOUT):
        await stream.close()


async def make_call(
    stream: INetStream, request: bytes, max_bytes: int, deliver: Callable[[bytes], None]
) -> None:
    """Send ``request`` on the open ``stream`` and pass each response frame to
    ``deliver`` up to the final one; then close the stream.

    Raises:
        StreamCallError: (``sent=True``) the stream broke or a frame was over
            ``max_bytes`` (the stream is reset either way).
    """
    try:
        await write_frame(stream, request)
        while True:
            frame = await read_varint_prefixed_bytes_limited(stream, max_bytes)
            deliver(frame)
            if is_final(frame):
                break
    except BaseException as exc:
        await abort(stream)
        if isinstance(exc, Exception):
            raise StreamCallError(f"the call broke: {exc!r}", sent=True) from exc
        raise
    await close_stream(stream)


async def answer_call(
    stream: INetStream,
    max_bytes: int,
    request_timeout: float,
    start: Callable[[bytes, trio.MemorySendChannel[bytes]], Callable[[], None]],
) -> None:
    """Read one request from ``stream`` and write back the frames that
    ``start(request, send)`` puts on ``send`` (from any thread, through the
    trio token) up to the final one. ``start`` returns a function that stops
    the answer; it is called when the caller resets the stream or the call
    ends. Never raises; a broken call resets the stream."""
    peer = stream.muxed_conn.peer_id
    stop: Callable[[], None] | None = None
    try:
        with trio.fail_after(request_timeout):
            request = await read_varint_prefixed_bytes_limited(stream, max_bytes)
        send, receive = trio.open_memory_channel[bytes](256)
        stop = start(request, send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_reset, stream, nursery.cancel_scope)
            async with receive:
                async for frame in receive:
                    await write_frame(stream, frame)
                    if is_final(frame):
                        break
            nursery.cancel_scope.cancel()
        await close_stream(stream)
    except Exception as exc:
        log.debug("answering a peer call from %s failed: %r", peer, exc)
        await abort(stream)
    finally:
        if stop is not None:
            stop()


async def refuse_call(stream: INetStream, final: bytes) -> None:
    """Answer the call on ``stream`` with the ``final`` frame alone, without reading
    its request (the caller sees the error; nothing was run). Never raises."""
    try:
        await write_frame(stream, final)
        await close_stream(stream)
    except Exception as exc:
        log.debug("refusing a peer call from %s failed: %r", stream.muxed_conn.peer_id, exc)
        await abort(stream)


async def _watch_reset(stream: INetStream, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the caller resets the stream (it gave up)."""
    try:
        while await stream.read(1):
            pass  # nothing more is expected from the caller
    except Exception:
        scope.cancel()
        return
    await trio.sleep_forever()  # half-closed: the caller still reads
