"""A member's etcd lease: grant, keepalive, revoke, and the local view of its life.

The member renews every third of the TTL over a LeaseKeepAlive stream. It
counts the lease as alive until the TTL after the *sending* of the last
acknowledged renewal: etcd renewed it after that moment, so etcd's own expiry
is never earlier. A renewal unanswered for a third of the TTL counts as a
failure of the endpoint, so a hung etcd member is left with time to renew
through another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc.aio

from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2
from praxis_grpc.consensus._etcd_endpoints import REQUIRE_LEADER, EtcdEndpoints, describe
from praxis_grpc.consensus.base import ConsensusError

log = logging.getLogger("praxis_grpc.consensus.etcd")

ATTEMPT_TIMEOUT = 1.0  # one try of an idempotent call before failing over
_RETRY_PAUSE = 0.05


class Lease:
    """A granted lease and until when this member can be sure it lives."""

    def __init__(self, lease_id: int, ttl: int, sent: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.deadline = sent + ttl
        self.lost = asyncio.Event()
        self.reason = ""
        self.keeper: asyncio.Task[None] | None = None

    def lose(self, reason: str) -> None:
        """Mark the lease lost (the first reason sticks)."""
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    async def wait_lost(self) -> str:
        """Return the reason once the lease is lost or its deadline passed."""
        while not self.lost.is_set():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.lose(f"no keepalive acknowledged within its {self.ttl}s TTL")
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.lost.wait()
        return self.reason


async def grant(endpoints: EtcdEndpoints, ttl: int, within: float) -> Lease:
    """A new lease of ``ttl`` seconds (etcd may raise it to its minimum).

    Raises:
        grpc.aio.AioRpcError: no endpoint granted one within ``within`` seconds.
        ConsensusError: etcd refused.
    """
    request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
    sent = time.monotonic()
    response = await endpoints.call(
        lambda ep, t: ep.lease.LeaseGrant(request, timeout=t, metadata=REQUIRE_LEADER),
        within=within,
        attempt_timeout=ATTEMPT_TIMEOUT,
        idempotent=True,
    )
    if response.error:
        raise ConsensusError(f"etcd refused a lease: {response.error}")
    return Lease(response.ID, response.TTL, sent)


async def keep_alive(endpoints: EtcdEndpoints, lease: Lease) -> None:
    """Renew ``lease`` every third of its TTL until it is lost; fail over when
    etcd does not answer in time."""
    interval = lease.ttl / 3
    while not lease.lost.is_set():
        generation, endpoint = endpoints.current
        call = endpoint.lease.LeaseKeepAlive(None, metadata=REQUIRE_LEADER)
        try:
            while not lease.lost.is_set():
                sent = time.monotonic()
                async with asyncio.timeout(interval):
                    await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease.id))
                    response = await call.read()
                if not isinstance(response, rpc_pb2.LeaseKeepAliveResponse):
                    raise ConnectionError("the keepalive stream ended")
                endpoints.saw(response.header)
                if response.TTL <= 0:
                    lease.lose("etcd reports it expired")
                    return
                lease.deadline = max(lease.deadline, sent + response.TTL)
                await asyncio.sleep(max(interval - (time.monotonic() - sent), 0))
        except (
            grpc.aio.AioRpcError,
            TimeoutError,
            ConnectionError,
            asyncio.InvalidStateError,
        ) as exc:
            log.debug("etcd: keepalive via %s failed: %s", endpoint.address, describe(exc))
            endpoints.failed(generation, exc)
        finally:
            call.cancel()
        await asyncio.sleep(_RETRY_PAUSE)


async def revoke(endpoints: EtcdEndpoints, lease: Lease, within: float) -> None:
    """Revoke ``lease`` (its keys go with it); best effort, bounded by ``within``."""
    request = rpc_pb2.LeaseRevokeRequest(ID=lease.id)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await endpoints.call(
            lambda ep, t: ep.lease.LeaseRevoke(request, timeout=t),
            within=within,
            attempt_timeout=ATTEMPT_TIMEOUT,
            idempotent=True,
        )
