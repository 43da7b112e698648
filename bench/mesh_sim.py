"""SWIM membership at 10, 100 and 1,000 nodes on a virtual clock (no processes, no sockets).

Usage::

    .venv/bin/python -m bench.mesh_sim [--nodes 10,100,1000] [--loss 0,0.01]
        [--latency SECONDS] [--seed S] [--limit SECONDS] [--json] [--json-out PATH]

Runs the product's state machine (:class:`praxis_grpc.membership.Membership`,
default :class:`~praxis_grpc.membership.MembershipConfig`) in
:class:`praxis_grpc.testing.swim_sim.SwimSimulation`. For each N and loss
rate, on one warm cluster (every node knows every other; with loss > 0 one
node is also paused for the whole run, as the issue asks), in order:

1. **msgs/node/s**: messages sent per node per virtual second over 10 idle seconds.
2. **payload 99% / 100%**: a node publishes a new payload version (a card-change
   notice); virtual seconds until 99% / all other running nodes delivered it.
3. **dead 99% / 100%**: a node is killed silently (SIGSTOP-like host, no refusal);
   seconds until 99% / all others mark it dead. **refused**: the same for a node
   whose peers get a refused connection (a crashed process).
4. **pause detected**: a node is paused; seconds until the first node suspects it
   and until 99% mark it dead; then it resumes.
5. **false dead**: a node is paused for 0.8 x the suspicion timeout; live nodes
   ever marked dead by anyone in the next 60 s (should be 0).

Every wait is bounded by ``--limit`` virtual seconds (``timeout`` in the table).
Wall seconds per N are reported: the N=1,000 warm start alone verifies 10^6
signed claims in pure Python.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from bench._common import (
    add_json_out,
    command_line,
    header,
    int_list,
    machine,
    positive_seconds,
    progress,
    write_json,
)
from bench._common import run_main as run_bench
from praxis_grpc.membership import Payload, State
from praxis_grpc.membership.config import suspicion_timeout
from praxis_grpc.testing.swim_sim import SwimSimulation


class Watch:
    """Counts, per watched member, how many observers reached a state, and when."""

    def __init__(self, sim: SwimSimulation) -> None:
        self.sim = sim
        self.times: dict[tuple[str, State], list[float]] = {}
        self.dead: list[tuple[str, str]] = []
        self.payload_times: list[float] = []
        self.payload_key: tuple[str, str, int] | None = None
        sim.observers.append(self._member)
        sim.payload_observers.append(self._payload)

    def _member(self, observer: str, member: str, state: State) -> None:
        self.times.setdefault((member, state), []).append(self.sim.now)
        if state is State.DEAD:
            self.dead.append((observer, member))

    def _payload(self, observer: str, payload: Payload) -> None:
        if (payload.origin, payload.key, payload.version) == self.payload_key:
            self.payload_times.append(self.sim.now)


def until_count(
    sim: SwimSimulation, times: list[float], need: int, start: float, limit: float
) -> float:
    """Virtual seconds from ``start`` until ``times`` holds ``need`` entries (inf if never)."""
    sim.run_until(lambda: len(times) >= need, limit=max(0.0, start + limit - sim.now))
    return sorted(times)[need - 1] - start if len(times) >= need else math.inf


def measure(n: int, loss: float, latency: float, seed: int, limit: float) -> dict[str, float]:
    wall = time.perf_counter()
    sim = SwimSimulation(seed=seed, latency=latency, jitter=latency, loss=loss)
    sim.add_nodes(n)
    watch = Watch(sim)
    names = list(sim.nodes)
    victims = iter(names[1:])
    if loss > 0:
        sim.pause(next(victims))
    sim.run_for(2.0)
    before = sim.messages
    sim.run_for(10.0)
    result = {"n": n, "loss": loss, "msgs_node_s": (sim.messages - before) / n / 10.0}

    def others() -> int:
        return len(sim.running()) - 1

    origin = next(victims)
    sim.nodes[origin].membership.publish(sim.now, "card", 2, b"card changed")
    watch.payload_key = (origin, "card", 2)
    start, peers, times = sim.now, others(), watch.payload_times
    result["payload_99"] = until_count(sim, times, math.ceil(0.99 * peers), start, limit)
    result["payload_100"] = until_count(sim, times, peers, start, limit)

    for label, refuse in (("dead", False), ("refused", True)):
        victim = next(victims)
        sim.kill(victim, refuse=refuse)
        start, peers = sim.now, others()
        times = watch.times.setdefault((victim, State.DEAD), [])
        result[f"{label}_99"] = until_count(sim, times, math.ceil(0.99 * peers), start, limit)
        result[f"{label}_100"] = until_count(sim, times, peers, start, limit)

    paused = next(victims)
    sim.pause(paused)
    suspects = watch.times.setdefault((paused, State.SUSPECT), [])
    dead = watch.times.setdefault((paused, State.DEAD), [])
    start, peers = sim.now, others()
    result["pause_suspect"] = until_count(sim, suspects, 1, start, limit)
    result["pause_dead_99"] = until_count(sim, dead, math.ceil(0.99 * peers), start, limit)
    sim.resume(paused)
    sim.run_for(5.0)

    brief = next(victims)
    killed = {name for name, node in sim.nodes.items() if node.killed or node.paused} | {paused}
    watch.dead.clear()
    sim.pause(brief)
    sim.run_for(0.8 * suspicion_timeout(sim.config, n))
    sim.resume(brief)
    sim.run_for(60.0)
    result["false_dead"] = len({member for _, member in watch.dead if member not in killed})
    result["wall_s"] = time.perf_counter() - wall
    return result


COLUMNS = (
    ("n", "N", "{:.0f}"),
    ("loss", "loss", "{:.0%}"),
    ("msgs_node_s", "msgs/node/s", "{:.2f}"),
    ("payload_99", "payload 99%", "{:.2f}"),
    ("payload_100", "payload 100%", "{:.2f}"),
    ("dead_99", "dead 99%", "{:.2f}"),
    ("dead_100", "dead 100%", "{:.2f}"),
    ("refused_99", "refused 99%", "{:.2f}"),
    ("pause_suspect", "pause suspected", "{:.2f}"),
    ("pause_dead_99", "pause dead 99%", "{:.2f}"),
    ("false_dead", "false dead", "{:.0f}"),
    ("wall_s", "wall s", "{:.1f}"),
)


def table(rows: list[dict[str, float]]) -> str:
    def cell(value: float, fmt: str) -> str:
        return "timeout" if value == math.inf else fmt.format(value)

    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    lines.extend(
        "| " + " | ".join(cell(row[key], fmt) for key, _, fmt in COLUMNS) + " |" for row in rows
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int_list(3, "10,100,1000"), default=[10, 100, 1000])
    parser.add_argument(
        "--loss", type=lambda t: [float(x) for x in t.split(",")], default=[0.0, 0.01]
    )
    parser.add_argument("--latency", type=positive_seconds, default=0.002)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=positive_seconds, default=120.0)
    parser.add_argument("--json", action="store_true")
    add_json_out(parser)
    args = parser.parse_args()
    if any(not 0 <= loss < 1 for loss in args.loss):
        parser.error("--loss: every value must be in [0, 1)")
    rows = []
    for n in args.nodes:
        for loss in args.loss:
            progress(f"N={n} loss={loss:.0%} ...")
            rows.append(measure(n, loss, args.latency, args.seed, args.limit))
    write_json(args.json_out, rows)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(header(machine(), command_line()))
        print()
        print(table(rows))
    return 0


if __name__ == "__main__":
    run_bench(main)
