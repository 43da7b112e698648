"""The gRPC server's connection limits, from the ``api`` config section.

What they bound: at most ``max_connections`` client connections are open at
once. A client that stops reading (a zero HTTP/2 flow-control window) keeps
its calls, and the responses queued for them, until it leaves a ping
unacknowledged for ``keepalive_timeout`` or, if it answers pings,
until ``max_connection_age + max_connection_age_grace``; at most
``max_concurrent_streams`` calls per connection and ``max_concurrent_rpcs``
over all of them are in progress at once (the next call is answered
RESOURCE_EXHAUSTED, see :mod:`~praxis_grpc.api.call_limit`); a connection
without calls is closed after ``max_connection_idle``.

Long-lived streams (WatchTask, WatchCards, the Health/Watch stream a standby
keeps to its coordinator) end UNAVAILABLE when their connection reaches
``max_connection_age + max_connection_age_grace``; every stream inside praxis
is re-opened by its owner (delegation followers, :mod:`praxis_grpc.ha.liveness`),
and external watchers must re-watch, as after any broken connection.
"""

from __future__ import annotations

from praxis_grpc.api.interceptors import SizeLimit
from praxis_grpc.config import TASK_ENVELOPE_BYTES, ApiConfig

__all__ = ["MIN_PING_INTERVAL_MS", "request_size_limits", "server_options"]

SUBMIT_TASK = "/praxis.v1.TaskService/SubmitTask"
# The peer calls that carry a task's arguments (praxis.peer.v1.PeerService).
PEER_DISPATCH = "/praxis.peer.v1.PeerService/Dispatch"
PEER_RELAY_SUBMIT = "/praxis.peer.v1.PeerService/RelaySubmit"

# Client pings more frequent than this count as strikes; the node's own
# channels ping every 10 s, and its relays to the coordinator every second,
# idle or not (routing/channels.py, node.py), so stay well below that.
MIN_PING_INTERVAL_MS = 500
_MAX_PING_STRIKES = 2


def _ms(seconds: float) -> int:
    return max(round(seconds * 1000), 1)


def server_options(api: ApiConfig) -> list[tuple[str, int]]:
    """The ``grpc.aio.server`` channel options that enforce ``api``'s limits.

    ``max_concurrent_rpcs`` is not among them: the server's
    :class:`~praxis_grpc.api.call_limit.CallLimit` enforces it.
    """
    return [
        ("grpc.max_receive_message_length", api.max_message_bytes),
        ("grpc.max_send_message_length", api.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", api.max_connections),
        ("grpc.max_concurrent_streams", api.max_concurrent_streams),
        ("grpc.max_connection_idle_ms", _ms(api.max_connection_idle)),
        ("grpc.max_connection_age_ms", _ms(api.max_connection_age)),
        ("grpc.max_connection_age_grace_ms", _ms(api.max_connection_age_grace)),
        ("grpc.keepalive_time_ms", _ms(api.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(api.keepalive_timeout)),
        # Any unacknowledged ping (not only keepalive's: gRPC's own BDP probe
        # goes first, and one ping in flight blocks the next) ends the connection.
        ("grpc.http2.ping_timeout_ms", _ms(api.keepalive_timeout)),
        # Keep pinging a connection whose only call is a quiet stream, so a
        # vanished client is noticed however long the stream has been idle.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        # Pings on a connection without calls are allowed at that rate too
        # (otherwise once in two hours): a standby's relay channel pings its
        # coordinator while idle, to know it is reachable before a call.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", _MAX_PING_STRIKES),
    ]


def request_size_limits(max_argument_bytes: int) -> dict[str, SizeLimit]:
    """Per-method limits on the raw request, checked before decoding.

    A SubmitTask request (and a peer's Dispatch or RelaySubmit) holds at
    most ``tasks.max_argument_bytes`` of arguments and a few bounded fields
    (tool, key, tags...), so anything
    larger is refused without paying to decode it: a 4 MB message of nulls
    decodes into about 40 MB of protobuf objects, and a burst of them kept a
    node's RSS up by hundreds of MB after every one was refused.
    """
    limit = SizeLimit(
        max_bytes=max_argument_bytes + TASK_ENVELOPE_BYTES,
        field="request",
        rule="tasks.max_argument_bytes + 64 KiB for the other fields",
    )
    return {SUBMIT_TASK: limit, PEER_DISPATCH: limit, PEER_RELAY_SUBMIT: limit}
