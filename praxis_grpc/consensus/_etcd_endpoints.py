"""Channels to the endpoints of one etcd cluster, with fail-over between them.

Every call and stream of a member goes to the *current* endpoint. Whoever sees
it fail (a call or stream ends UNAVAILABLE, a keepalive goes unanswered) calls
:meth:`EtcdEndpoints.failed`; that moves every user to the next endpoint: the
streams wait in :meth:`EtcdEndpoints.wait_moved` and restart there, and calls
still waiting on the failed endpoint are cancelled (reads are retried on the
next one; writes report :class:`Abandoned`).

Writes are also abandoned when etcd elects a new Raft leader while they wait
(a response shows a higher ``raft_term``): a proposal that a follower had
forwarded to a leader that died is lost, and etcd would let the call wait for
its full deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio

from praxis_grpc._gen.etcd.etcdserver.api.v3election.v3electionpb import v3election_pb2_grpc
from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from praxis_grpc.consensus._etcd_auth import EtcdCredentials, EtcdToken, token_interceptors

T = TypeVar("T")

# etcd fails calls and streams that carry this while it has no Raft leader,
# instead of letting them wait (or watch) silently.
REQUIRE_LEADER = (("hasleader", "true"),)
_RETRY_PAUSE = 0.05
# Ping a connection that carries calls every second; close it when a ping is
# unanswered for a second. A connection cut off while either side was sending
# is otherwise stuck after the cut heals until TCP's next retransmission
# (backed off to seconds: 0.2, 0.6, 1.4, 3.0, 6.2 s after the first loss):
# the member learnt the new leader from its Observe stream only 2-7 s after
# an 8 s cut. Closed, the channel redials within a second of the heal. gRPC
# also sets TCP_USER_TIMEOUT to the ping timeout. etcd refuses pings more
# often than ``--grpc-keepalive-min-time`` (5 s) only on a connection it sent
# nothing on since the last one; a member's LeaseKeepAlive stream gets an
# answer every third of the TTL on the connection it uses, and a channel
# without calls is not pinged.
KEEPALIVE_MS = 1000
_CHANNEL_OPTIONS = [
    # Reconnect to a restarted member within a second, not after gRPC's
    # default backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_MS),
    ("grpc.keepalive_permit_without_calls", 0),
    # Keep pinging while the client has nothing to send (an Observe stream).
    ("grpc.http2.max_pings_without_data", 0),
]


class Abandoned(Exception):
    """A write was cancelled because its endpoint failed or etcd changed leader
    while it waited; it may or may not be applied."""


@dataclass
class Endpoint:
    """One etcd endpoint: its channel (with ``credentials``; ``token`` on
    every call) and the stubs on it."""

    address: str
    credentials: EtcdCredentials = field(default_factory=EtcdCredentials)
    token: EtcdToken | None = None
    channel: grpc.aio.Channel = field(init=False)
    kv: rpc_pb2_grpc.KVAsyncStub = field(init=False)
    lease: rpc_pb2_grpc.LeaseAsyncStub = field(init=False)
    election: v3election_pb2_grpc.ElectionAsyncStub = field(init=False)

    def __post_init__(self) -> None:
        interceptors, slot = token_interceptors(self.token) if self.token else ([], None)
        tls = self.credentials.tls
        if tls is None:
            self.channel = grpc.aio.insecure_channel(
                self.address, options=_CHANNEL_OPTIONS, interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.secure_channel(
                self.address, tls, options=_CHANNEL_OPTIONS, interceptors=interceptors
            )
        if slot is not None:
            slot.channel = self.channel
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.election = v3election_pb2_grpc.ElectionStub(self.channel)


def unreachable(exc: grpc.aio.AioRpcError) -> bool:
    """The endpoint could not serve the call: fail over and retry an idempotent call."""
    return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """The call certainly did not reach etcd's Raft log (safe to retry a write):
    no connection, or etcd refused it up front for want of a leader.

    The only place that reads a status message: etcd sends no error details,
    and its own client recognises ``ErrGRPCNoLeader`` by this message
    (``rpctypes.ErrorDesc``); gRPC reports a failed connect only in text.
    """
    details = (exc.details() or "").lower()
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or details == "etcdserver: no leader"
    )


def describe(exc: BaseException) -> str:
    """A short reason for logs and errors."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


class EtcdEndpoints:
    """The endpoints of one cluster; call and stream on :attr:`current`.

    Must be created and used on one running event loop.
    """

    def __init__(
        self, addresses: Sequence[str], credentials: EtcdCredentials | None = None
    ) -> None:
        presented = credentials or EtcdCredentials()
        token = EtcdToken(presented.username, presented.password) if presented.username else None
        self._endpoints = [Endpoint(address, presented, token) for address in addresses]
        self._index = 0
        self._generation = 0
        self._moved = asyncio.Event()
        self._raft_term = 0
        self._new_raft_term = asyncio.Event()
        self.last_errors: dict[str, str] = {}

    @property
    def current(self) -> tuple[int, Endpoint]:
        """The generation (bumped by every fail-over) and the endpoint to use."""
        return self._generation, self._endpoints[self._index]

    def failed(self, generation: int, reason: BaseException) -> None:
        """Report that the current endpoint of ``generation`` failed; move on.

        Reports about an older generation are ignored: someone moved already.
        """
        if generation != self._generation:
            return
        self.last_errors[self._endpoints[self._index].address] = describe(reason)
        self._generation += 1
        self._index = (self._index + 1) % len(self._endpoints)
        self._moved.set()
        self._moved = asyncio.Event()

    async def wait_moved(self, generation: int) -> None:
        """Return once the endpoints moved on from ``generation``."""
        while self._generation == generation:
            await self._moved.wait()

    def saw(self, header: rpc_pb2.ResponseHeader) -> None:
        """Note the etcd Raft term a response reports."""
        if header.raft_term > self._raft_term:
            self._raft_term = header.raft_term
            self._new_raft_term.set()
            self._new_raft_term = asyncio.Event()

    async def wait_new_raft_term(self, term: int) -> None:
        """Return once a response reported a Raft term above ``term``."""
        while self._raft_term <= term:
            await self._new_raft_term.wait()

    async def call(
        self,
        rpc: Callable[[Endpoint, float], grpc.aio.UnaryUnaryCall[Any, T]],
        *,
        within: float,
        attempt_timeout: float,
        idempotent: bool,
    ) -> T:
        """``rpc(endpoint, attempt_timeout)`` on the current endpoint, failing
        over for up to ``within`` seconds in all. An idempotent call is retried
        after any failure of its endpoint; any other only when it certainly did
        not reach etcd (:func:`never_sent`); it is abandoned when the endpoint
        fails or etcd elects a new leader meanwhile.

        Raises:
            grpc.aio.AioRpcError: the last error, once it is not retryable or
                ``within`` seconds passed.
            Abandoned: a call that is not idempotent was cancelled (see above).
        """
        deadline = time.monotonic() + within
        while True:
            generation, endpoint = self.current
            remaining = deadline - time.monotonic()
            call = rpc(endpoint, max(min(remaining, attempt_timeout), 0.001))
            stops = [self.wait_moved(generation)]
            if not idempotent:
                stops.append(self.wait_new_raft_term(self._raft_term))
            try:
                result = await first(call, *stops)
            except grpc.aio.AioRpcError as exc:
                self.last_errors[endpoint.address] = describe(exc)
                retry = unreachable(exc) if idempotent else never_sent(exc)
                if not retry or deadline - time.monotonic() < _RETRY_PAUSE:
                    raise
                self.failed(generation, exc)
            else:
                if result is not None:
                    header = getattr(result, "header", None)
                    if isinstance(header, rpc_pb2.ResponseHeader):
                        self.saw(header)
                    return result
                if not idempotent:
                    what = "failed" if generation != self._generation else "changed leader"
                    raise Abandoned(f"etcd at {endpoint.address} {what} while the write waited")
            finally:
                call.cancel()
            await asyncio.sleep(_RETRY_PAUSE)

    async def aclose(self) -> None:
        """Close every channel (cancelling the calls on them)."""
        for endpoint in self._endpoints:
            await endpoint.channel.close(None)


async def first(work: Awaitable[T], *stops: Coroutine[Any, Any, Any]) -> T | None:
    """Await ``work``; cancel it and return None as soon as any of ``stops`` returns."""
    tasks = [asyncio.ensure_future(work), *(asyncio.create_task(stop) for stop in stops)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return tasks[0].result() if tasks[0].done() else None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
