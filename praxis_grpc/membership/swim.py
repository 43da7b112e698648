"""SWIM failure detection and gossip dissemination, with Lifeguard, as a pure state machine.

:class:`Membership` owns no socket, clock or thread. Its driver calls
:meth:`~Membership.receive` with each message, :meth:`~Membership.tick` at
:meth:`~Membership.next_deadline` (or any later time), and the plug points of
:mod:`praxis_grpc.membership.base` carry messages out and events up. Every call
takes ``now`` (seconds on any monotonic clock), so one class runs on libp2p in
production and on a virtual clock in :mod:`praxis_grpc.testing.swim_sim`.

The protocol is memberlist's: each period probe one member (round-robin over a
list reshuffled every round), ask ``indirect_checks`` others to ping it when
the direct ack is late, and only when none answers within the period suspect
it; suspicion is gossiped and declared dead after a timeout that scales with
log N and shrinks with independent confirmations, unless the member refutes it
with a higher incarnation. A refused connection is certain evidence (dead at
once); silence never is. Every claim and payload is signed (see ``claims``).
A member held dead that still sends us anything is told so (at most once per
probe interval), so it refutes a false verdict at once instead of whenever a
push-pull happens to reach it.

Connection setup is not silence: a ping (or a relayed ping) for a member the
transport is not yet connected to (:meth:`Transport.ready` is False) starts its
timeout only once the transport reports the connection open
(:meth:`Membership.connected`), within ``connect_timeout``; a connection that
does not open by then counts as no answer. A probe round never starts while the
previous probe runs (memberlist's probe blocks its ticker the same way).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from praxis_grpc.membership.base import MembershipEvents, Signer, Transport, Verifier
from praxis_grpc.membership.claims import Item, Payload, State
from praxis_grpc.membership.config import MembershipConfig, push_pull_interval
from praxis_grpc.membership.messages import Ack, Gossip, Message, Nack, Ping, PingReq, PushPull
from praxis_grpc.membership.suspicion import Awareness
from praxis_grpc.membership.table import GONE, MemberInfo, MemberTable, Record

(
    _PROBE,
    _GOSSIP,
    _PUSH_PULL,
    _PROBE_TIMEOUT,
    _PROBE_END,
    _RELAY_TIMEOUT,
    _SUSPICION,
    _CONNECT_TIMEOUT,
) = range(8)


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    acked: bool = False
    asked: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    connecting: bool = False
    timeout_at: float = math.inf
    end_at: float = math.inf


class Membership:
    """This node's side of the protocol; not thread-safe (one driver calls it).

    Args:
        local: our member id (the libp2p peer id in production).
        address: our opaque transport address, carried in our alive claims.
        incarnation: where our incarnation starts; a restarted member must start
            above its previous life's (a wall-clock value does).
        on_probe: told how each of our probes ended: "ack" (direct), "indirect_ack"
            (after ping-reqs) or "suspect" (no ack); must not block or re-enter.
    """

    def __init__(
        self,
        local: str,
        *,
        address: str,
        incarnation: int,
        config: MembershipConfig,
        transport: Transport,
        signer: Signer,
        verifier: Verifier,
        events: MembershipEvents,
        rng: random.Random,
        on_probe: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.local = local
        self._on_probe = on_probe
        self._config = config
        self._transport = transport
        self._rng = rng
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._table = MemberTable(
            local,
            address=address,
            incarnation=incarnation,
            config=config,
            signer=signer,
            verifier=verifier,
            events=events,
            rng=rng,
            awareness=self._awareness,
            on_deadline=lambda when, member: self._at(when, _SUSPICION, member),
        )
        self._timers: list[tuple[float, int, int, int | str]] = []
        self._timer_count = 0
        self._probe: _Probe | None = None
        self._next = 0
        self._relays: dict[int, tuple[str, int]] = {}
        self._connecting: dict[str, list[int]] = {}  # member -> pings waiting for a connection
        self._round_due = False
        self._seq = 0
        self._told: dict[str, float] = {}  # dead member -> when we last told it so

    # -- driving -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start the probe, gossip and push-pull timers, each at a random phase."""
        config = self._config
        self._table.me.since = now
        self._at(now + self._rng.uniform(0, config.probe_interval), _PROBE)
        self._at(now + self._rng.uniform(0, config.gossip_interval), _GOSSIP)
        if config.push_pull_interval > 0:
            self._at(now + self._rng.uniform(0, config.push_pull_interval), _PUSH_PULL)

    def next_deadline(self) -> float:
        """When :meth:`tick` next has work (``inf`` when none)."""
        return self._timers[0][0] if self._timers else math.inf

    def tick(self, now: float) -> None:
        """Run every timer due at ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(timers)
            if kind == _PROBE:
                self._probe_round(now)
            elif kind == _GOSSIP:
                self._gossip_round(now)
            elif kind == _PUSH_PULL:
                self._push_pull_round(now)
            elif kind == _PROBE_TIMEOUT:
                self._ask_others(now, key)
            elif kind == _PROBE_END:
                self._end_probe(now, key, timer=True)
            elif kind == _RELAY_TIMEOUT:
                self._relay_failed(key)
            elif kind == _CONNECT_TIMEOUT:
                self._not_connected(now, int(key))
            else:
                self._table.expire(now, str(key))

    def receive(self, now: float, sender: str, message: Message) -> None:
        """Handle ``message`` from ``sender`` (as authenticated by the transport)."""
        if isinstance(message, PushPull):
            self._table.merge(now, message.items, "push-pull")
            if not message.reply:
                self._transport.send(sender, PushPull(self._table.full_state(), reply=True))
            return
        if isinstance(message, Ping | Ack | Gossip) and message.items:
            self._table.merge(now, message.items, "gossip")
        self._tell_the_dead(now, sender)
        if isinstance(message, Ping):
            if message.target == self.local:
                self._transport.send(sender, Ack(message.seq, self._table.piggyback()))
        elif isinstance(message, Ack):
            self._acked(now, message.seq)
        elif isinstance(message, PingReq):
            self._relay(now, sender, message)
        elif isinstance(message, Nack) and self._probe and self._probe.seq == message.seq:
            self._probe.nacks += 1

    def _tell_the_dead(self, now: float, sender: str) -> None:
        """``sender`` talks to us while we hold it dead: send it the signed verdict.

        A falsely dead member learns of its verdict only from a message that
        carries it; once the verdict's broadcasts are used up, that was the next
        push-pull that happened to reach it (30 s apart), and meanwhile its card
        stays out of our directory. It refutes as soon as it reads this.
        """
        record = self._table.records.get(sender)
        if record is None or record.state is not State.DEAD:
            return
        told = self._told.get(sender)
        if told is not None and now - told < self._config.probe_interval:
            return
        if len(self._told) >= 64:
            horizon = now - self._config.probe_interval
            self._told = {m: t for m, t in self._told.items() if t > horizon}
        self._told[sender] = now
        self._transport.send(sender, Gossip((record.claim,)))

    # -- the application's side ---------------------------------------------

    def join(self, now: float, seeds: list[str]) -> None:
        """Exchange full state with each of ``seeds`` (members known by id)."""
        for seed in seeds:
            if seed != self.local:
                self._transport.send(seed, PushPull(self._table.full_state()))

    def seed(self, now: float, items: tuple[Item, ...]) -> None:
        """Adopt items learnt out of band (a saved snapshot, another node's full state).

        Checked and merged like gossip but not re-broadcast: use it to warm a
        node up, not to announce news (:meth:`join` does that).
        """
        self._table.merge(now, items, "seed")

    def full_state(self) -> tuple[Item, ...]:
        """Every member's latest signed claim and every payload (what a sync sends)."""
        return self._table.full_state()

    def publish(self, now: float, key: str, version: int, data: bytes) -> None:
        """Spread version ``version`` of our ``key`` to every member, once each.

        Raises:
            ValueError: ``version`` is not above the last one published for ``key``.
        """
        self._table.publish(key, version, data)

    def connection_refused(self, now: float, member: str) -> None:
        """Certain evidence from the transport: ``member``'s process is gone (dead now).

        Only for a refused or reset connection; a timeout is not evidence.
        """
        self._table.accuse(now, member, State.DEAD, "connection refused")

    def connected(self, now: float, member: str) -> None:
        """The transport's connection to ``member`` is open and what was queued goes out now.

        Starts the timeouts of the pings that waited for it (see :meth:`Transport.ready`),
        and restarts that of a probe of ``member`` not yet answered nor handed to
        others: its ping went out again on this new connection (the old one broke).
        """
        probe = self._probe
        if probe is not None and probe.target == member and not probe.acked and not probe.asked:
            probe.connecting = False
            self._time_probe(now, probe)
        for seq in self._connecting.pop(member, ()):
            if seq in self._relays:
                self._at(now + self._config.probe_timeout, _RELAY_TIMEOUT, seq)

    def leave(self, now: float) -> None:
        """Tell everyone we leave; keep driving until :attr:`leave_spread`."""
        self._table.leave(now)

    @property
    def leave_spread(self) -> bool:
        """After :meth:`leave`: everything queued went out (our leave with it, as
        many times as any broadcast does), or no other member is alive or suspect
        to hear it.

        Like memberlist's ``Leave``, which waits only if another member is alive:
        a node alone, or whose peers all left or died, never sends its queue, and
        its every stop waited out the whole leave timeout.
        """
        return self._table.leave_spread()

    @property
    def pending_broadcasts(self) -> int:
        """Items still waiting to be piggybacked."""
        return len(self._table.queue)

    @property
    def incarnation(self) -> int:
        """Our current incarnation (raised by each refutation)."""
        return self._table.me.claim.incarnation

    @property
    def health(self) -> int:
        """The local health score (0 is healthy; timings are stretched by score + 1)."""
        return self._awareness.score

    def members(self) -> list[MemberInfo]:
        """Every member still remembered, ourselves included."""
        return self._table.info()

    def state_of(self, member: str) -> State | None:
        """``member``'s state here, None when unknown or forgotten."""
        record = self._table.records.get(member)
        return None if record is None else record.state

    def payload(self, origin: str, key: str) -> Payload | None:
        """The newest payload known for ``(origin, key)``."""
        return self._table.payload(origin, key)

    # -- probing ------------------------------------------------------------

    def _probe_round(self, now: float) -> None:
        if self._probe is not None:  # the previous probe still runs (it waited to connect)
            self._round_due = True
            return
        target = None if self._table.left else self._next_target(now)
        if target is not None:
            self._seq += 1
            items = self._table.piggyback()
            record = self._table.records[target]
            if record.state is State.SUSPECT:
                items = (record.claim, *items)  # so the suspect hears it and refutes
            self._probe = _Probe(self._seq, target)
            ready = self._transport.ready(target)
            self._transport.send(target, Ping(self._seq, target, items))
            if ready:
                self._time_probe(now, self._probe)
            else:
                self._probe.connecting = True
                self._wait_for_connection(now, target, self._seq)
        self._at(now + self._awareness.scale(self._config.probe_interval), _PROBE)

    def _time_probe(self, now: float, probe: _Probe) -> None:
        """Start (or restart) the probe's timeout and end: its ping goes out now."""
        probe.timeout_at = now + self._awareness.scale(self._config.probe_timeout)
        probe.end_at = now + self._awareness.scale(self._config.probe_interval)
        self._at(probe.timeout_at, _PROBE_TIMEOUT, probe.seq)
        self._at(probe.end_at, _PROBE_END, probe.seq)

    def _wait_for_connection(self, now: float, member: str, seq: int) -> None:
        self._connecting.setdefault(member, []).append(seq)
        self._at(now + self._awareness.scale(self._config.connect_timeout), _CONNECT_TIMEOUT, seq)

    def _not_connected(self, now: float, seq: int) -> None:
        """``connect_timeout`` passed: a ping still waiting for its connection got no answer."""
        self._drop_waiting(seq)
        probe = self._probe
        if probe is not None and probe.seq == seq and probe.connecting:
            probe.connecting = False
            if probe.acked:  # answered some other way meanwhile
                self._end_probe(now, seq)
                return
            probe.timeout_at = now
            self._ask_others(now, seq)
            rest = self._config.probe_interval - self._config.probe_timeout
            probe.end_at = now + self._awareness.scale(rest)
            self._at(probe.end_at, _PROBE_END, seq)
        else:
            self._relay_failed(seq)  # a relayed ping that never went out: nack

    def _drop_waiting(self, seq: int) -> None:
        for member, waiting in list(self._connecting.items()):
            if seq in waiting:
                waiting.remove(seq)
                if not waiting:
                    del self._connecting[member]
                return

    def _next_target(self, now: float) -> str | None:
        """Round-robin over the members, reshuffled at the end of every round."""
        table = self._table
        for _ in range(len(table.order) + 1):
            if self._next >= len(table.order):
                table.forget_the_dead(now)
                self._rng.shuffle(table.order)
                self._next = 0
                if not table.order:
                    return None
            member = table.order[self._next]
            self._next += 1
            if table.records[member].state not in GONE:
                return member
        return None

    def _ask_others(self, now: float, seq: int | str) -> None:
        probe = self._probe
        if probe is None or probe.seq != seq or probe.acked or probe.asked:
            return
        if now < probe.timeout_at:  # restarted since this timer was set
            return
        target = probe.target
        helpers = self._helpers(target)
        probe.asked, probe.expected_nacks = True, len(helpers)
        for helper in helpers:
            self._transport.send(helper, PingReq(probe.seq, target))

    def _helpers(self, target: str) -> list[str]:
        """Members to ask for an indirect probe, those we are connected to first."""
        k, ready = self._config.indirect_checks, self._transport.ready

        def able(r: Record) -> bool:
            return r.claim.member != target and r.state is State.ALIVE

        helpers = self._table.random_members(k, lambda r: able(r) and ready(r.claim.member))
        if len(helpers) < k:
            helpers += self._table.random_members(
                k - len(helpers), lambda r: able(r) and r.claim.member not in helpers
            )
        return helpers

    def _end_probe(self, now: float, seq: int | str, *, timer: bool = False) -> None:
        probe = self._probe
        if probe is None or probe.seq != seq:
            return
        if timer and now < probe.end_at:  # restarted since this timer was set
            return
        self._probe = None
        if self._round_due:  # a round came due while this probe ran: start it now
            self._round_due = False
            self._at(now, _PROBE)
        if probe.acked:
            return
        # Lifeguard: each helper that did not even nack hints that we are the slow one.
        self._awareness.apply(probe.expected_nacks - probe.nacks if probe.expected_nacks else 1)
        self._on_probe("suspect")
        self._table.accuse(now, probe.target, State.SUSPECT, "probe")

    def _acked(self, now: float, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and not probe.acked:
            probe.acked = True
            self._awareness.apply(-1)
            self._on_probe("indirect_ack" if probe.asked else "ack")
            if probe.connecting:  # the ack beat the news of the connection
                probe.connecting = False
                self._drop_waiting(seq)
                self._end_probe(now, seq)
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._transport.send(relay[0], Ack(relay[1], self._table.piggyback()))

    def _relay(self, now: float, requester: str, request: PingReq) -> None:
        self._seq += 1
        self._relays[self._seq] = (requester, request.seq)
        items = self._table.piggyback()
        ready = self._transport.ready(request.target)
        self._transport.send(request.target, Ping(self._seq, request.target, items))
        if ready:
            self._at(now + self._config.probe_timeout, _RELAY_TIMEOUT, self._seq)
        else:
            self._wait_for_connection(now, request.target, self._seq)

    def _relay_failed(self, seq: int | str) -> None:
        relay = self._relays.pop(int(seq), None)
        if relay is not None:
            self._transport.send(relay[0], Nack(relay[1]))

    # -- dissemination ------------------------------------------------------

    def _gossip_round(self, now: float) -> None:
        self._at(now + self._config.gossip_interval, _GOSSIP)
        if not self._table.queue:
            return
        horizon = now - self._config.gossip_to_the_dead
        targets = self._table.random_members(
            self._config.gossip_fanout,
            lambda r: r.state not in GONE or (r.state is State.DEAD and r.since > horizon),
        )
        for target in targets:
            items = self._table.piggyback()
            if not items:
                return
            self._transport.send(target, Gossip(items))

    def _push_pull_round(self, now: float) -> None:
        table = self._table
        self._at(now + push_pull_interval(self._config, len(table.records)), _PUSH_PULL)
        partner = table.random_members(1, lambda r: r.state is State.ALIVE)
        if partner and not table.left:
            self._transport.send(partner[0], PushPull(table.full_state()))

    def _at(self, when: float, kind: int, key: int | str = 0) -> None:
        self._timer_count += 1
        heapq.heappush(self._timers, (when, self._timer_count, kind, key))
