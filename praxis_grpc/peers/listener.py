"""The members-only listener of the peer service (``cluster.peer_port``, mutual TLS).

With ``cluster`` set the peer service leaves the public server for this one:
the public API may trust other client CAs (or none), while this port takes
client certificates of the cluster CA that name a member, only
(:mod:`~praxis_grpc.peers.members_only`).
"""

from __future__ import annotations

import grpc

from praxis_grpc.api.call_limit import CallLimit
from praxis_grpc.api.interceptors import (
    MetricsInterceptor,
    OnePass,
    RequestDecodingInterceptor,
)
from praxis_grpc.api.server_limits import request_size_limits, server_options
from praxis_grpc.call_slots import PerPeerSlots
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.config import Config
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.members_only import MembersOnly

__all__ = ["ListenError", "peer_server"]


class ListenError(Exception):
    """The peer listener cannot bind; the message names ``cluster.peer_port``."""


def peer_server(
    cfg: Config, metrics: Metrics, credentials: ClusterCredentials
) -> tuple[grpc.aio.Server, int]:
    """The members-only server for the peer service, bound (not started), and its port.

    Raises:
        ListenError: the address cannot be listened on.
    """
    server = grpc.aio.server(
        interceptors=[
            OnePass(
                CallLimit(cfg.api.max_concurrent_rpcs),
                MetricsInterceptor(metrics),
                MembersOnly(
                    PerPeerSlots(cfg.cluster.max_calls_per_peer),
                    lambda reason: metrics.peer_calls_refused_total.labels("grpc", reason).inc(),
                    credentials.revoked,
                ),
                RequestDecodingInterceptor(
                    size_limits=request_size_limits(cfg.tasks.max_argument_bytes)
                ),
            )
        ],
        options=server_options(cfg.api),
    )
    address = f"{cfg.api.host}:{cfg.cluster.peer_port}"
    try:
        port = server.add_secure_port(address, credentials.server_credentials())
    except RuntimeError as exc:
        raise ListenError(f"cluster.peer_port: cannot listen on {address}: {exc}") from None
    if port == 0:
        raise ListenError(f"cluster.peer_port: cannot listen on {address} (address in use?)")
    return server, port
