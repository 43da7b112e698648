"""How fast cards spread through a local mesh of real praxis nodes, and what a node costs.

Usage::

    .venv/bin/python -m bench.mesh_propagation [--nodes 5,10,20] [--trials N]
        [--interval SECONDS] [--timeout SECONDS] [--launch-timeout SECONDS]
        [--settle SECONDS] [--seed S] [--keep] [--json] [--json-out PATH]

For each mesh size N, in one run: N-1 ``praxis node`` processes are started
with :class:`praxis_grpc.launcher.LocalMesh` (node1 first, the rest bootstrap
from node1 over libp2p on 127.0.0.1, ephemeral ports) and the run waits until
every node lists N-1 cards. Then, in order:

1. **join**: node N is spawned, bootstrapping from node1. Measured from the
   spawn, and from its ready file (written once it serves), until every other
   node lists its card.
2. **RSS** of every node once all N nodes list N cards, after a quiet
   ``--settle`` window in which the mesh's idle CPU is measured too.
3. **change propagation**: ``Drain`` on a random node other than node1, then
   ``Drain(resume=True)``, ``--trials`` times each; measured until every other
   node's ``ListCards`` shows the new ``draining`` flag.
4. **failure detection**: SIGKILL a random node other than node1; measured
   until no other node lists it.
5. **silent failure**: SIGSTOP another node other than node1 (its sockets stay
   open, so only probes can find it); measured until no other node lists it,
   then it is killed.

Nodes run the default ``cards`` and ``p2p`` settings; the base config only sets
``tools.builtins: [echo]`` and ``metrics.enabled: true``. Every observation is
a ``ListCards`` poll from this process: one ``grpc.aio`` coroutine per node,
each calling every ``--interval`` seconds (staggered), so a time is when the
first matching response arrived and the resolution is about one interval plus
one call. Every wait is bounded by ``--timeout`` and reported as ``timeout``.
Run it by hand; tests never run it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import psutil

from bench._cluster import describe_problems, log_problems, problems_since, spawn
from bench._common import (
    add_json_out,
    busy_seconds,
    command_line,
    cpu_seconds,
    header,
    int_list,
    interrupts_deferred,
    machine,
    positive_int,
    positive_seconds,
    progress,
    run_main,
    write_json,
)
from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    card_service_pb2,
    card_service_pb2_grpc,
    types_pb2,
)
from praxis_grpc.launcher import LaunchError, LocalMesh, NodeProcess

if TYPE_CHECKING:
    from praxis_grpc._gen.praxis.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from praxis_grpc._gen.praxis.v1.card_service_pb2_grpc import CardServiceAsyncStub

# Default cards and p2p settings: the targets are "at default settings".
BASE_CONFIG: dict[str, Any] = {"tools": {"builtins": ["echo"]}, "metrics": {"enabled": True}}

TARGET_NODES = 20
TARGET_CHANGE_MEDIAN_S = 0.5
TARGET_JOIN_S = 1.5
TARGET_DEAD_S = 3.0
TARGET_RSS_MB = 150.0

# Unmeasured waits (convergence before a phase) poll more gently.
_CONVERGE_INTERVAL = 0.1
_RPC_TIMEOUT = 2.0
_READY_POLL = 0.005

Cards = Sequence[types_pb2.AgentCard]
Check = Callable[[Cards], bool]
# Seconds from the phase start until a node's check first held; None: timeout.
FirstSeen = dict[str, float | None]


@dataclass
class MeshResult:
    """Everything measured for one mesh size; None means the wait timed out."""

    nodes: int
    error: str | None = None
    load_before: float | None = None
    launch_s: float | None = None
    converge_s: float | None = None
    converged_all_s: float | None = None
    join_node: str = ""
    spawn_to_ready_s: float | None = None
    join_visible_s: float | None = None
    join_visible_from_ready_s: float | None = None
    join_new_node_sees_all_s: float | None = None
    join_first_seen_s: FirstSeen = field(default_factory=dict)
    idle_cpu_pct: float | None = None
    other_cpu_pct: float | None = None
    other_cpu_run_pct: float | None = None
    rss_mb: dict[str, float] = field(default_factory=dict)
    rss_median_mb: float | None = None
    rss_max_mb: float | None = None
    change_node: str = ""
    drain_s: list[float | None] = field(default_factory=list)
    resume_s: list[float | None] = field(default_factory=list)
    change_median_s: float | None = None
    change_max_s: float | None = None
    dead_node: str = ""
    pre_kill_converged_s: float | None = None
    dead_listed_before: int | None = None
    dead_removed_s: float | None = None
    dead_first_seen_s: FirstSeen = field(default_factory=dict)
    stopped_node: str = ""
    stopped_removed_s: float | None = None
    stopped_first_seen_s: FirstSeen = field(default_factory=dict)
    poll_calls: int = 0
    poll_errors: int = 0
    poll_error_sample: str = ""
    poll_call_mean_ms: float | None = None
    poll_rate_per_s: float | None = None
    poller_cpu_pct: float | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)
    log_problems_run: dict[str, int] = field(default_factory=dict)
    log_problems_shutdown: dict[str, int] = field(default_factory=dict)

    def finish(self) -> None:
        """Fill in the summary fields from the raw ones."""
        changes = [*self.drain_s, *self.resume_s]
        if changes:
            self.change_median_s = _finite(statistics.median(_inf(v) for v in changes))
            self.change_max_s = _finite(max(_inf(v) for v in changes))
        if self.rss_mb:
            self.rss_median_mb = statistics.median(self.rss_mb.values())
            self.rss_max_mb = max(self.rss_mb.values())

    @property
    def timed_out(self) -> bool:
        """Whether any measured wait timed out."""
        measured = [
            self.join_visible_s,
            self.change_max_s,
            self.dead_removed_s,
        ]
        return any(value is None for value in measured)


def _inf(value: float | None) -> float:
    return math.inf if value is None else value


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


class Poller:
    """``ListCards`` (and ``Drain``) on many nodes from one event loop, one coroutine each."""

    def __init__(self, interval: float, rpc_timeout: float = _RPC_TIMEOUT) -> None:
        self.interval = interval
        self.rpc_timeout = rpc_timeout
        self.calls = 0
        self.errors = 0
        self.error_sample = ""
        self.call_seconds = 0.0
        # Measured polling only (not the gentler convergence waits): wall, own CPU, calls.
        self.measured_wall = 0.0
        self.measured_cpu = 0.0
        self.measured_calls = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._cards: dict[str, CardServiceAsyncStub] = {}
        self._agents: dict[str, AgentServiceAsyncStub] = {}

    async def add(self, name: str, target: str) -> None:
        """Open a channel to ``target`` and connect it, so no poll pays for the connect."""
        channel = grpc.aio.insecure_channel(target)
        self._channels[name] = channel
        self._cards[name] = card_service_pb2_grpc.CardServiceStub(channel)
        self._agents[name] = agent_service_pb2_grpc.AgentServiceStub(channel)
        await asyncio.wait_for(channel.channel_ready(), self.rpc_timeout)

    async def remove(self, name: str) -> None:
        """Stop talking to ``name``."""
        self._cards.pop(name, None)
        self._agents.pop(name, None)
        channel = self._channels.pop(name, None)
        if channel is not None:
            await channel.close(grace=None)

    async def aclose(self) -> None:
        """Close every channel."""
        for name in list(self._channels):
            await self.remove(name)

    async def list_cards(self, name: str) -> list[types_pb2.AgentCard] | None:
        """The cards ``name`` lists; None if the call failed (counted)."""
        self.calls += 1
        sent = time.monotonic()
        try:
            response = await self._cards[name].ListCards(
                card_service_pb2.ListCardsRequest(), timeout=self.rpc_timeout
            )
        except grpc.aio.AioRpcError as exc:
            self.errors += 1
            self.error_sample = f"{name}: {exc.code().name}: {exc.details()}"
            return None
        finally:
            self.call_seconds += time.monotonic() - sent
        return list(response.cards)

    async def drain(self, name: str, resume: bool) -> None:
        """Enter (or with ``resume`` leave) drain mode on ``name``."""
        await self._agents[name].Drain(
            agent_service_pb2.DrainRequest(resume=resume), timeout=self.rpc_timeout
        )

    async def until(
        self,
        checks: Mapping[str, Check],
        start: float,
        within: float,
        interval: float | None = None,
    ) -> FirstSeen:
        """Poll each node until its check holds, for at most ``within`` s after ``start``.

        Returns seconds from ``start`` per node (None: it never held).

        Each node has its own coroutine, so a slow node does not delay the
        others; their first calls are staggered across one interval.
        """
        every = self.interval if interval is None else interval
        deadline = start + within
        names = list(checks)

        async def watch(index: int, name: str) -> float | None:
            await asyncio.sleep(every * index / max(len(names), 1))
            tick = time.monotonic()
            while True:
                cards = await self.list_cards(name)
                now = time.monotonic()
                if cards is not None and checks[name](cards):
                    return now - start
                if now >= deadline:
                    return None
                tick = max(tick + every, now)
                await asyncio.sleep(tick - now)

        calls, cpu, wall = self.calls, time.process_time(), time.monotonic()
        seen = await asyncio.gather(*(watch(i, name) for i, name in enumerate(names)))
        if interval is None:
            self.measured_calls += self.calls - calls
            self.measured_cpu += time.process_time() - cpu
            self.measured_wall += time.monotonic() - wall
        return dict(zip(names, seen, strict=True))


def names_are(expected: set[str]) -> Check:
    """A node lists exactly the cards named ``expected``."""
    return lambda cards: {card.name for card in cards} == expected


def lists(name: str) -> Check:
    """A node lists ``name``."""
    return lambda cards: any(card.name == name for card in cards)


def does_not_list(name: str) -> Check:
    """A node no longer lists ``name``."""
    return lambda cards: all(card.name != name for card in cards)


def shows_draining(name: str, draining: bool) -> Check:
    """A node lists ``name`` with ``draining`` set as given."""
    return lambda cards: any(card.name == name and card.draining == draining for card in cards)


def slowest(seen: FirstSeen) -> float | None:
    """The time every node saw it (None if any timed out or none polled)."""
    values = list(seen.values())
    if not values or any(value is None for value in values):
        return None
    return max(value for value in values if value is not None)


def spawn_node(mesh: LocalMesh, index: int, bootstrap: Sequence[str]) -> NodeProcess:
    """Spawn one more node into ``mesh`` the way ``LocalMesh`` does (no readiness wait)."""
    with interrupts_deferred():
        node = spawn(mesh.root, f"node{index}", mesh.base or {}, bootstrap)
        mesh.nodes.append(node)
    return node


async def wait_ready_file(node: NodeProcess, spawned_wall: float, within: float) -> float | None:
    """Seconds from spawn until ``node`` wrote its ready file (from the file's mtime)."""
    deadline = time.monotonic() + within
    while not node.ready_file.exists():
        if node.process.poll() is not None:
            raise LaunchError(f"node {node.name} exited with code {node.process.returncode}")
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(_READY_POLL)
    node.info = json.loads(node.ready_file.read_text())
    return node.ready_file.stat().st_mtime - spawned_wall


class CpuLedger:
    """CPU used by processes other than the nodes and this one, over a whole mesh run."""

    def __init__(self, pids: Iterable[int]) -> None:
        self._start = {pid: cpu_seconds([pid]) for pid in pids}
        self._last = dict(self._start)
        self._busy, self._own, self._wall = busy_seconds(), time.process_time(), time.monotonic()

    def add(self, pid: int) -> None:
        """A node spawned now (it has used no CPU before)."""
        self._start[pid] = self._last[pid] = 0.0

    def sample(self, pid: int) -> None:
        """Record ``pid``'s CPU so far (call it before killing the process)."""
        self._last[pid] = cpu_seconds([pid])

    def other_pct(self) -> float:
        """Other processes' CPU since construction, in % of one core."""
        for pid in self._last:
            with contextlib.suppress(psutil.Error):
                self.sample(pid)
        ours = sum(self._last.values()) - sum(self._start.values())
        ours += time.process_time() - self._own
        wall = time.monotonic() - self._wall
        return max(100.0 * (busy_seconds() - self._busy - ours) / wall, 0.0)


async def measure(
    mesh: LocalMesh, result: MeshResult, args: argparse.Namespace, rng: random.Random
) -> None:
    """Run the four phases on a started mesh of N-1 nodes, filling in ``result``."""
    count = result.nodes
    timeout = args.timeout
    poller = Poller(args.interval)
    ledger = CpuLedger(node.pid for node in mesh.nodes)
    try:
        for node in mesh.nodes:
            await poller.add(node.name, node.grpc)
        old = [node.name for node in mesh.nodes]

        # Before: the first N-1 nodes converge.
        start = time.monotonic()
        seen = await poller.until(
            {name: names_are(set(old)) for name in old}, start, timeout, _CONVERGE_INTERVAL
        )
        result.converge_s = slowest(seen)
        progress(f"N={count}: {count - 1} nodes converged in {_fmt(result.converge_s)} s")
        await asyncio.sleep(args.settle)

        # 1. Join.
        seeds = list(mesh.nodes[0].info.get("p2p", []))[:1]
        everyone = {*old, f"node{count}"}
        wall, start = time.time(), time.monotonic()
        joiner = spawn_node(mesh, count, seeds)
        ledger.add(joiner.pid)
        result.join_node = joiner.name

        async def joiner_view() -> tuple[float | None, float | None]:
            ready = await wait_ready_file(joiner, wall, timeout)
            if ready is None:
                return None, None
            await poller.add(joiner.name, joiner.grpc)
            full = await poller.until(
                {joiner.name: names_are(everyone)}, start, timeout - (time.monotonic() - start)
            )
            return ready, full[joiner.name]

        elsewhere = poller.until({name: lists(joiner.name) for name in old}, start, timeout)
        first_seen, (ready, sees_all) = await asyncio.gather(elsewhere, joiner_view())
        result.join_first_seen_s = first_seen
        result.join_visible_s = slowest(first_seen)
        result.spawn_to_ready_s = ready
        result.join_new_node_sees_all_s = sees_all
        if result.join_visible_s is not None and ready is not None:
            result.join_visible_from_ready_s = result.join_visible_s - ready
        if ready is None:
            raise LaunchError(f"{joiner.name} not ready after {timeout:g}s")
        progress(
            f"N={count}: {joiner.name} ready {_fmt(ready)} s after spawn; visible everywhere "
            f"{_fmt(result.join_visible_s)} s after spawn ({_spread(first_seen)}); "
            f"it lists all {count} after {_fmt(sees_all)} s"
        )

        # 2. Idle CPU and RSS once all N nodes converged.
        names = [node.name for node in mesh.nodes]
        start = time.monotonic()
        seen = await poller.until(
            {name: names_are(everyone) for name in names}, start, timeout, _CONVERGE_INTERVAL
        )
        result.converged_all_s = slowest(seen)
        if result.converged_all_s is None:
            progress(f"N={count}: not every node lists all {count} cards; measuring anyway")
        pids = [node.pid for node in mesh.nodes]
        cpu_before, clock_before = cpu_seconds(pids), time.monotonic()
        busy_before, own_before = busy_seconds(), time.process_time()
        await asyncio.sleep(args.settle)
        cpu = cpu_seconds(pids) - cpu_before
        window = time.monotonic() - clock_before
        others = busy_seconds() - busy_before - cpu - (time.process_time() - own_before)
        result.idle_cpu_pct = 100.0 * cpu / window
        result.other_cpu_pct = max(100.0 * others / window, 0.0)
        result.rss_mb = {
            node.name: psutil.Process(node.pid).memory_info().rss / 2**20 for node in mesh.nodes
        }
        progress(
            f"N={count}: idle mesh CPU {result.idle_cpu_pct:.0f}% of one core (other processes "
            f"{result.other_cpu_pct:.0f}%); RSS per node "
            f"median {statistics.median(result.rss_mb.values()):.0f} MB, "
            f"max {max(result.rss_mb.values()):.0f} MB"
        )

        # 3. Change propagation: drain, then resume, --trials times.
        target = rng.choice(names[1:])
        result.change_node = target
        watchers = [name for name in names if name != target]
        for trial in range(1, args.trials + 1):
            for resume in (False, True):
                await asyncio.sleep(rng.uniform(0.2, 0.8))  # off the heartbeat's beat
                checks = {name: shows_draining(target, not resume) for name in watchers}
                start = time.monotonic()
                _, seen = await asyncio.gather(
                    poller.drain(target, resume), poller.until(checks, start, timeout)
                )
                elapsed = slowest(seen)
                (result.resume_s if resume else result.drain_s).append(elapsed)
                progress(
                    f"N={count}: trial {trial} {'resume' if resume else 'drain'} of {target}: "
                    f"everywhere after {_fmt(elapsed)} s ({_spread(seen)})"
                )

        # 4. Failure detection.
        victim_name = rng.choice(names[1:])
        victim = next(node for node in mesh.nodes if node.name == victim_name)
        result.dead_node = victim.name
        survivors = [name for name in names if name != victim.name]
        start = time.monotonic()
        seen = await poller.until(
            {name: names_are(everyone) for name in names}, start, timeout, _CONVERGE_INTERVAL
        )
        result.pre_kill_converged_s = slowest(seen)
        await poller.remove(victim.name)
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        # Only survivors that list the victim at the kill can show its removal.
        views = await asyncio.gather(*(poller.list_cards(name) for name in survivors))
        knew = [
            name
            for name, cards in zip(survivors, views, strict=True)
            if cards is not None and lists(victim.name)(cards)
        ]
        result.dead_listed_before = len(knew)
        checks = {name: does_not_list(victim.name) for name in knew}
        start = time.monotonic()
        ledger.sample(victim.pid)
        victim.process.kill()
        seen = await poller.until(checks, start, timeout)
        victim.process.wait(timeout=10)
        result.dead_first_seen_s = seen
        result.dead_removed_s = slowest(seen) if knew else None
        progress(
            f"N={count}: SIGKILL {victim.name}: removed everywhere after "
            f"{_fmt(result.dead_removed_s)} s ({_spread(seen)}); "
            f"{result.dead_listed_before} of {len(survivors)} listed it at the kill"
        )
        stoppable = [name for name in survivors if name != names[0]]
        await stop_one(mesh, poller, result, stoppable, rng, timeout)
    finally:
        result.other_cpu_run_pct = ledger.other_pct()
        result.poll_calls, result.poll_errors = poller.calls, poller.errors
        result.poll_error_sample = poller.error_sample
        if poller.calls:
            result.poll_call_mean_ms = 1000.0 * poller.call_seconds / poller.calls
        if poller.measured_wall > 0:
            result.poll_rate_per_s = poller.measured_calls / poller.measured_wall
            result.poller_cpu_pct = 100.0 * poller.measured_cpu / poller.measured_wall
        await poller.aclose()


async def stop_one(
    mesh: LocalMesh,
    poller: Poller,
    result: MeshResult,
    candidates: list[str],
    rng: random.Random,
    bound: float,
) -> None:
    """Phase 5: SIGSTOP one of ``candidates``; time until no other node lists it."""
    if not candidates:
        return
    chosen = rng.choice(candidates)  # once: inside the generator it redrew per node
    victim = next(node for node in mesh.nodes if node.name == chosen)
    result.stopped_node = victim.name
    watchers = [n.name for n in mesh.nodes if n.process.poll() is None and n is not victim]
    await poller.remove(victim.name)
    await asyncio.sleep(rng.uniform(0.2, 0.8))
    start = time.monotonic()
    victim.process.send_signal(signal.SIGSTOP)
    try:
        seen = await poller.until(
            {name: does_not_list(victim.name) for name in watchers}, start, bound
        )
    finally:
        victim.process.kill()
        victim.process.wait(timeout=10)
    result.stopped_first_seen_s = seen
    result.stopped_removed_s = slowest(seen)
    progress(
        f"N={result.nodes}: SIGSTOP {victim.name}: removed everywhere after "
        f"{_fmt(result.stopped_removed_s)} s ({_spread(seen)})"
    )


def run_mesh(count: int, root: Path, args: argparse.Namespace, rng: random.Random) -> MeshResult:
    """Start N-1 nodes, measure, stop every node; errors end up in the result."""
    result = MeshResult(nodes=count, load_before=os.getloadavg()[0])
    mesh = LocalMesh(root / f"n{count}", count - 1, BASE_CONFIG)
    try:
        started = time.monotonic()
        mesh.start(timeout=args.launch_timeout)
        result.launch_s = time.monotonic() - started
        progress(f"N={count}: {count - 1} nodes ready in {result.launch_s:.1f} s")
        asyncio.run(measure(mesh, result, args, rng))
    except (LaunchError, OSError, grpc.RpcError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        progress(f"N={count}: {result.error}")
    finally:
        result.log_problems_run = log_problems(mesh.nodes)
        result.exit_codes = mesh.stop()
        after = log_problems(mesh.nodes)
        result.log_problems_shutdown = problems_since(result.log_problems_run, after)
    result.finish()
    return result


def _dead(r: MeshResult, unit: str = "") -> str:
    if r.dead_listed_before == 0:
        return "n/a (no survivor listed it)"
    return _fmt(r.dead_removed_s) + _unit(r.dead_removed_s, unit)


def _unit(value: float | None, unit: str) -> str:
    return "" if value is None else unit


def _fmt(value: float | None, digits: int = 2, missing: str = "timeout") -> str:
    return missing if value is None else f"{value:.{digits}f}"


def _spread(seen: FirstSeen) -> str:
    values = sorted(_inf(value) for value in seen.values())
    if not values:
        return "no other node"
    low, mid, high = values[0], statistics.median(values), values[-1]
    return "per node min/median/max " + "/".join(_fmt(_finite(v)) for v in (low, mid, high))


def markdown(results: Sequence[MeshResult]) -> str:
    """The results table, one row per mesh size."""
    lines = [
        "| N | spawn → ready s | join visible everywhere s (from spawn) | (from ready) "
        "| change propagation median s | max s | dead node removed everywhere s "
        "| stopped node removed everywhere s | RSS median MB | RSS max MB "
        "| idle mesh CPU % of a core | other processes CPU % of a core |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error is not None and r.launch_s is None:
            lines.append(f"| {r.nodes} | error: {r.error} |||||||||||")
            continue
        idle, other = _fmt(r.idle_cpu_pct, 0, "n/a"), _fmt(r.other_cpu_run_pct, 0, "n/a")
        lines.append(
            f"| {r.nodes} | {_fmt(r.spawn_to_ready_s)} | {_fmt(r.join_visible_s)} "
            f"| {_fmt(r.join_visible_from_ready_s)} | {_fmt(r.change_median_s)} "
            f"| {_fmt(r.change_max_s)} | {_dead(r)} | {_fmt(r.stopped_removed_s)} "
            f"| {_fmt(r.rss_median_mb, 0)} | {_fmt(r.rss_max_mb, 0)} | {idle} | {other} |"
        )
    return "\n".join(lines)


def polling_table(results: Sequence[MeshResult]) -> str:
    """What the observation itself cost, while measuring (convergence waits excluded)."""
    lines = [
        "| N | ListCards calls/s | mean call ms | poller process CPU % of a core | failed calls |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.nodes} | {_fmt(r.poll_rate_per_s, 0, 'n/a')} "
        f"| {_fmt(r.poll_call_mean_ms, 2, 'n/a')} "
        f"| {_fmt(r.poller_cpu_pct, 0, 'n/a')} | {r.poll_errors} of {r.poll_calls} |"
        for r in results
    )
    return "\n".join(lines)


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "no (timeout)"
    return "yes" if value < limit else "no"


def targets_table(results: Sequence[MeshResult]) -> str:
    """Each target, what was measured against it and whether it is met."""
    measured = [r for r in results if r.launch_s is not None]
    if not measured:
        return "(no mesh started; no targets to compare)"
    at = next(
        (r for r in measured if r.nodes == TARGET_NODES), max(measured, key=lambda r: r.nodes)
    )
    killed = [r for r in measured if r.dead_listed_before] or measured
    worst_dead = max(killed, key=lambda r: _inf(r.dead_removed_s))
    worst_rss = max(measured, key=lambda r: r.rss_max_mb or 0.0)
    dead = _dead(worst_dead, " s")
    rows: list[tuple[str, str, str, float | None, float]] = [
        # (target, limit, measured, value, limit value)
        (
            f"median change propagation at N={at.nodes}",
            f"< {TARGET_CHANGE_MEDIAN_S} s",
            _fmt(at.change_median_s) + _unit(at.change_median_s, " s"),
            at.change_median_s,
            TARGET_CHANGE_MEDIAN_S,
        ),
        (
            f"new node visible everywhere at N={at.nodes}, from spawn",
            f"< {TARGET_JOIN_S} s",
            _fmt(at.join_visible_s) + _unit(at.join_visible_s, " s"),
            at.join_visible_s,
            TARGET_JOIN_S,
        ),
        (
            f"new node visible everywhere at N={at.nodes}, from ready",
            f"< {TARGET_JOIN_S} s",
            _fmt(at.join_visible_from_ready_s) + _unit(at.join_visible_from_ready_s, " s"),
            at.join_visible_from_ready_s,
            TARGET_JOIN_S,
        ),
        (
            f"dead node removed everywhere, worst N (N={worst_dead.nodes})",
            f"< {TARGET_DEAD_S} s",
            dead,
            worst_dead.dead_removed_s,
            TARGET_DEAD_S,
        ),
        (
            f"RSS per node, max over nodes and N (N={worst_rss.nodes})",
            f"< {TARGET_RSS_MB:.0f} MB",
            _fmt(worst_rss.rss_max_mb, 0) + _unit(worst_rss.rss_max_mb, " MB"),
            worst_rss.rss_max_mb,
            TARGET_RSS_MB,
        ),
    ]
    lines = ["| target | limit | measured | met |", "|---|---:|---:|---|"]
    lines.extend(
        f"| {target} | {limit} | {shown} | {_verdict(value, bound)} |"
        for target, limit, shown, value, bound in rows
    )
    if at.nodes != TARGET_NODES:
        lines.append(f"\nN={TARGET_NODES} was not run; the N={at.nodes} row stands in for it.")
    return "\n".join(lines)


def notes(results: Sequence[MeshResult]) -> str:
    """Errors, poll failures and node-log problems worth a look."""
    lines: list[str] = []
    for r in results:
        parts = []
        if r.error is not None:
            parts.append(f"error: {r.error}")
        # (what, its wait, whether the phase ran)
        waits = (
            ("the first N-1 nodes never all listed N-1 cards", r.converge_s, r.launch_s),
            ("after the join, not every node listed all N cards", r.converged_all_s, r.rss_mb),
            (
                "before the kill, not every node listed all N cards",
                r.pre_kill_converged_s,
                r.dead_node,
            ),
        )
        parts.extend(
            f"{what} within the timeout" for what, value, ran in waits if ran and value is None
        )
        if r.dead_listed_before is not None and r.dead_listed_before < r.nodes - 1:
            parts.append(
                f"only {r.dead_listed_before} of {r.nodes - 1} survivors listed "
                f"{r.dead_node} when it was killed"
            )
        other = max(r.other_cpu_pct or 0.0, r.other_cpu_run_pct or 0.0)
        if other >= 10.0:
            parts.append(
                f"the machine was not quiet: other processes used "
                f"{_fmt(r.other_cpu_run_pct, 0, 'n/a')}% of a core over the measurements, "
                f"{_fmt(r.other_cpu_pct, 0, 'n/a')}% in the idle window"
            )
        if r.poll_errors:
            parts.append(
                f"{r.poll_errors} of {r.poll_calls} polls failed (e.g. {r.poll_error_sample})"
            )
        odd_exits = {name: code for name, code in r.exit_codes.items() if code not in (0, -9)}
        if odd_exits:
            parts.append(f"exit codes after SIGTERM: {odd_exits}")
        for label, problems in (
            ("during the run", r.log_problems_run),
            ("at shutdown", r.log_problems_shutdown),
        ):
            if problems:
                parts.append(f"node logs {label}: {describe_problems(problems)}")
        if parts:
            lines.append(f"- N={r.nodes}: " + "\n  ".join(parts))
    return "\n".join(lines) if lines else "- nothing odd: no errors, failed polls or log warnings"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.mesh_propagation", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--nodes", type=int_list(2, "5,10,20"), default=[5, 10, 20], help="mesh sizes"
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        default=5,
        help="drain and resume pairs per mesh (default: 5)",
    )
    parser.add_argument(
        "--interval", type=positive_seconds, default=0.02, help="seconds between polls of one node"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        help="bound on every measured wait (default: 60)",
    )
    parser.add_argument(
        "--launch-timeout",
        type=positive_seconds,
        default=180.0,
        help="bound on starting the first N-1 nodes (default: 180)",
    )
    parser.add_argument(
        "--settle",
        type=positive_seconds,
        default=2.0,
        help="quiet seconds after convergence, before the join and before RSS (default: 2)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed the node choices")
    parser.add_argument("--keep", action="store_true", help="keep the node directories and logs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    add_json_out(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    info = machine()  # before any node starts: the revision they run
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="praxis-mesh-bench-"))
    results: list[MeshResult] = []
    try:
        for count in args.nodes:
            results.append(run_mesh(count, root, args, rng))
    finally:
        if args.keep:
            progress(f"node directories and logs kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    command = command_line()
    document = {
        "command": command,
        "machine": info,
        "poll_interval_s": args.interval,
        "base_config": BASE_CONFIG,
        "targets": {
            "change_median_s": TARGET_CHANGE_MEDIAN_S,
            "join_visible_s": TARGET_JOIN_S,
            "at_nodes": TARGET_NODES,
            "dead_removed_s": TARGET_DEAD_S,
            "rss_mb": TARGET_RSS_MB,
        },
        "results": [dataclasses.asdict(result) for result in results],
    }
    write_json(args.json_out, document)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(header(info, command))
        print(
            f"polling: ListCards on every node every {args.interval * 1000:g} ms "
            "(one grpc.aio coroutine per node, staggered); resolution is about one interval "
            f"plus one call. Default cards/p2p settings; {args.trials} drain + "
            f"{args.trials} resume changes per N.\n"
        )
        print(markdown(results))
        print("\nPolling cost while measuring:\n")
        print(polling_table(results))
        print("\nTargets:\n")
        print(targets_table(results))
        print("\nNotes:\n")
        print(notes(results))
    failed = any(r.error is not None or r.timed_out for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, "node")
