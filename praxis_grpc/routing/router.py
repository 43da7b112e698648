"""Choosing the agent that executes a task. Pure: no I/O, no clock of its own.

The router sees every agent through its card (tools, tags, published load,
draining) and corrects the published load with what this node knows better:
its own delegations. A card is published on change and every heartbeat, so
between two cards an agent may have taken many tasks from us; the router
counts the ones it sent since the card was made and subtracts the ones that
the card counted but have finished since (see :class:`LoadLedger`).

Strategies:
    ``p2c``: power of two choices. Two distinct unsaturated candidates are
        drawn at random and the less loaded one wins; this avoids the herd
        behaviour of always picking the global minimum from stale data while
        coming close to its balance.
    ``round_robin`` / ``random``: load-blind, for comparison (bench/).

The local node is a candidate like any other; its load is exact.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from praxis_grpc.cards import AgentCard, CardLoad, ToolInfo
from praxis_grpc.errors import (
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
    quote,
    quote_all,
)

Strategy = Literal["p2c", "round_robin", "random"]

__all__ = ["Candidate", "LoadLedger", "Router", "Strategy"]


@dataclass(frozen=True)
class Candidate:
    """An agent able to run a task, with its estimated load.

    Attributes:
        agent_id: The agent's id.
        name: Its configured name (metrics label).
        local: True for this node.
        address: Its gRPC endpoint ("" for the local node).
        pending: Estimated tasks queued and running there.
        capacity: Its ``max_concurrency``.
        limit: Most tasks it holds (capacity plus queue limit).
        tool: The tool as that agent advertises it.
    """

    agent_id: str
    name: str
    local: bool
    address: str
    pending: int
    capacity: int
    limit: int
    tool: ToolInfo

    @property
    def load(self) -> float:
        """Pending tasks per execution slot."""
        return self.pending / max(self.capacity, 1)

    @property
    def saturated(self) -> bool:
        """True when the agent's queue is (estimated) full."""
        return self.limit > 0 and self.pending >= self.limit


@dataclass
class _AgentLedger:
    """Our tasks at one agent, with counters relative to its latest card.

    ``since``: outstanding tasks sent after ``as_of`` (the card cannot count
    them). ``gone``: tasks sent at or before ``as_of`` (the card counted them)
    that finished after it. Both are kept up to date on every begin/end and
    recomputed only when a newer card arrives, so an estimate costs O(1).
    """

    outstanding: dict[str, datetime] = field(default_factory=dict)
    # (sent, finished) of our tasks that finished after ``as_of``.
    finished: deque[tuple[datetime, datetime]] = field(default_factory=deque)
    as_of: datetime | None = None
    since: int = 0
    gone: int = 0

    def rebase(self, as_of: datetime) -> None:
        self.as_of = as_of
        while self.finished and self.finished[0][1] <= as_of:
            self.finished.popleft()  # the card already reflects this finish
        self.since = sum(1 for sent in self.outstanding.values() if sent > as_of)
        self.gone = sum(1 for sent, _ in self.finished if sent <= as_of)


class LoadLedger:
    """This node's outstanding delegations per agent, to correct card lag.

    ``estimate(agent, card)`` is the card's in-flight plus queued count, plus
    our tasks dispatched after the card was produced and still outstanding,
    minus our tasks the card counted that finished since; never less than our
    own outstanding count. Card timestamps come from the agent's clock, so the
    correction assumes clocks synchronised to well under a heartbeat. Every
    operation is O(1) except the first estimate against a newer card.
    """

    def __init__(self, max_finished: int = 4096) -> None:
        self._agents: dict[str, _AgentLedger] = {}
        self._max_finished = max_finished

    def begin(self, agent_id: str, task_id: str, now: datetime) -> None:
        """A task was sent to ``agent_id``."""
        ledger = self._agents.setdefault(agent_id, _AgentLedger())
        ledger.outstanding[task_id] = now
        if ledger.as_of is not None and now > ledger.as_of:
            ledger.since += 1

    def end(self, agent_id: str, task_id: str, now: datetime) -> None:
        """The task sent to ``agent_id`` finished there (or was refused or lost)."""
        ledger = self._agents.get(agent_id)
        if ledger is None:
            return
        sent = ledger.outstanding.pop(task_id, None)
        if sent is None:
            return
        as_of = ledger.as_of
        if as_of is not None:
            if sent > as_of:
                ledger.since -= 1
            elif now > as_of:
                ledger.gone += 1
        # Kept for later cards too: one made before ``now`` still counts it.
        ledger.finished.append((sent, now))
        if len(ledger.finished) > self._max_finished:
            oldest_sent, oldest_end = ledger.finished.popleft()
            if as_of is not None and oldest_sent <= as_of < oldest_end:
                ledger.gone -= 1
        if not ledger.outstanding and not ledger.finished:
            del self._agents[agent_id]

    def outstanding(self, agent_id: str) -> int:
        """Tasks this node has running or queued at ``agent_id``."""
        ledger = self._agents.get(agent_id)
        return len(ledger.outstanding) if ledger else 0

    def forget(self, agent_id: str) -> None:
        """Drop everything about an agent that left."""
        self._agents.pop(agent_id, None)

    def estimate(self, agent_id: str, load: CardLoad, as_of: datetime) -> int:
        """Estimated pending tasks at ``agent_id`` given its card made at ``as_of``."""
        published = load.in_flight + load.queued
        ledger = self._agents.get(agent_id)
        if ledger is None:
            return published
        if ledger.as_of != as_of:
            ledger.rebase(as_of)
        return max(published + ledger.since - ledger.gone, len(ledger.outstanding))


class Router:
    """Orders the capable agents for a task, best first.

    Args:
        local_agent_id: This node's id.
        cards: Returns the known cards (the local one included).
        local_pending: Returns (pending, capacity, limit) of the local engine.
        strategy: See the module docstring.
        rng: Source of randomness (seed it in tests).
        exclude_self: True while this node is not a candidate (an
            active-passive coordinator coordinates and does not execute:
            :attr:`~praxis_grpc.ha.coordinator.Office.in_office`).
    """

    def __init__(
        self,
        *,
        local_agent_id: str,
        cards: Callable[[], Iterable[AgentCard]],
        local_pending: Callable[[], tuple[int, int, int]],
        strategy: Strategy = "p2c",
        rng: random.Random | None = None,
        exclude_self: Callable[[], bool] = lambda: False,
    ) -> None:
        self._local = local_agent_id
        self._cards = cards
        self._local_pending = local_pending
        self._strategy = strategy
        self._rng = rng or random.Random()  # noqa: S311 - load balancing, not crypto
        self._turn: dict[str, int] = {}
        self.ledger = LoadLedger()
        # An active-passive coordinator coordinates and does not execute.
        self._exclude_self = exclude_self

    @property
    def strategy(self) -> Strategy:
        """The configured strategy."""
        return self._strategy

    def candidates(
        self, tool: str, tags: Sequence[str] = (), exclude: Iterable[str] = ()
    ) -> list[Candidate]:
        """Every agent offering ``tool`` with all ``tags``, not draining, not an
        active-passive coordinator, reachable over gRPC and not in ``exclude``,
        in no particular order.

        Raises:
            FailedPrecondition: no such agent; the message names the tool and
                lists the tools on offer.
        """
        excluded = set(exclude)
        if self._exclude_self():
            excluded.add(self._local)
        found: list[Candidate] = []
        draining: list[str] = []
        wanted = set(tags)
        for card in self._cards():
            info = next((t for t in card.tools if t.name == tool), None)
            if info is None or not wanted <= set(card.tags) or card.agent_id in excluded:
                continue
            if card.role == "coordinator":
                # An active-passive coordinator executes nothing; a card still
                # naming another node so is stale (that node was deposed, or is
                # cut off and has not said it stepped down), and its idle load
                # would draw every placement to a node that may not answer.
                continue
            if card.draining:
                draining.append(card.name)
                continue
            candidate = self._candidate(card, info)
            if candidate is not None:
                found.append(candidate)
        if not found:
            offered = {t.name for card in self._cards() for t in card.tools}
            raise FailedPrecondition(_no_agent(tool, tags, offered, draining, bool(excluded)))
        return found

    def plan(
        self,
        tool: str,
        tags: Sequence[str] = (),
        preferred_agent: str = "",
        exclude: Iterable[str] = (),
        target_agent: str = "",
    ) -> list[Candidate]:
        """The unsaturated capable agents in the order to try them.

        ``preferred_agent`` comes first when it is capable and not saturated.
        With ``target_agent`` the plan is that agent alone (see :meth:`target`).

        Raises:
            FailedPrecondition: no capable agent (see :meth:`candidates`).
            ResourceExhausted: every capable agent is saturated.
        """
        if target_agent:
            return [self.target(tool, tags, target_agent, exclude)]
        found = self.candidates(tool, tags, exclude)
        open_ = [c for c in found if not c.saturated]
        if not open_:
            least = min(found, key=lambda c: c.pending - c.limit)
            raise ResourceExhausted(
                f"every agent offering tool {quote(tool)} is saturated "
                f"({len(found)} agent(s); least loaded {least.name}: "
                f"{least.pending}/{least.limit} tasks)",
                retry_after=_retry_after(found),
            )
        ordered = self._order(tool, open_)
        if preferred_agent:
            preferred = next((c for c in ordered if c.agent_id == preferred_agent), None)
            if preferred is not None:
                ordered.remove(preferred)
                ordered.insert(0, preferred)
        return ordered

    def target(
        self, tool: str, tags: Sequence[str], agent_id: str, exclude: Iterable[str] = ()
    ) -> Candidate:
        """The agent ``agent_id`` as the only place for ``tool``; every error
        names the field ``target_agent``.

        Raises:
            NotFound: no card of that agent is known.
            FailedPrecondition: it does not offer ``tool`` with every tag, is
                draining, coordinates (active-passive), or is in ``exclude``
                (a re-dispatch away from it).
            ResourceExhausted: it is saturated.
            Unavailable: its card gives no address to reach it at.
        """
        card = next((c for c in self._cards() if c.agent_id == agent_id), None)
        if card is None:
            raise NotFound(f"target_agent: no agent {quote(agent_id)} is known to this node")
        name = f"target_agent: agent {card.name} ({agent_id})"
        info = next((t for t in card.tools if t.name == tool), None)
        missing = sorted(set(tags) - set(card.tags))
        if info is None or missing:
            what = f"tool {quote(tool)}" + (f" with tags {quote_all(missing)}" if missing else "")
            offered = ", ".join(sorted(t.name for t in card.tools)) or "none"
            raise FailedPrecondition(f"{name} does not offer {what}; it offers: {offered}")
        if agent_id in set(exclude):
            raise FailedPrecondition(f"{name} is not a candidate here (it was lost)")
        if card.role == "coordinator" or (agent_id == self._local and self._exclude_self()):
            raise FailedPrecondition(f"{name} coordinates and runs no tasks")
        if card.draining:
            raise FailedPrecondition(f"{name} is draining and accepts no new tasks")
        candidate = self._candidate(card, info)
        if candidate is None:
            raise Unavailable(f"{name} publishes no address to reach it at")
        if candidate.saturated:
            raise ResourceExhausted(
                f"{name} is saturated ({candidate.pending}/{candidate.limit} tasks)",
                retry_after=_retry_after([candidate]),
            )
        return candidate

    def _order(self, tool: str, open_: list[Candidate]) -> list[Candidate]:
        if self._strategy == "random":
            self._rng.shuffle(open_)
            return open_
        if self._strategy == "round_robin":
            open_.sort(key=lambda c: c.agent_id)
            turn = self._turn.get(tool, 0)
            self._turn[tool] = turn + 1
            start = turn % len(open_)
            return open_[start:] + open_[:start]
        # p2c: the better of two random picks first, then the rest by load.
        if len(open_) == 1:
            return open_
        first, second = self._rng.sample(open_, 2)
        if (second.load, self._rng.random()) < (first.load, 0.5):
            first, second = second, first
        rest = sorted((c for c in open_ if c is not first and c is not second), key=_by_load)
        return [first, second, *rest]

    def _candidate(self, card: AgentCard, info: ToolInfo) -> Candidate | None:
        if card.agent_id == self._local:
            pending, capacity, limit = self._local_pending()
            return Candidate(card.agent_id, card.name, True, "", pending, capacity, limit, info)
        address = card.peer_address
        if not address:
            return None
        load = card.load
        pending = self.ledger.estimate(card.agent_id, load, card.updated_at)
        limit = load.capacity + load.queue_limit
        return Candidate(
            card.agent_id, card.name, False, address, pending, load.capacity, limit, info
        )


def _by_load(candidate: Candidate) -> tuple[float, str]:
    return (candidate.load, candidate.agent_id)


def _retry_after(found: Sequence[Candidate]) -> float:
    # About the time for the least loaded agent to work off one slot's backlog.
    best = min(found, key=_by_load)
    return min(max(0.1 * best.load, 0.1), 30.0)


def _no_agent(
    tool: str, tags: Sequence[str], offered: set[str], draining: list[str], excluded: bool
) -> str:
    wanted = f"tool {quote(tool)}" + (f" with tags {quote_all(sorted(tags))}" if tags else "")
    if draining:
        return f"no agent can take {wanted}: {', '.join(sorted(draining))} draining"
    if excluded:
        return f"no other agent offers {wanted}"
    on_offer = ", ".join(sorted(offered)) or "none"
    return f"no agent offers {wanted}; tools on offer: {on_offer}"
