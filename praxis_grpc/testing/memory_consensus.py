"""An in-memory :class:`~praxis_grpc.consensus.base.Consensus` group for tests.

The test drives the elections. :meth:`MemoryConsensusGroup.elect` makes a
member the leader in a new term, :meth:`~MemoryConsensusGroup.depose` leaves
the group without one, and :meth:`~MemoryConsensusGroup.isolate` cuts a member
off: it keeps the leadership and state it last saw (so a cut-off leader still
believes it leads) while the group moves to a newer term, which fences its
commits. :meth:`~MemoryConsensusGroup.rejoin` reconnects it.
:meth:`~MemoryConsensusGroup.fail` makes every commit and snapshot raise a
:class:`ConsensusError` (no quorum, a commit timeout) until it is cleared.

The fake keeps the contract of the real backends: terms only increase,
``commit`` writes only if the member leads in ``term`` at the moment the write
is applied and otherwise raises :class:`NotLeader` with nothing written, and a
member's snapshot holds every write acknowledged before it was cut off. It is
not thread-safe: use one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from praxis_grpc.consensus.base import ConsensusError, Leadership, LeadershipFeed, NotLeader

__all__ = ["MemoryConsensus", "MemoryConsensusGroup"]


class MemoryConsensusGroup:
    """The shared state of a group of :class:`MemoryConsensus` members."""

    def __init__(self) -> None:
        self._members: dict[str, MemoryConsensus] = {}
        self._data: dict[str, bytes] = {}
        self._term = 0
        self._leader: MemoryConsensus | None = None
        self._failure: ConsensusError | None = None
        self.suspicions: list[tuple[str, Leadership, str]] = []
        """(suspecting agent id, suspected leadership, evidence), in order."""
        self.refused = 0
        """Commits and snapshots refused by :meth:`fail` so far."""

    @property
    def term(self) -> int:
        """The group's current term."""
        return self._term

    def member(self, agent_id: str, grpc_address: str) -> MemoryConsensus:
        """Add a member; it takes part once started.

        Raises:
            ValueError: ``agent_id`` is already a member.
        """
        if agent_id in self._members:
            raise ValueError(f"{agent_id!r} is already a member")
        member = MemoryConsensus(self, agent_id, grpc_address)
        self._members[agent_id] = member
        return member

    def elect(self, agent_id: str) -> Leadership:
        """Make a started, connected member the leader in a new term.

        Returns:
            The new leadership, as the group sees it.

        Raises:
            KeyError: no such member.
            ValueError: the member is not started or is isolated.
        """
        member = self._members[agent_id]
        if not member._running or member._isolated:
            raise ValueError(f"{agent_id!r} is not running or is isolated")
        self._term += 1
        self._leader = member
        self._changed()
        return self._view()

    def depose(self) -> None:
        """Leave the group without a leader (a new term whose election is pending)."""
        if self._leader is not None:
            self._term += 1
            self._leader = None
            self._changed()

    def isolate(
        self, agent_id: str, *, sees_leader: bool = True, keeps_claim: bool = False
    ) -> None:
        """Cut a member off. It keeps the view it has; if it led, the group
        deposes it, so its later commits are fenced by the newer term.
        With ``sees_leader=False`` its view loses the leader (same term), as
        a raft leader that no longer hears a quorum steps down and an etcd
        member's lease lapses; its state stays as it was. With
        ``keeps_claim=True`` its view still names the leader it saw but never
        as itself, as a raft leader that stepped down for want of a quorum
        still has its own claim as the latest it applied."""
        member = self._members[agent_id]
        if member._isolated:
            return
        member._isolated = True
        seen = member.leadership()
        if not sees_leader:
            seen = Leadership(term=seen.term)
        elif keeps_claim:
            seen = Leadership(seen.leader_id, seen.leader_address, seen.term)
        member._frozen = (seen, dict(self._data))
        if self._leader is member:
            self.depose()
        member._publish()

    def rejoin(self, agent_id: str) -> None:
        """Reconnect an isolated member; it catches up with the group."""
        member = self._members[agent_id]
        member._isolated = False
        member._frozen = None
        member._publish()

    def fail(self, failure: ConsensusError | None) -> None:
        """Make every commit and snapshot of every member raise ``failure``
        (nothing is written), as a group without quorum would; ``None`` heals it."""
        self._failure = failure

    def _check(self) -> None:
        if self._failure is not None:
            self.refused += 1
            raise self._failure

    def _view(self, member: MemoryConsensus | None = None) -> Leadership:
        leader = self._leader
        if leader is None:
            return Leadership(term=self._term)
        return Leadership(
            leader.agent_id, leader.grpc_address, self._term, is_self=leader is member
        )

    def _changed(self) -> None:
        for member in self._members.values():
            member._publish()

    def _apply(self, member: MemoryConsensus, key: str, value: bytes | None, term: int) -> bool:
        if member._isolated or self._leader is not member or self._term != term:
            return False
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value
        return True

    def _leave(self, member: MemoryConsensus) -> None:
        if self._leader is member and not member._isolated:
            self.depose()


class MemoryConsensus:
    """A member of a :class:`MemoryConsensusGroup`; create it with
    :meth:`MemoryConsensusGroup.member`. Its ``backend`` is ``"memory"``."""

    def __init__(self, group: MemoryConsensusGroup, agent_id: str, grpc_address: str) -> None:
        self.agent_id = agent_id
        self.grpc_address = grpc_address
        self._running = False
        self._isolated = False
        self._frozen: tuple[Leadership, dict[str, bytes]] | None = None
        self._group = group
        self._closed = False
        self._seen = Leadership()
        self._feed = LeadershipFeed()

    @property
    def backend(self) -> str:
        return "memory"

    async def start(self) -> None:
        if self._running or self._closed:
            raise ConsensusError("a member can be started once")
        self._running = True
        self._publish()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._group._leave(self)
        self._running = False
        self._feed.close()

    def leadership(self) -> Leadership:
        if not self._running:
            return Leadership()
        if self._frozen is not None:
            return self._frozen[0]
        return self._group._view(self)

    def watch(self) -> AsyncIterator[Leadership]:
        return self._feed.stream(self.leadership, lambda: self._closed)

    async def commit(self, key: str, value: bytes | None, *, term: int) -> None:
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
        current = self.leadership()
        if not current.is_self or current.term != term:
            raise NotLeader(f"this member does not lead in term {term}", current)
        await asyncio.sleep(0)  # the write is applied later, as with a real group
        self._group._check()
        if not self._group._apply(self, key, value, term):
            raise NotLeader(f"this member does not lead in term {term}", self.leadership())

    async def snapshot(self) -> Mapping[str, bytes]:
        self._group._check()
        if self._frozen is not None:
            return dict(self._frozen[1])
        return dict(self._group._data)

    async def suspect(self, leadership: Leadership, evidence: str) -> bool:
        """Like etcd's lease revocation: a connected member that still sees
        ``leadership`` as current deposes that leader (no one is elected until
        the test calls :meth:`MemoryConsensusGroup.elect`)."""
        current = self.leadership()
        if self._isolated or current.is_self or not current.known or current != leadership:
            return False
        self._group.suspicions.append((self.agent_id, leadership, evidence))
        self._group.depose()
        return True

    def _publish(self) -> None:
        current = self.leadership()
        if current != self._seen:
            self._seen = current
            self._feed.publish(current)
