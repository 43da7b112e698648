"""The ``etcd`` consensus backend: an external etcd v3 cluster (3.4 or newer).

Keys, under ``ha.consensus.etcd.prefix`` (default ``/praxis/``):

    - ``<prefix>election/<lease id>``: one key per campaigning member, written
      by etcd's election service (``Campaign``) and attached to the member's
      lease; its value is JSON ``{"agent_id", "grpc_address"}``. The key with
      the lowest create revision leads, and that revision is the term: every
      later leader's key was created later, so terms only increase.
    - ``<prefix>state/<key>``: the committed state.

Each member keeps its own lease (``lease_ttl``) alive with a LeaseKeepAlive
stream (see :mod:`praxis_grpc.consensus._etcd_lease`). When etcd reports the
lease gone, or no renewal was acknowledged within the TTL (counted from the
sending of the last acknowledged one, so never later than etcd's own expiry),
the member stops leading at once: it logs why, :meth:`EtcdConsensus.watch`
yields the change, and it revokes the lease and campaigns again with a new
one. So does a leader that sees a newer leader or finds its key gone.

``commit`` is one Txn: *if* the create revision of this member's leader key
equals ``term`` *then* put (or delete) the state key. A missing key has create
revision 0, so the compare also requires that the key still exists. etcd
applies it atomically in log order, which fences a deposed leader.

Followers learn the leader from an ``Observe`` stream. Every call and stream
goes to one endpoint and moves to the next when it fails (see
:mod:`praxis_grpc.consensus._etcd_endpoints`); a keepalive left unanswered for
a third of the TTL counts as a failure, which catches a hung member.
``commit`` fails fast (:class:`ConsensusError`) when its endpoint fails or etcd
elects a new leader while it waits, rather than after ``commit_timeout``.

A leader that dies holds the election until its lease expires (``lease_ttl``,
at least a second). :meth:`EtcdConsensus.suspect` ends that wait: given
evidence that the leader's process is gone, a follower revokes the lease the
leader's key is attached to, and the next campaigner wins at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

import grpc.aio

from praxis_grpc._gen.etcd.etcdserver.api.v3election.v3electionpb import v3election_pb2
from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2
from praxis_grpc._gen.etcd.mvcc.mvccpb import kv_pb2
from praxis_grpc.config import EtcdConfig
from praxis_grpc.consensus._etcd_auth import credentials_of
from praxis_grpc.consensus._etcd_endpoints import (
    REQUIRE_LEADER,
    Abandoned,
    Endpoint,
    EtcdEndpoints,
    describe,
    first,
    unreachable,
)
from praxis_grpc.consensus._etcd_lease import ATTEMPT_TIMEOUT, Lease, grant, keep_alive, revoke
from praxis_grpc.consensus.base import ConsensusError, Leadership, LeadershipFeed, NotLeader

__all__ = ["EtcdConsensus"]

log = logging.getLogger(__name__)

# What etcd answers a call it refuses for its user: none given ("user name is
# empty"), a wrong password ("authentication failed"), no role on the keys.
_REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)
_HOST_PORT = re.compile(r"[^\s:/]+:\d{1,5}|\[[0-9a-fA-F:.]+\]:\d{1,5}")
_RETRY_PAUSE = 0.05
_MAX_RETRY_PAUSE = 1.0
_PAGE = 1000


class EtcdConsensus:
    """:class:`~praxis_grpc.consensus.base.Consensus` over an etcd cluster.

    Methods must be called on one asyncio loop and never block it. A member
    can be started once.

    Args:
        config: ``ha.consensus.etcd``.
        agent_id: This node's agent id, published while it campaigns.
        grpc_address: This node's gRPC endpoint ("host:port"), published with it.

    Raises:
        ConsensusError: an endpoint is not ``host:port``; the message names the key.
    """

    def __init__(self, config: EtcdConfig, *, agent_id: str, grpc_address: str) -> None:
        if not config.endpoints:
            raise ConsensusError("ha.consensus.etcd.endpoints must not be empty")
        for endpoint in config.endpoints:
            if not _HOST_PORT.fullmatch(endpoint):
                raise ConsensusError(
                    f"ha.consensus.etcd.endpoints: {endpoint!r} is not host:port "
                    "(no scheme: the backend speaks plain gRPC)"
                )
        if not agent_id:
            raise ValueError("agent_id must not be empty")
        self._config = config
        self._agent_id = agent_id
        self._grpc_address = grpc_address
        prefix = config.prefix.encode()
        self._election = prefix + b"election"
        self._state_prefix = prefix + b"state/"
        self._proclamation = json.dumps(
            {"agent_id": agent_id, "grpc_address": grpc_address}, sort_keys=True
        ).encode()
        self._endpoints: EtcdEndpoints | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lease: Lease | None = None
        self._own_leases: set[int] = set()
        self._leader_key: v3election_pb2.LeaderKey | None = None
        # (term, lease id) of the leader key last observed from another member.
        self._observed_lease: tuple[int, int] | None = None
        self._leadership = Leadership()
        self._feed = LeadershipFeed()
        self._started = False
        self._closed = False

    @property
    def backend(self) -> str:
        return "etcd"

    async def start(self) -> None:
        """See :meth:`Consensus.start`.

        Returns once a lease is granted, so etcd answers and has a quorum.

        Raises:
            ConsensusError: no endpoint granted a lease within ``commit_timeout``.
        """
        if self._started or self._closed:
            raise ConsensusError("an etcd member can be started once")
        self._started = True
        self._endpoints = endpoints = EtcdEndpoints(
            self._config.endpoints, credentials_of(self._config)
        )
        timeout = self._config.commit_timeout
        try:
            await self._check_access(timeout)
            self._lease = await self._grant(timeout)
        except (grpc.aio.AioRpcError, ConsensusError) as exc:
            await endpoints.aclose()
            self._closed = True
            self._feed.close()
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _REFUSED:
                raise ConsensusError(
                    f"ha.consensus.etcd.username: etcd refused this member ({describe(exc)}); "
                    "with auth enabled in etcd, set username and password_file"
                ) from None
            errors = "; ".join(f"{a}: {e}" for a, e in endpoints.last_errors.items())
            raise ConsensusError(
                f"ha.consensus.etcd.endpoints: no etcd endpoint answered within "
                f"{timeout:g}s ({errors or describe(exc)})"
            ) from None
        self._spawn(self._campaign_loop())
        self._spawn(self._observe_loop())

    async def aclose(self) -> None:
        """See :meth:`Consensus.aclose`: resign if leading, then revoke the lease,
        each bounded by ``commit_timeout``."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        key, lease, endpoints = self._leader_key, self._lease, self._endpoints
        self._leader_key = None
        if endpoints is not None:
            if key is not None:
                request = v3election_pb2.ResignRequest(leader=key)
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await endpoints.call(
                        lambda ep, t: ep.election.Resign(request, timeout=t),
                        within=self._config.commit_timeout,
                        attempt_timeout=ATTEMPT_TIMEOUT,
                        idempotent=True,
                    )
            if lease is not None:
                await revoke(endpoints, lease, self._config.commit_timeout)
            await endpoints.aclose()
        self._feed.close()

    def leadership(self) -> Leadership:
        return Leadership() if self._closed else self._leadership

    def watch(self) -> AsyncIterator[Leadership]:
        return self._feed.stream(self.leadership, lambda: self._closed)

    async def commit(self, key: str, value: bytes | None, *, term: int) -> None:
        """See :meth:`Consensus.commit`.

        A write is retried on another endpoint only when it certainly did not
        reach etcd; any other failure raises :class:`ConsensusError`.
        """
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
        held, current, endpoints = self._leader_key, self.leadership(), self._endpoints
        if held is None or endpoints is None or not current.is_self or held.rev != term:
            raise NotLeader(f"this member does not lead in term {term}", current)
        state_key = self._state_prefix + key.encode()
        if value is None:
            op = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=state_key))
        else:
            op = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=state_key, value=value))
        fence = rpc_pb2.Compare(
            key=held.key,
            target=rpc_pb2.Compare.CREATE,
            result=rpc_pb2.Compare.EQUAL,
            create_revision=term,
        )
        request = rpc_pb2.TxnRequest(compare=[fence], success=[op])
        try:
            response = await endpoints.call(
                lambda ep, t: ep.kv.Txn(request, timeout=t, metadata=REQUIRE_LEADER),
                within=self._config.commit_timeout,
                attempt_timeout=self._config.commit_timeout,
                idempotent=False,
            )
        except (grpc.aio.AioRpcError, Abandoned) as exc:
            raise ConsensusError(
                f"commit of {key!r} failed ({describe(exc)}); it may or may not be applied"
            ) from None
        if not response.succeeded:
            self._depose(held, "its leader key is gone from etcd")
            raise NotLeader(f"this member does not lead in term {term}", self.leadership())

    async def snapshot(self) -> Mapping[str, bytes]:
        """See :meth:`Consensus.snapshot`: a linearizable read of ``<prefix>state/``."""
        endpoints = self._endpoints
        if endpoints is None or self._closed:
            raise ConsensusError("the etcd member is not running")
        prefix, state = self._state_prefix, {}
        request = rpc_pb2.RangeRequest(key=prefix, range_end=_prefix_end(prefix), limit=_PAGE)
        while True:
            try:
                response = await endpoints.call(
                    functools.partial(_range, request),
                    within=self._config.commit_timeout,
                    attempt_timeout=ATTEMPT_TIMEOUT,
                    idempotent=True,
                )
            except grpc.aio.AioRpcError as exc:
                raise ConsensusError(f"snapshot failed ({describe(exc)})") from None
            for kv in response.kvs:
                state[kv.key[len(prefix) :].decode()] = kv.value
            if not response.more or not response.kvs:
                return state
            # The next page at the same revision, so the pages form one snapshot.
            request = rpc_pb2.RangeRequest(
                key=response.kvs[-1].key + b"\0",
                range_end=request.range_end,
                limit=_PAGE,
                revision=response.header.revision,
            )

    async def suspect(self, leadership: Leadership, evidence: str) -> bool:
        """See :meth:`Suspecting.suspect`: revoke the lease of the observed
        leader's key, so etcd deletes the key and the next campaign wins now
        instead of after the dead leader's ``lease_ttl``."""
        current, observed, endpoints = self.leadership(), self._observed_lease, self._endpoints
        if (
            endpoints is None
            or current.is_self
            or not current.known
            or (current.leader_id, current.term) != (leadership.leader_id, leadership.term)
            or observed is None
            or observed[0] != leadership.term
        ):
            return False
        lease_id = observed[1]
        log.warning(
            "etcd: leader %s of term %d is gone (%s); revoking its lease %x",
            leadership.leader_id,
            leadership.term,
            evidence,
            lease_id,
        )
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        try:
            await endpoints.call(
                lambda ep, t: ep.lease.LeaseRevoke(request, timeout=t),
                within=self._config.commit_timeout,
                attempt_timeout=ATTEMPT_TIMEOUT,
                idempotent=True,
            )
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND: it expired or was revoked meanwhile; either way it is gone.
            if exc.code() is not grpc.StatusCode.NOT_FOUND:
                log.info("etcd: could not revoke lease %x: %s", lease_id, describe(exc))
            return False
        return True

    def _stop_keepalive(self) -> None:
        """For tests: stop renewing the current lease, as a hung process would."""
        if self._lease is not None and self._lease.keeper is not None:
            self._lease.keeper.cancel()

    async def _campaign_loop(self) -> None:
        """Campaign with the lease, lead until it is lost, start over with a new one."""
        assert self._endpoints is not None
        lease = self._lease
        pause = _RETRY_PAUSE
        while True:
            if lease is None:
                try:
                    lease = self._lease = await self._grant(self._config.commit_timeout)
                    pause = _RETRY_PAUSE
                except (grpc.aio.AioRpcError, ConsensusError) as exc:
                    log.warning("etcd: cannot get a new lease: %s", describe(exc))
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, _MAX_RETRY_PAUSE)
                    continue
            key = await self._campaign(lease)
            if key is not None:
                self._lead(key)
            reason = await lease.wait_lost()
            if key is not None:
                self._depose(key, reason)
            else:
                log.info("etcd: lease %x lost while campaigning: %s", lease.id, reason)
            if lease.keeper is not None:
                lease.keeper.cancel()
            self._spawn(revoke(self._endpoints, lease, self._config.commit_timeout))
            lease = None

    async def _campaign(self, lease: Lease) -> v3election_pb2.LeaderKey | None:
        """Wait to win the election; None if the lease is lost first."""
        assert self._endpoints is not None
        request = v3election_pb2.CampaignRequest(
            name=self._election, lease=lease.id, value=self._proclamation
        )
        pause = _RETRY_PAUSE
        while not lease.lost.is_set():
            generation, endpoint = self._endpoints.current
            call = endpoint.election.Campaign(request, metadata=REQUIRE_LEADER)
            try:
                won = await first(call, lease.wait_lost(), self._endpoints.wait_moved(generation))
                # Confirm with the group: a cancelled campaign's cleanup may
                # have deleted the key this campaign reused.
                if won is not None and await self._is_leader(won.leader):
                    return won.leader
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    lease.lose(f"etcd no longer knows it ({describe(exc)})")
                    break
                if unreachable(exc):
                    self._endpoints.failed(generation, exc)
                log.debug("etcd: campaign via %s failed: %s", endpoint.address, describe(exc))
                pause = min(2 * pause, _MAX_RETRY_PAUSE)
            finally:
                call.cancel()
            await asyncio.sleep(pause)
        return None

    async def _is_leader(self, key: v3election_pb2.LeaderKey) -> bool:
        assert self._endpoints is not None
        request = v3election_pb2.LeaderRequest(name=self._election)
        response = await self._endpoints.call(
            lambda ep, t: ep.election.Leader(request, timeout=t),
            within=self._config.commit_timeout,
            attempt_timeout=ATTEMPT_TIMEOUT,
            idempotent=True,
        )
        return response.kv.key == key.key and response.kv.create_revision == key.rev

    async def _check_access(self, within: float) -> None:
        """Read the election's keys: with auth enabled in etcd, a member without
        a user (or without the right to them) fails here, at start, rather
        than in every campaign. Leases need no permission, so granting one
        proves nothing."""
        assert self._endpoints is not None
        election = self._election
        request = rpc_pb2.RangeRequest(
            key=election, range_end=_prefix_end(election), count_only=True
        )
        await self._endpoints.call(
            functools.partial(_range, request),
            within=within,
            attempt_timeout=ATTEMPT_TIMEOUT,
            idempotent=True,
        )

    async def _grant(self, within: float) -> Lease:
        assert self._endpoints is not None
        lease = await grant(self._endpoints, self._config.lease_ttl, within)
        self._own_leases.add(lease.id)
        lease.keeper = self._spawn(keep_alive(self._endpoints, lease))
        return lease

    def _lead(self, key: v3election_pb2.LeaderKey) -> None:
        if key.rev <= self._leadership.term:
            # A newer leader was observed meanwhile: this win is already stale.
            if self._lease is not None:
                self._lease.lose(f"won term {key.rev} after term {self._leadership.term}")
            return
        self._leader_key = key
        log.info("etcd: %s leads in term %d", self._agent_id, key.rev)
        self._publish(Leadership(self._agent_id, self._grpc_address, key.rev, is_self=True))

    def _depose(self, key: v3election_pb2.LeaderKey, reason: str) -> None:
        """Stop leading in ``key``'s term at once; the campaign loop starts over."""
        if self._leader_key is not key:
            return
        self._leader_key = None
        log.warning("etcd: %s lost leadership of term %d: %s", self._agent_id, key.rev, reason)
        if self._leadership.is_self:
            self._publish(Leadership(term=self._leadership.term))
        if self._lease is not None:
            self._lease.lose(reason)

    async def _observe_loop(self) -> None:
        """Follow the election's leader with an Observe stream on the current endpoint."""
        assert self._endpoints is not None
        request = v3election_pb2.LeaderRequest(name=self._election)
        pause = _RETRY_PAUSE
        while True:
            generation, endpoint = self._endpoints.current
            call = endpoint.election.Observe(request, metadata=REQUIRE_LEADER)
            try:
                if await first(self._follow(call), self._endpoints.wait_moved(generation)):
                    pause = _RETRY_PAUSE
            except grpc.aio.AioRpcError as exc:
                if unreachable(exc):
                    self._endpoints.failed(generation, exc)
                log.debug("etcd: observe via %s failed: %s", endpoint.address, describe(exc))
            finally:
                call.cancel()
            # Back off while streams end at once (no quorum, nothing to observe).
            await asyncio.sleep(pause)
            pause = min(2 * pause, _MAX_RETRY_PAUSE)

    async def _follow(
        self,
        call: grpc.aio.UnaryStreamCall[v3election_pb2.LeaderRequest, v3election_pb2.LeaderResponse],
    ) -> bool:
        """Apply what the stream reports until it ends; True if it reported anything."""
        assert self._endpoints is not None
        reported = False
        async for response in call:
            reported = True
            self._endpoints.saw(response.header)
            self._observed(response.kv)
        return reported

    def _observed(self, kv: kv_pb2.KeyValue) -> None:
        term = kv.create_revision
        # Older news, or this member's own key: _lead publishes that once the
        # campaign is confirmed.
        if term <= self._leadership.term or kv.lease in self._own_leases:
            return
        try:
            value = json.loads(kv.value)
            leader = Leadership(str(value["agent_id"]), str(value["grpc_address"]), term)
        except (ValueError, TypeError, KeyError):
            log.warning("etcd: ignoring leader key %r: value is not praxis JSON", kv.key)
            return
        self._observed_lease = (term, kv.lease)
        log.info("etcd: %s leads in term %d", leader.leader_id, term)
        self._publish(leader)
        if self._leader_key is not None:
            self._depose(self._leader_key, f"{leader.leader_id} leads in term {term}")

    def _publish(self, leadership: Leadership) -> None:
        self._leadership = leadership
        self._feed.publish(leadership)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _range(
    request: rpc_pb2.RangeRequest, endpoint: Endpoint, timeout: float
) -> grpc.aio.UnaryUnaryCall[rpc_pb2.RangeRequest, rpc_pb2.RangeResponse]:
    return endpoint.kv.Range(request, timeout=timeout)


def _prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix`` (which ends in "/")."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
