"""What one node believes about every member: claims merged by incarnation, payloads by version.

:class:`MemberTable` applies SWIM's precedence rules to signed items and
queues every change it adopts for dissemination. It verifies an item only
once the item would change something (so re-gossiped and synced state costs
a dictionary look-up, not a signature check) and never adopts an item whose
signature does not match who makes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from praxis_grpc.membership.base import MembershipEvents, Signer, Verifier
from praxis_grpc.membership.claims import Claim, Item, Payload, State
from praxis_grpc.membership.config import MembershipConfig, retransmit_limit, suspicion_timeout
from praxis_grpc.membership.dissemination import BroadcastQueue
from praxis_grpc.membership.signatures import VerifiedItems
from praxis_grpc.membership.suspicion import Awareness, Suspicion

GONE = (State.DEAD, State.LEFT)
_Signed = TypeVar("_Signed", Claim, Payload)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member as this node sees it, and how it learnt that."""

    member: str
    state: State
    incarnation: int
    address: str
    since: float
    learnt: str


@dataclass(slots=True)
class Record:
    """The claim a member's current state rests on."""

    claim: Claim
    state: State
    since: float
    learnt: str


class MemberTable:
    """Members, their suspicions and payloads; owned by one :class:`Membership`.

    ``on_deadline(when, member)`` is called whenever a suspicion's deadline is
    set or moves; the owner then calls :meth:`expire` at that time.
    """

    def __init__(
        self,
        local: str,
        *,
        address: str,
        incarnation: int,
        config: MembershipConfig,
        signer: Signer,
        verifier: Verifier,
        events: MembershipEvents,
        rng: random.Random,
        awareness: Awareness,
        on_deadline: Callable[[float, str], None],
    ) -> None:
        self.local = local
        self.records: dict[str, Record] = {}
        self.order: list[str] = []  # everyone but us, in probe order
        self.queue = BroadcastQueue()
        self.left = False
        self._config = config
        self._signer = signer
        self._verified = VerifiedItems(verifier, config.verified_cache_size)
        self._events = events
        self._rng = rng
        self._awareness = awareness
        self._on_deadline = on_deadline
        self._payloads: dict[tuple[str, str], Payload] = {}
        self._suspicions: dict[str, Suspicion] = {}
        alive = self.sign(Claim(State.ALIVE, local, incarnation, local, address))
        self.records[local] = Record(alive, State.ALIVE, 0.0, "self")

    @property
    def me(self) -> Record:
        """Our own record."""
        return self.records[self.local]

    def sign(self, item: _Signed) -> _Signed:
        """``item`` signed by us."""
        return replace(item, signature=self._signer.sign(item.body()))

    def payload(self, origin: str, key: str) -> Payload | None:
        """The newest payload known for ``(origin, key)``."""
        return self._payloads.get((origin, key))

    def info(self) -> list[MemberInfo]:
        """Every member still remembered, ourselves included."""
        return [
            MemberInfo(m, r.state, r.claim.incarnation, r.claim.address, r.since, r.learnt)
            for m, r in self.records.items()
        ]

    def piggyback(self) -> tuple[Item, ...]:
        """The next items to carry on an outgoing message."""
        if not self.queue:
            return ()
        limit = retransmit_limit(self._config, len(self.records))
        return self.queue.take(self._config.max_packet_bytes, limit)

    def full_state(self) -> tuple[Item, ...]:
        """Every member's claim and every payload, for a push-pull sync."""
        claims = [record.claim for record in self.records.values()]
        return (*claims, *self._payloads.values())

    def random_members(self, k: int, accept: Callable[[Record], bool]) -> list[str]:
        """Up to ``k`` distinct members other than us whose record ``accept`` takes."""
        order, chosen = self.order, list[str]()
        if len(order) < 3 * k:
            candidates = self._rng.sample(order, len(order))
        else:
            candidates = [order[self._rng.randrange(len(order))] for _ in range(3 * k)]
        for member in candidates:
            if len(chosen) == k:
                break
            if member not in chosen and accept(self.records[member]):
                chosen.append(member)
        return chosen

    # -- our own statements --------------------------------------------------

    def publish(self, key: str, version: int, data: bytes) -> None:
        """See :meth:`Membership.publish`."""
        current = self._payloads.get((self.local, key))
        if current is not None and current.version >= version:
            raise ValueError(f"version {version} of {key!r} is not above {current.version}")
        payload = self.sign(Payload(self.local, key, version, data))
        self._payloads[(self.local, key)] = payload
        self.queue.push(payload)

    def accuse(self, now: float, member: str, kind: State, learnt: str) -> None:
        """We ourselves suspect ``member`` or declare it dead (``kind``)."""
        record = self.records.get(member)
        if member == self.local or record is None or record.state in GONE:
            return
        claim = self.sign(Claim(kind, member, record.claim.incarnation, self.local))
        if kind is State.SUSPECT:
            self._on_suspect(now, record, claim, learnt, verified=True)
        else:
            self._change(now, record, claim, learnt)

    def leave(self, now: float) -> None:
        """See :meth:`Membership.leave`."""
        me = self.me
        self.left = True
        me.claim = self.sign(Claim(State.LEFT, self.local, me.claim.incarnation, self.local))
        me.state, me.since = State.LEFT, now
        self.queue.push(me.claim)

    def leave_spread(self) -> bool:
        """See :attr:`Membership.leave_spread`."""
        if not self.left:
            return False
        if not self.queue:
            return True
        return all(r.state in GONE for m, r in self.records.items() if m != self.local)

    def expire(self, now: float, member: str) -> None:
        """Declare ``member`` dead if its suspicion's deadline has passed unrefuted."""
        suspicion = self._suspicions.get(member)
        if suspicion is not None and now >= suspicion.deadline:
            self.accuse(now, member, State.DEAD, "suspicion timeout")

    def forget_the_dead(self, now: float) -> None:
        """Drop members dead or left for longer than ``gossip_to_the_dead``."""
        horizon = now - self._config.gossip_to_the_dead
        gone = {
            m
            for m in self.order
            if self.records[m].state in GONE and self.records[m].since <= horizon
        }
        if gone:
            self.order = [m for m in self.order if m not in gone]
            for member in gone:
                del self.records[member]

    # -- others' statements --------------------------------------------------

    def merge(self, now: float, items: tuple[Item, ...], learnt: str) -> None:
        """Adopt whatever in ``items`` is news and correctly signed."""
        for item in items:
            if isinstance(item, Payload):
                self._on_payload(item, learnt)
                continue
            if not item.well_formed:
                continue
            record = self.records.get(item.member)
            if item.kind is State.ALIVE:
                self._on_alive(now, record, item, learnt)
            elif record is None or item.incarnation < record.claim.incarnation:
                continue
            elif item.kind is State.SUSPECT:
                self._on_suspect(now, record, item, learnt, verified=False)
            elif item.kind is State.DEAD and learnt == "push-pull" and item.member != self.local:
                # As memberlist: a dead member in a sync is only suspected here,
                # so a member wrongly declared dead elsewhere can still refute.
                if record.state is State.ALIVE and self._verified.check(item):
                    self.accuse(now, item.member, State.SUSPECT, learnt)
            else:
                self._on_gone(now, record, item, learnt)

    def _on_alive(self, now: float, record: Record | None, claim: Claim, learnt: str) -> None:
        if claim.member == self.local:
            if claim.incarnation > self.me.claim.incarnation and self._verified.check(claim):
                self._refute(claim.incarnation)  # an earlier life of ours claimed more
            return
        if record is not None and claim.incarnation <= record.claim.incarnation:
            return
        if not self._verified.check(claim):
            return
        if record is None:
            record = Record(claim, State.DEAD, now, learnt)
            self.records[claim.member] = record
            # A newcomer goes to a random place in the probe order (as memberlist).
            self.order.append(claim.member)
            last = len(self.order) - 1
            spot = int(self._rng.random() * (last + 1))
            self.order[spot], self.order[last] = self.order[last], self.order[spot]
        self._change(now, record, claim, learnt)

    def _on_suspect(
        self, now: float, record: Record, claim: Claim, learnt: str, *, verified: bool
    ) -> None:
        if record.state in GONE or not self._accuser_counts(claim):
            return
        if claim.member == self.local:
            if verified or self._verified.check(claim):
                self._refute(claim.incarnation)
            return
        suspicion = self._suspicions.get(claim.member)
        if suspicion is not None:
            if claim.accuser in suspicion.accusers or suspicion.confirmations >= suspicion.k:
                return
            if verified or self._verified.check(claim):
                suspicion.confirm(claim.accuser)
                self.queue.push(claim)
                self._on_deadline(suspicion.deadline, claim.member)
            return
        if verified or self._verified.check(claim):
            self._change(now, record, claim, learnt)

    def _on_gone(self, now: float, record: Record, claim: Claim, learnt: str) -> None:
        if record.state in GONE or not self._accuser_counts(claim):
            return
        if not self._verified.check(claim):
            return
        if claim.member == self.local:
            if not self.left:
                self._refute(claim.incarnation)
            return
        self._change(now, record, claim, learnt)

    def _on_payload(self, payload: Payload, learnt: str) -> None:
        record = self.records.get(payload.origin)
        if payload.origin == self.local or record is None or record.state in GONE:
            return
        current = self._payloads.get((payload.origin, payload.key))
        if current is not None and current.version >= payload.version:
            return
        if self._verified.check(payload):
            self._payloads[(payload.origin, payload.key)] = payload
            if learnt != "seed":
                self.queue.push(payload)
            self._events.on_payload(payload)

    def _accuser_counts(self, claim: Claim) -> bool:
        """Only members we know and do not hold dead may accuse (a leaver may say so itself)."""
        accuser = self.records.get(claim.accuser)
        return accuser is not None and (accuser.state not in GONE or claim.accuser == claim.member)

    def _change(self, now: float, record: Record, claim: Claim, learnt: str) -> None:
        """Adopt ``claim`` (checked to be news and verified) and spread it."""
        record.claim, record.state, record.since, record.learnt = claim, claim.kind, now, learnt
        self._suspicions.pop(claim.member, None)
        if claim.kind is State.SUSPECT:
            self._suspect(now, claim)
        elif claim.kind in GONE:
            for key in [k for k in self._payloads if k[0] == claim.member]:
                del self._payloads[key]
        if learnt != "seed":
            self.queue.push(claim)
        self._events.on_member(claim.member, claim.kind, claim.incarnation, claim.address)

    def _suspect(self, now: float, claim: Claim) -> None:
        members = len(self.records)
        k = self._config.suspicion_mult - 2
        if members - 2 < k:
            k = 0
        shortest = suspicion_timeout(self._config, members)
        longest = self._config.suspicion_max_timeout_mult * shortest
        suspicion = Suspicion(now, k, shortest, longest, {claim.accuser})
        self._suspicions[claim.member] = suspicion
        self._on_deadline(suspicion.deadline, claim.member)

    def _refute(self, accused: int) -> None:
        me = self.me
        incarnation = max(me.claim.incarnation, accused) + 1
        alive = Claim(State.ALIVE, self.local, incarnation, self.local, me.claim.address)
        me.claim = self.sign(alive)
        self.queue.push(me.claim)
        self._awareness.apply(1)
