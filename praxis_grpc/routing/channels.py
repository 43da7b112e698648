"""One pooled grpc.aio channel per peer endpoint.

gRPC channels multiplex any number of calls over one HTTP/2 connection and
reconnect by themselves, so a node keeps exactly one per peer address and
closes it when the peer leaves the mesh (which also ends the calls on it,
the signal the delegation layer uses to notice a lost owner).
"""

from __future__ import annotations

import asyncio

import grpc

from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc

__all__ = ["ChannelPool", "cancelling"]


class ChannelPool:
    """Channels (and TaskService stubs) keyed by ``host:port``. Runs on one loop."""

    def __init__(
        self,
        max_message_bytes: int = 4 * 1024 * 1024,
        *,
        keepalive_time: float = 10.0,
        keepalive_timeout: float = 5.0,
        keepalive_without_calls: bool = False,
    ) -> None:
        """Args:
        keepalive_time, keepalive_timeout: Ping a connection this often and
            close it when a ping goes unanswered this long. The default
            notices a dead peer on an idle watch stream within ~15 s even
            before its card is removed; the relays to the coordinator ping
            every second. The server must allow it (api/server_limits.py).
        keepalive_without_calls: Also ping connections without calls.
        """
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", round(keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", round(keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(keepalive_without_calls)),
            # Keep pinging while a call waits quietly for its answer.
            ("grpc.http2.max_pings_without_data", 0),
            # Reconnect promptly to a peer that restarts on the same address.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, task_service_pb2_grpc.TaskServiceAsyncStub] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def tasks(self, address: str) -> task_service_pb2_grpc.TaskServiceAsyncStub:
        """The TaskService stub for ``address``, opening its channel if needed."""
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=self._options)
            self._channels[address] = channel
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            self._stubs[address] = stub
        return stub

    def __contains__(self, address: object) -> bool:
        return address in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def discard(self, address: str) -> None:
        """Close the channel to ``address`` (in the background); calls on it fail."""
        channel = self._channels.pop(address, None)
        self._stubs.pop(address, None)
        if channel is not None:
            closing = asyncio.get_running_loop().create_task(channel.close(grace=None))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every channel."""
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close(grace=None)
        if self._closing:
            await asyncio.wait(set(self._closing))


def cancelling() -> bool:
    """True when the current asyncio task itself is being cancelled.

    grpc.aio cancels the calls of a channel that is closed (here: when the
    peer's card is removed) by raising ``CancelledError`` in the caller; this
    tells that apart from the caller's own cancellation.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
