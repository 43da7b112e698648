"""The consensus plug point: leader election plus a small replicated key-value
state, fenced by term. Backends: ``raft`` (embedded, pysyncobj) and ``etcd``.

In active-passive mode the elected node is the coordinator: it owns the task
queue, and every change to it goes through :meth:`Consensus.commit` before it
is acknowledged to anyone. A new coordinator reads the committed state with
:meth:`Consensus.snapshot` and resumes from it.

Contract (every backend, checked by the public contract suite
:mod:`praxis_grpc.testing.consensus_contract`, which
``tests/integration/test_consensus_contract.py`` runs against the memory
fake, raft and etcd):

    - Leadership: at most one member believes it leads in a given term, and
      :class:`Leadership` reports the leader's agent id and gRPC address as
      the group agreed on them (not merely as the backend's transport knows
      them). ``leadership()`` is cheap and never blocks.
    - Terms (fencing tokens) only increase: every change of leader produces a
      term greater than any term before it (a re-election of the same member
      may also increase it).
    - ``commit`` returns only after the write is durable on a quorum, and only
      if this member still leads in ``term`` at the moment the write is
      applied; otherwise it raises :class:`NotLeader` and nothing is written.
      So a deposed leader that has not noticed yet cannot overwrite the state
      its successor builds on.
    - ``snapshot`` returns every committed key as of a point no older than the
      last ``commit`` this member saw acknowledged; on a new leader it
      includes every write acknowledged by any previous leader.
    - Methods run on the node's asyncio loop; backends that run threads of
      their own (pysyncobj) bridge to it themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "Consensus",
    "ConsensusError",
    "Leadership",
    "LeadershipFeed",
    "NotLeader",
    "Suspecting",
]


class ConsensusError(Exception):
    """The backend failed (cannot reach its peers or its cluster)."""


class NotLeader(ConsensusError):
    """This member does not lead in the term it claimed; nothing was written.

    Attributes:
        leadership: The leadership as this member sees it now.
    """

    def __init__(self, message: str, leadership: Leadership) -> None:
        super().__init__(message)
        self.leadership = leadership


@dataclass(frozen=True)
class Leadership:
    """Who leads the group, as this member sees it.

    Attributes:
        leader_id: The leader's agent id; "" while there is none.
        leader_address: The leader's gRPC endpoint ("host:port"); "" while none.
        term: Fencing token of this leadership; 0 before the first election.
        is_self: True when this member is the leader.
    """

    leader_id: str = ""
    leader_address: str = ""
    term: int = 0
    is_self: bool = False

    @property
    def known(self) -> bool:
        """True when there is a leader."""
        return bool(self.leader_id)


class Consensus(Protocol):
    """Election and fenced replicated state. See the module docstring."""

    @property
    def backend(self) -> str:
        """``raft`` or ``etcd`` (the config name)."""
        ...

    async def start(self) -> None:
        """Join the group and begin campaigning. Returns once the member runs
        (not once a leader is elected).

        Raises:
            ConsensusError: the backend cannot start (bad address, port in use,
                unreachable cluster); the message names the config key.
        """
        ...

    async def aclose(self) -> None:
        """Leave the group: resign leadership if held, stop threads and calls."""
        ...

    def leadership(self) -> Leadership:
        """The current leadership as this member sees it."""
        ...

    def watch(self) -> AsyncIterator[Leadership]:
        """Yield the current leadership, then every change of it."""
        ...

    async def commit(self, key: str, value: bytes | None, *, term: int) -> None:
        """Replicate ``key = value`` (``None`` deletes) if this member leads in ``term``.

        Raises:
            NotLeader: this member does not lead in ``term``; nothing written.
            ConsensusError: the write could not be made durable (timeout, no
                quorum); it may or may not be applied later.
        """
        ...

    async def snapshot(self) -> Mapping[str, bytes]:
        """Every committed key and value (see the contract)."""
        ...


@runtime_checkable
class Suspecting(Protocol):
    """Optional capability of a :class:`Consensus` backend: end a dead
    leader's term early on outside evidence. Check for it with
    ``isinstance(consensus, Suspecting)``; a backend without it is left to
    its own failure detector."""

    async def suspect(self, leadership: Leadership, evidence: str) -> bool:
        """The caller has evidence that the leader of ``leadership`` is dead
        (its gRPC port refuses connections): end that term now if the backend
        would otherwise wait for its own failure detector.

        Acts only while ``leadership`` (leader and term) is still the current
        one, never against this member itself. Only liveness rests on the
        evidence: a wrong suspicion deposes a live leader, which fencing makes
        safe, and the group elects again.

        Returns:
            True if the term was ended; False if the backend has nothing to
            speed up (Raft elects within its election timeout anyway) or the
            leadership is no longer current.
        """
        ...


class LeadershipFeed:
    """Fan-out of leadership changes to any number of ``watch()`` streams,
    for backends to share. Runs on one event loop."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Leadership | None]] = set()

    def publish(self, leadership: Leadership) -> None:
        """Tell every stream about ``leadership`` (streams skip repeats)."""
        for queue in self._queues:
            queue.put_nowait(leadership)

    def close(self) -> None:
        """End every stream."""
        for queue in self._queues:
            queue.put_nowait(None)

    async def stream(
        self, current: Callable[[], Leadership], closed: Callable[[], bool]
    ) -> AsyncIterator[Leadership]:
        """Yield ``current()``, then every published change, until closed."""
        queue: asyncio.Queue[Leadership | None] = asyncio.Queue()
        self._queues.add(queue)
        try:
            latest = current()
            yield latest
            while not closed() and (changed := await queue.get()) is not None:
                if changed != latest:
                    latest = changed
                    yield latest
        finally:
            self._queues.discard(queue)
