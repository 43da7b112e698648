"""The ``raft`` consensus backend: an embedded Raft group run by pysyncobj.

pysyncobj elects a leader among fixed raft addresses and replicates calls to
:class:`_ReplicatedState`, the state machine every member applies in log order:

    - ``claim_leadership(term, member, agent_id, grpc_address)``: committed
      by a member as soon as it becomes raft leader in ``term``. It is how the
      group learns the leader's agent id and gRPC address; :class:`Leadership`
      reports the latest committed claim. A claim only takes effect with a
      greater term.
    - ``put(term, member, key, value)``: applied only if the latest committed
      claim is ``member``'s in ``term``; otherwise it is rejected on every
      replica alike and :meth:`RaftConsensus.commit` raises
      :class:`NotLeader`. A deposed leader that has not noticed yet (one
      SIGSTOPped and resumed, or cut off) cannot write: its entries are either
      dropped by the new leader's log or land after the new claim.

The raft term is the fencing token. ``is_self`` holds while the latest
committed claim is this member's and pysyncobj still leads in that term.

:meth:`RaftConsensus.suspect` (the leader's process is certainly gone) makes
one follower campaign at once, as Raft's TimeoutNow does for a handover,
instead of after its election timeout.

Durability: every entry goes to pysyncobj's journal under ``<data_dir>/raft``
before it counts towards a quorum, log compactions write a full dump there, and
the current term and vote are stored before they are announced. The journal is
a memory-mapped file that pysyncobj does not fsync: the state survives any
crash of the processes, not the loss of the machines' page caches.

Raft rules pysyncobj 0.3.17 lacks are applied in front of it, at its
transport: an AppendEntries deletes only conflicting entries (§5.3; pysyncobj
deleted every entry after ``prevLogIdx``, so a resend could drop committed
ones), a refused one names where the leader should resume (the commit index
+ 1, the same for every message refused, so a leader with messages in flight
cannot keep a deposed leader from ever catching up), and a snapshot chunk
commits nothing of the member's own log, see :mod:`._raft_receiver`; and
pre-vote (thesis §9.6), so a member back from a partition does not depose the
leader, see :mod:`._raft_prevote`.

pysyncobj speaks pickle, so the shared secret is mandatory; it encrypts and
authenticates every connection. The member binds exactly its configured
address.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from pysyncobj import (  # type: ignore[import-untyped,unused-ignore]
    FAIL_REASON,
    HAS_CRYPTO,
    SyncObj,
    SyncObjConf,
    SyncObjConsumer,
    replicated,
)

from praxis_grpc.config import RaftConfig
from praxis_grpc.consensus._raft_member import (
    SyncObjHandle,
    campaign_now,
    check_bindable,
    close_dump_files,
    close_pipe,
    lock_dir,
    tick_thread,
)
from praxis_grpc.consensus._raft_receiver import ReceiverRuleTransport, check_pysyncobj_version
from praxis_grpc.consensus._raft_watch import RaftWatch
from praxis_grpc.consensus.base import ConsensusError, Leadership, LeadershipFeed, NotLeader

__all__ = ["RaftConsensus"]

log = logging.getLogger(__name__)

_Claim = tuple[int, str, str, str]  # term, raft address, agent id, gRPC address
_replicated: Callable[[Callable[..., Any]], Any] = replicated
_NOTHING_WRITTEN = frozenset(
    {FAIL_REASON.DISCARDED, FAIL_REASON.NOT_LEADER, FAIL_REASON.MISSING_LEADER}
)
_REASONS = {value: name for name, value in vars(FAIL_REASON).items() if name.isupper()}
_STOP_POLL = 0.005


class _ReplicatedState(SyncObjConsumer):  # type: ignore[misc]  # pysyncobj is untyped
    """The state machine. Applied on pysyncobj's thread, identically on every member.

    Only ``claim`` and ``data`` are replicated and dumped (pysyncobj serializes
    the attributes set after the base initializer).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards data against readers on the loop
        super().__init__()
        self.claim: _Claim | None = None
        self.data: dict[str, bytes] = {}

    @_replicated
    def claim_leadership(self, term: int, member: str, agent_id: str, grpc_address: str) -> bool:
        if self.claim is not None and term <= self.claim[0]:
            return self.claim[:2] == (term, member)
        self.claim = (term, member, agent_id, grpc_address)
        return True

    @_replicated
    def put(self, term: int, member: str, key: str, value: bytes | None) -> bool:
        if self.claim is None or self.claim[:2] != (term, member):
            return False
        with self._lock:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        return True

    def copy(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self.data)


class RaftConsensus:
    """:class:`~praxis_grpc.consensus.base.Consensus` over an embedded pysyncobj group.

    Methods must be called on one asyncio loop; none blocks it except
    :meth:`start`, which derives the connection key and opens the journal (tens
    of milliseconds). A member can be started once.

    Args:
        config: ``ha.consensus.raft``.
        agent_id: This node's agent id, published when it leads.
        grpc_address: This node's gRPC endpoint ("host:port"), published when it leads.
        data_dir: The node's data directory; the journal lives in ``data_dir/raft``.

    Raises:
        ConsensusError: the config cannot work (no secret, no address, timing
            pysyncobj refuses); the message names the key.
    """

    def __init__(
        self, config: RaftConfig, *, agent_id: str, grpc_address: str, data_dir: Path
    ) -> None:
        if not config.address:
            raise ConsensusError("ha.consensus.raft.address is required")
        if (unusable := check_pysyncobj_version()) is not None:
            raise ConsensusError(unusable)
        if not HAS_CRYPTO:
            raise ConsensusError("the raft backend needs the 'cryptography' package")
        if config.heartbeat * 3 >= config.election_timeout:
            raise ConsensusError(
                "ha.consensus.raft.heartbeat must be less than a third of election_timeout"
            )
        self._secret = _read_secret(config)
        self._config = config
        self._address = config.address
        self._peers = sorted({peer for peer in config.peers if peer != config.address})
        self._agent_id = agent_id
        self._grpc_address = grpc_address
        self._dir = data_dir / "raft"
        self._state = _ReplicatedState()
        self._node: SyncObjHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._leadership = Leadership()
        self._feed = LeadershipFeed()
        self._pending: set[asyncio.Future[tuple[Any, int]]] = set()
        # Owned by pysyncobj's thread (written only in _on_tick and its callbacks).
        self._claim_term = 0
        self._raft_leader = False
        self._resigning = False
        self._seen: tuple[_Claim | None, bool, int] | None = None
        self._watch = RaftWatch(self._address)
        # A term whose leader is gone (suspect()); written on the loop,
        # consumed by _on_tick on pysyncobj's thread.
        self._expedite = 0

    @property
    def backend(self) -> str:
        return "raft"

    async def start(self) -> None:
        if self._node is not None or self._closed:
            raise ConsensusError("a raft member can be started once")
        self._loop = asyncio.get_running_loop()
        self._lock_fd = lock_dir(self._dir)
        election = self._config.election_timeout
        conf = SyncObjConf(
            password=self._secret,
            raftMinTimeout=election,
            raftMaxTimeout=2 * election,
            appendEntriesPeriod=self._config.heartbeat,
            # Batching makes a blocking replicated call wait a whole heartbeat.
            appendEntriesUseBatch=False,
            autoTickPeriod=min(0.05, self._config.heartbeat),
            # A leader cut off from the quorum steps down instead of holding on 30 s.
            leaderFallbackTimeout=2 * election,
            connectionTimeout=max(3.5, 2 * election),
            connectionRetryTime=election,
            dynamicMembershipChange=False,
            bindAddress=self._address,
            maxBindRetries=1,
            journalFile=str(self._dir / "journal"),
            fullDumpFile=str(self._dir / "dump"),
            # Forking a process that runs gRPC and asyncio threads is unsafe.
            useFork=False,
        )
        try:
            check_bindable(self._address)
            with warnings.catch_warnings():
                # pysyncobj 0.3.17 reads the journal's meta file without closing it.
                warnings.filterwarnings("ignore", category=ResourceWarning, module="pysyncobj")
                node: SyncObjHandle = SyncObj(
                    self._address,
                    self._peers,
                    conf,
                    consumers=[self._state],
                    # Deletes only conflicting entries (Raft §5.3), see the module.
                    transportClass=ReceiverRuleTransport,
                )
        except BaseException:
            self._release_dir()
            raise
        try:
            node.waitBinded()
        except Exception as exc:
            # The tick thread gave up and exited; release what it had opened.
            node._doDestroy()
            close_pipe(node)
            self._release_dir()
            raise ConsensusError(
                f"ha.consensus.raft.address {self._address}: cannot listen there"
            ) from exc
        self._node = node
        node.addOnTickCallback(self._on_tick)

    async def aclose(self) -> None:
        """Hand leadership over if held (waiting at most one election timeout),
        then stop pysyncobj's thread and close its sockets and files."""
        if self._closed:
            return
        self._closed = True
        self._feed.close()
        node = self._node
        if node is not None:
            await self._resign()
            self._node = None
            thread = tick_thread(node)
            node.destroy()
            for _ in range(int(5.0 / _STOP_POLL)):
                if thread is None or not thread.is_alive():
                    break
                await asyncio.sleep(_STOP_POLL)
            else:
                log.warning("pysyncobj thread of %s did not stop within 5 s", self._address)
            if thread is not None:
                thread.join(timeout=0.1)
            if thread is None or not thread.is_alive():
                close_pipe(node)
                close_dump_files(node)
        for future in self._pending:
            if not future.done():
                future.set_exception(
                    ConsensusError("member closed; the write may or may not be applied")
                )
        self._release_dir()

    def leadership(self) -> Leadership:
        return Leadership() if self._closed else self._leadership

    def watch(self) -> AsyncIterator[Leadership]:
        return self._feed.stream(self.leadership, lambda: self._closed)

    async def commit(self, key: str, value: bytes | None, *, term: int) -> None:
        """See :meth:`Consensus.commit`.

        Returns once this member has applied the write, which it does only after
        the entry is in the journals of a quorum.
        """
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
        current = self.leadership()
        if self._node is None or not current.is_self or current.term != term:
            raise NotLeader(f"this member does not lead in term {term}", current)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def on_applied(result: Any, error: int) -> None:  # pysyncobj's thread
            self._call_in_loop(_settle, future, (result, error))

        self._pending.add(future)
        try:
            self._state.put(term, self._address, key, value, callback=on_applied)
            async with asyncio.timeout(self._config.commit_timeout):
                result, error = await future
        except TimeoutError:
            raise ConsensusError(
                f"commit of {key!r} not acknowledged within "
                f"{self._config.commit_timeout:g}s; it may be applied later"
            ) from None
        finally:
            self._pending.discard(future)
        if error == FAIL_REASON.SUCCESS and result is True:
            return
        if error == FAIL_REASON.SUCCESS or error in _NOTHING_WRITTEN:
            raise NotLeader(f"this member does not lead in term {term}", self.leadership())
        reason = _REASONS.get(error, str(error))
        raise ConsensusError(f"commit of {key!r} failed ({reason}); it may or may not be applied")

    async def snapshot(self) -> Mapping[str, bytes]:
        """See :meth:`Consensus.snapshot`.

        The content this member has applied. On the leader that includes every
        acknowledged commit (a leader only reports ``is_self`` once its claim,
        and so everything before it, is applied). A follower trails the leader
        by about one heartbeat, and by the length of a partition or stop while
        it is cut off.
        """
        return self._state.copy()

    async def _resign(self) -> None:
        """Ask pysyncobj to hand leadership to the most caught-up follower, so
        the group does not wait an election timeout to notice we left."""
        if not self._raft_leader:
            return
        self._resigning = True
        for _ in range(int(self._config.election_timeout / _STOP_POLL)):
            if not self._raft_leader:
                return
            await asyncio.sleep(_STOP_POLL)

    async def suspect(self, leadership: Leadership, evidence: str) -> bool:
        """See :meth:`Suspecting.suspect`: campaign now instead of after the
        election timeout (Raft's safety never rests on timing).

        One follower does: the voter with the lowest address other than the
        dead leader's, so that two followers do not split the vote. The rest
        keep their timeouts, which also covers that one being down.
        """
        claim, node = self._state.claim, self._node
        if node is None or claim is None or self._closed:
            return False
        claim_term, member, agent_id, _ = claim
        current = self.leadership()
        if (
            current.is_self
            or (current.leader_id, current.term) != (leadership.leader_id, leadership.term)
            or (agent_id, claim_term) != (leadership.leader_id, leadership.term)
        ):
            return False
        voters = sorted({self._address, *self._peers} - {member})
        if not voters or voters[0] != self._address:
            return False
        log.warning(
            "raft: leader %s of term %d is gone (%s); campaigning now",
            agent_id,
            claim_term,
            evidence,
        )
        self._expedite = claim_term  # read by _on_tick on pysyncobj's thread
        return True

    def _on_tick(self) -> None:
        """Runs on pysyncobj's thread after every tick: claim leadership when it
        is ours, and publish the leadership when what it derives from changed."""
        node = self._node
        if node is None:
            return
        leader, term, claim = node._isLeader(), node.raftCurrentTerm, self._state.claim
        self._raft_leader = leader
        self._watch.on_tick(node, claim[0] if claim is not None else 0, time.monotonic())
        expedite, self._expedite = self._expedite, 0
        if expedite and not leader and term == expedite:
            # No election since the dead leader's: the next tick starts one.
            campaign_now(node)
        if leader and self._resigning:
            self._resigning = False
            node.transferLeadership()
        elif leader and self._claim_term != term and (claim is None or claim[0] < term):
            self._claim_term = term
            self._state.claim_leadership(
                term,
                self._address,
                self._agent_id,
                self._grpc_address,
                callback=functools.partial(self._on_claim_applied, term),
            )
        if (claim, leader, term) == self._seen:
            return
        self._seen = (claim, leader, term)
        current = Leadership()
        if claim is not None:
            claim_term, member, agent_id, grpc_address = claim
            is_self = member == self._address and leader and term == claim_term
            current = Leadership(agent_id, grpc_address, claim_term, is_self)
        if current != self._leadership:
            self._leadership = current
            self._call_in_loop(self._publish, current)

    def _on_claim_applied(self, term: int, result: Any, error: int) -> None:
        if (error != FAIL_REASON.SUCCESS or result is not True) and self._claim_term == term:
            self._claim_term = 0  # the next tick claims again if we still lead in term

    def _publish(self, leadership: Leadership) -> None:
        self._feed.publish(leadership)

    def _call_in_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(callback, *args)

    def _release_dir(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)


def _settle(future: asyncio.Future[tuple[Any, int]], value: tuple[Any, int]) -> None:
    if not future.done():
        future.set_result(value)


def _read_secret(config: RaftConfig) -> str:
    if config.secret_file is not None:
        try:
            secret = config.secret_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConsensusError(
                f"ha.consensus.raft.secret_file {config.secret_file}: cannot read it ({exc})"
            ) from exc
        if not secret:
            raise ConsensusError(f"ha.consensus.raft.secret_file {config.secret_file} is empty")
        return secret
    if not config.secret:
        raise ConsensusError(
            "ha.consensus.raft.secret is required: pysyncobj exchanges pickled messages, "
            "so only peers that know the secret may talk to it"
        )
    return config.secret
