"""yamux with go-yamux's window updates: one per half window consumed, not one per read.

py-libp2p 0.8.1's ``YamuxStream.read`` sends a WINDOW_UPDATE frame after every
read that consumed anything (its "partial slack" and ``PY_YAMUX_RELEASE_ON_READ``
branches), so every small message a peer sends (a SWIM ping, a gossipsub RPC)
costs the receiver one more Noise-encrypted frame written back: about a tenth
of an idle node's CPU. go-yamux (``sendWindowUpdate``) only credits the sender
once the consumed bytes reach half the receive window, which is all flow
control needs: the sender stalls only after a whole window (256 KiB) is unread.

This is a workaround until py-libp2p batches its updates. py-libp2p builds its
``Yamux`` connection inline (``MuxerMultistream.new_conn`` ignores the muxer
class it is given) and each ``YamuxStream`` inline too, so
:class:`BatchWindowUpdates`, a network notifee, converts every yamux connection
as it is added to the swarm: its stream table makes each stream registered a
:class:`BatchedYamuxStream`. Nothing in site-packages is changed.
"""

from __future__ import annotations

from libp2p.abc import INetConn, INetwork
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from praxis_grpc.discovery._notifee import QuietNotifee

__all__ = ["BatchWindowUpdates", "BatchedYamuxStream", "batch_window_updates"]


class BatchedYamuxStream(YamuxStream):
    """A yamux stream that credits its sender once per half window consumed."""

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            # What was consumed and not yet credited back to the sender.
            consumed = self.target_recv_window - (self.recv_window + buffered)
            if consumed <= 0 or consumed < self._grow_threshold():
                return
            self.recv_window += consumed
            increment = consumed + self._apply_autotune_epoch(buffered)
        await self.send_window_update(increment, skip_lock=True)


class _BatchedStreams(dict[int, YamuxStream]):
    """A stream table that makes every stream registered a :class:`BatchedYamuxStream`."""

    def __setitem__(self, stream_id: int, stream: YamuxStream) -> None:
        _convert(stream)
        super().__setitem__(stream_id, stream)


def _convert(stream: YamuxStream) -> None:
    if type(stream) is YamuxStream:
        stream.__class__ = BatchedYamuxStream  # same layout: only a method differs


def batch_window_updates(conn: Yamux) -> None:
    """Make ``conn``'s streams, current and future, :class:`BatchedYamuxStream`. Idempotent."""
    if isinstance(conn.streams, _BatchedStreams):
        return
    for stream in conn.streams.values():
        _convert(stream)
    conn.streams = _BatchedStreams(conn.streams)


class BatchWindowUpdates(QuietNotifee):
    """A network notifee that applies :func:`batch_window_updates` to every new yamux connection.

    Register it on the host's network before it listens or dials.
    """

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        muxed = conn.muxed_conn
        if isinstance(muxed, Yamux):
            batch_window_updates(muxed)
