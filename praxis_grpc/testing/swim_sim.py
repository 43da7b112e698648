"""A discrete-event network of :class:`~praxis_grpc.membership.Membership` nodes on a virtual clock.

The nodes run the product's state machine unchanged; only the network and the
clock are simulated: each message is delivered after a configurable latency
unless lost (``loss``), cut by a partition, or sent to or from a paused node;
a killed node's peers either hear a refused connection (a crashed process) or
nothing (a silent host). With ``connect_delay``, two nodes must first connect
(as over libp2p: TCP, Noise, yamux) before their first message goes out, and
stay connected. Nothing sleeps: :meth:`SwimSimulation.run_until`
jumps from event to event, so a minute of a 1,000-node cluster takes seconds.

Example::

    sim = SwimSimulation(seed=1)
    sim.add_nodes(10)
    sim.run_for(5.0)
    sim.kill("n3")
    sim.run_until(lambda: sim.agree("n3", State.DEAD), limit=30.0)
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from praxis_grpc.membership import Membership, MembershipConfig, Message, Payload, State
from praxis_grpc.membership.codec import decode_message, encode_message
from praxis_grpc.testing.swim_keys import SimKeys

_DELIVER, _WAKE, _REFUSED, _CONNECTED = range(4)


@dataclass(slots=True)
class SimNode:
    """One simulated member: its state machine and what it heard when."""

    name: str
    net: SwimSimulation
    membership: Membership = field(init=False)
    paused: bool = False
    killed: bool = False
    refuses: bool = False
    wake_at: float = math.inf
    sent: int = 0
    received: int = 0
    states: dict[str, tuple[State, float]] = field(default_factory=dict)
    payloads: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)

    def send(self, to: str, message: Message) -> None:
        """The node's :class:`~praxis_grpc.membership.base.Transport`."""
        self.net._send(self, to, message)

    def ready(self, to: str) -> bool:
        """The node's :class:`~praxis_grpc.membership.base.Transport`: connected to ``to``."""
        return self.net.connected(self.name, to)

    def on_member(self, member: str, state: State, incarnation: int, address: str) -> None:
        self.states[member] = (state, self.net.now)
        self.net.observe_member(self.name, member, state)

    def on_payload(self, payload: Payload) -> None:
        self.payloads[(payload.origin, payload.key)] = (payload.version, self.net.now)
        self.net.observe_payload(self.name, payload)


class SwimSimulation:
    """Nodes, a virtual clock and a lossy, partitionable network between them.

    Args:
        seed: seeds the network's and every node's RNG (runs are reproducible).
        latency: one-way delay of every message, in seconds, plus up to
            ``jitter`` more, uniformly.
        loss: probability that any one message is lost.
        wire: pass every message through the byte codec (slower; proves the
            adaptor's encoding round-trips).
        connect_delay: None: every pair is connected from the start. Else the
            seconds a first message between two nodes waits for their connection
            (a paused, silent or cut-off peer never connects; messages queued
            meanwhile go out once it opens). A connection serves both ways.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        config: MembershipConfig | None = None,
        latency: float = 0.002,
        jitter: float = 0.003,
        loss: float = 0.0,
        wire: bool = False,
        keys: SimKeys | None = None,
        connect_delay: float | None = None,
    ) -> None:
        self.now = 0.0
        self.connect_delay = connect_delay
        self._links: set[frozenset[str]] = set()
        self._pending: dict[tuple[str, str], list[Message]] = {}
        self.config = config or MembershipConfig()
        self.latency, self.jitter, self.loss, self.wire = latency, jitter, loss, wire
        self.keys = keys or SimKeys()
        self.nodes: dict[str, SimNode] = {}
        self.messages = 0
        self.observers: list[Callable[[str, str, State], None]] = []
        self.payload_observers: list[Callable[[str, Payload], None]] = []
        self._rng = random.Random(seed)  # noqa: S311 (a simulation, not crypto)
        self._seed = seed
        self._events: list[tuple[float, int, int, object]] = []
        self._count = 0
        self._groups: dict[str, int] = {}

    # -- building -------------------------------------------------------------

    def add_node(self, name: str, *, incarnation: int = 1, seeds: tuple[str, ...] = ()) -> SimNode:
        """Start a node now; it joins through ``seeds`` (push-pull) if given."""
        node = SimNode(name, self)
        node.membership = Membership(
            name,
            address=f"/sim/{name}",
            incarnation=incarnation,
            config=self.config,
            transport=node,
            signer=self.keys.signer(name),
            verifier=self.keys,
            events=node,
            rng=random.Random(f"{self._seed}/{name}/{incarnation}"),  # noqa: S311
        )
        self.nodes[name] = node
        node.membership.start(self.now)
        node.membership.join(self.now, list(seeds))
        self._reschedule(node)
        return node

    def add_nodes(self, count: int, prefix: str = "n") -> list[SimNode]:
        """``count`` nodes that already know each other (warm start, nothing to gossip)."""
        nodes = [self.add_node(f"{prefix}{i}") for i in range(count)]
        everyone = tuple(node.membership.full_state()[0] for node in nodes)
        for node in nodes:
            node.membership.seed(self.now, everyone)
            self._reschedule(node)
        return nodes

    # -- faults ----------------------------------------------------------------

    def pause(self, name: str) -> None:
        """Freeze ``name`` (SIGSTOP): it neither runs nor hears; messages to it are lost."""
        self.nodes[name].paused = True

    def resume(self, name: str) -> None:
        """Let ``name`` run again; its overdue timers fire at once."""
        node = self.nodes[name]
        node.paused = False
        node.wake_at = math.inf
        self._reschedule(node)

    def kill(self, name: str, *, refuse: bool = True) -> None:
        """Stop ``name`` for good; with ``refuse`` its peers' sends report refused connections."""
        node = self.nodes[name]
        node.killed, node.paused, node.refuses = True, False, refuse

    def partition(self, *groups: list[str]) -> None:
        """Only nodes of the same group hear each other (nodes in no group hear all)."""
        self._groups = {name: index for index, group in enumerate(groups) for name in group}

    def heal(self) -> None:
        """Remove every partition."""
        self._groups = {}

    # -- running ---------------------------------------------------------------

    def run_until(self, done: Callable[[], bool], *, limit: float) -> bool:
        """Process events until ``done()`` holds (True) or ``limit`` seconds pass (False)."""
        deadline = self.now + limit
        while not done():
            if not self._events or self._events[0][0] > deadline:
                self.now = deadline
                return done()
            self._step()
        return True

    def run_for(self, seconds: float) -> None:
        """Process every event in the next ``seconds``."""
        self.run_until(lambda: False, limit=seconds)

    def at(self, delay: float, action: Callable[[], None]) -> None:
        """Call ``action`` after ``delay`` virtual seconds."""
        self._push(self.now + delay, _DELIVER, action)

    def agree(self, member: str, state: State, among: list[str] | None = None) -> bool:
        """Every running node (or each of ``among``) holds ``member`` in ``state``."""
        names = among if among is not None else self.running()
        return all(self.nodes[n].membership.state_of(member) is state for n in names if n != member)

    def running(self) -> list[str]:
        """Nodes neither killed nor paused."""
        return [n for n, node in self.nodes.items() if not node.killed and not node.paused]

    def connected(self, a: str, b: str) -> bool:
        """``a`` and ``b`` hold a connection (always, without ``connect_delay``)."""
        return self.connect_delay is None or frozenset((a, b)) in self._links

    def observe_member(self, observer: str, member: str, state: State) -> None:
        """Called on every state change any node sees (hooks in :attr:`observers`)."""
        for hook in self.observers:
            hook(observer, member, state)

    def observe_payload(self, observer: str, payload: Payload) -> None:
        """Called on every payload delivery (hooks in :attr:`payload_observers`)."""
        for hook in self.payload_observers:
            hook(observer, payload)

    # -- internals -------------------------------------------------------------

    def _send(self, sender: SimNode, to: str, message: Message) -> None:
        sender.sent += 1
        self.messages += 1
        target = self.nodes.get(to)
        if target is None or self._rng.random() < self.loss or self._cut(sender.name, to):
            return
        delay = self.latency + self._rng.random() * self.jitter
        if self.wire:
            message = decode_message(encode_message(message))
        if target.killed:
            if target.refuses:
                self._push(self.now + 2 * delay, _REFUSED, (sender.name, to))
            return
        if not self.connected(sender.name, to):
            pending = self._pending.get((sender.name, to))
            if pending is None:
                self._pending[(sender.name, to)] = pending = []
                when = self.now + cast(float, self.connect_delay)
                self._push(when, _CONNECTED, (sender.name, to))
            pending.append(message)
            return
        self._push(self.now + delay, _DELIVER, (sender.name, to, message))

    def _cut(self, a: str, b: str) -> bool:
        groups = self._groups
        return bool(groups) and groups.get(a, -1) != groups.get(b, -1)

    def _step(self) -> None:
        when, _, kind, data = heapq.heappop(self._events)
        self.now = when
        if kind == _WAKE:
            node = self.nodes[str(data)]
            if node.wake_at != when or node.paused or node.killed:
                return
            node.wake_at = math.inf
            node.membership.tick(when)
            self._reschedule(node)
        elif callable(data):
            data()
        elif kind == _CONNECTED:
            self._connect(*cast(tuple[str, str], data))
        elif kind == _DELIVER:
            sender, to, message = cast(tuple[str, str, Message], data)
            node = self.nodes[to]
            if node.paused or node.killed or self.nodes[sender].paused:
                return
            node.received += 1
            node.membership.receive(when, sender, message)
            self._reschedule(node)
        else:
            sender, to = cast(tuple[str, str], data)
            node = self.nodes[sender]
            if not node.paused and not node.killed:
                node.membership.connection_refused(when, to)
                self._reschedule(node)

    def _connect(self, name: str, to: str) -> None:
        queued = self._pending.pop((name, to), [])
        node, target = self.nodes[name], self.nodes[to]
        if node.killed or node.paused or target.killed or target.paused or self._cut(name, to):
            return  # a connection attempt that never completes; queued messages are lost
        self._links.add(frozenset((name, to)))
        node.membership.connected(self.now, to)
        self._reschedule(node)
        for message in queued:
            self._push(self.now + self.latency, _DELIVER, (name, to, message))

    def _reschedule(self, node: SimNode) -> None:
        deadline = node.membership.next_deadline()
        if deadline < node.wake_at:
            node.wake_at = deadline
            self._push(deadline, _WAKE, node.name)

    def _push(self, when: float, kind: int, data: object) -> None:
        self._count += 1
        heapq.heappush(self._events, (when, self._count, kind, data))
