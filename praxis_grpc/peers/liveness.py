"""Evidence that the coordinator's process is gone, for
:meth:`~praxis_grpc.consensus.base.Suspecting.suspect`
(:meth:`~praxis_grpc.peers.base.PeerClient.wait_gone` of the gRPC peers).

A standby keeps a ``grpc.health.v1.Health/Watch`` stream open to the
coordinator. When that process dies (kill -9, a crash, OOM) the kernel closes
its sockets, so the stream breaks at once; the standby then opens a fresh TCP
connection to the same port. *Refused* is the evidence: the host answers and
nothing listens there. A timeout or an unreachable host is not evidence (a
partition looks the same); those cases wait for the backend's own failure
detector, as does a stream that breaks while the port still accepts.

Why the probe is the standard Health service and not a ``PeerService`` call:
the evidence is about the *port* (is anything listening?), not about any
service on it; Health is served by every node from its first moment to its
last, whatever its role, drain state or (once the security work lands) the
credentials a peer call needs, so a probe stream can break only because the
connection did; and an operator can watch the same thing with any gRPC
health tool. What makes it a peer call is that it goes through ``PeerClient``,
so the in-memory peers can play a process that dies.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["wait_gone"]

_CONNECT_TIMEOUT = 1.0
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 2.0


async def wait_gone(address: str) -> str:
    """Return the evidence once the process serving gRPC at ``address``
    ("host:port") is gone; until then keep watching (cancel to stop).

    Holds one idle HTTP/2 stream to ``address``; after a broken stream whose
    port still accepts, waits a little longer each time before watching again.
    A stream that was answered before it ended (the server closed an old
    connection: ``api.max_connection_age``) starts the waits over.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    pause = _FIRST_PAUSE
    while True:
        if await _watch_until_broken(address):
            pause = _FIRST_PAUSE
        evidence = await _refused(host, int(port))
        if evidence is not None:
            return evidence
        await asyncio.sleep(pause)
        pause = min(2 * pause, _MAX_PAUSE)


async def _watch_until_broken(address: str) -> bool:
    """Watch until the stream ends; True if it was answered first."""
    answered = False
    async with grpc.aio.insecure_channel(address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in stream:
                answered = True
    return answered


async def _refused(host: str, port: int) -> str | None:
    """The evidence if a TCP connection to ``host:port`` is refused, else None."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        return f"its gRPC port {host}:{port} refuses connections"
    except (OSError, TimeoutError):
        return None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
