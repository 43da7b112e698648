"""The workload of :mod:`bench.balance`, and what an ideal router would make of it.

A workload is a list of ``sleep`` durations with open-loop Poisson arrival
times, both fixed by a seed. :func:`simulate` replays it through the same
routing rules with exact queue lengths and no overhead (no network, no CPU
contention, no card lag): the result shows how much of a measured tail is
the workload itself, and how far each strategy could get on it. A p99 of a
few hundred tasks hinges on how the router's coin flips happen to place the
longest tasks, so :func:`ideal` reports the median over many router seeds.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

from bench._common import percentile

__all__ = ["ModelResult", "Workload", "ideal", "make_workload", "simulate"]


@dataclass(frozen=True)
class Workload:
    """Task durations and their arrival times, in seconds from the start.

    Attributes:
        seed: What fixed both.
        durations: Each task's ``sleep`` seconds, in arrival order.
        arrivals: Each task's arrival, seconds from the start, increasing.
        rate: Arrivals per second.
    """

    seed: int
    durations: tuple[float, ...]
    arrivals: tuple[float, ...]
    rate: float

    def stats(self) -> dict[str, float]:
        """Mean, p50, p99 and max duration in ms, and the arrival span in s."""
        ordered = sorted(self.durations)
        return {
            "mean_ms": 1000 * statistics.fmean(ordered),
            "p50_ms": 1000 * percentile(ordered, 0.50),
            "p99_ms": 1000 * percentile(ordered, 0.99),
            "max_ms": 1000 * ordered[-1],
            "span_s": self.arrivals[-1],
        }

    def offered(self, slots: int) -> float:
        """Work offered per execution slot over the arrival span."""
        return sum(self.durations) / (slots * self.arrivals[-1])


def make_workload(
    *,
    tasks: int,
    mean_s: float,
    sigma: float,
    cap_s: float,
    utilisation: float,
    slots: int,
    seed: int,
) -> Workload:
    """``tasks`` lognormal durations (mean ``mean_s`` before the cap) and Poisson arrivals.

    The arrival rate is ``utilisation * slots`` divided by the sample's mean
    duration (after the cap), so the offered load is ``utilisation``.
    """
    sizes = random.Random(f"{seed}/durations")
    gaps = random.Random(f"{seed}/arrivals")
    mu = math.log(mean_s) - sigma**2 / 2
    durations = tuple(round(min(sizes.lognormvariate(mu, sigma), cap_s), 4) for _ in range(tasks))
    rate = utilisation * slots / statistics.fmean(durations)
    arrivals: list[float] = []
    at = 0.0
    for _ in durations:
        at += gaps.expovariate(rate)
        arrivals.append(at)
    return Workload(seed, durations, tuple(arrivals), rate)


@dataclass(frozen=True)
class ModelResult:
    """Percentiles (ms) an ideal router with ``strategy`` reaches on a workload.

    Attributes:
        p99_spread_ms: The 10th and 90th percentile of ``p99_ms`` over router
            seeds (both equal to ``p99_ms`` for one seed).
    """

    strategy: str
    p50_ms: float
    p99_ms: float
    wait_p99_ms: float
    p99_spread_ms: tuple[float, float] = (math.nan, math.nan)


def simulate(
    workload: Workload, strategy: str, workers: int, slots: int, seed: int = 0
) -> ModelResult:
    """Replay ``workload`` on ``workers`` FIFO workers with ``slots`` slots each.

    ``strategy`` is ``p2c`` (the less loaded of two distinct random workers,
    ties at random), ``round_robin`` or ``random``; load is the exact number
    of tasks queued and running on a worker when a task arrives.
    """
    rng = random.Random(seed)
    free = [[0.0] * slots for _ in range(workers)]  # when each slot is next free
    ends: list[list[float]] = [[] for _ in range(workers)]
    completions, waits = [], []
    for turn, (at, seconds) in enumerate(zip(workload.arrivals, workload.durations, strict=True)):
        if strategy == "round_robin":
            chosen = turn % workers
        elif strategy == "random" or workers == 1:
            chosen = rng.randrange(workers)
        else:
            first, second = rng.sample(range(workers), 2)
            ends[first] = [end for end in ends[first] if end > at]
            ends[second] = [end for end in ends[second] if end > at]
            pair = ((len(ends[first]), rng.random()), (len(ends[second]), rng.random()))
            chosen = first if pair[0] < pair[1] else second
        slot = min(range(slots), key=lambda k: free[chosen][k])
        end = max(at, free[chosen][slot]) + seconds
        free[chosen][slot] = end
        ends[chosen].append(end)
        completions.append(1000 * (end - at))
        waits.append(1000 * (end - at - seconds))
    completions.sort()
    waits.sort()
    p99 = percentile(completions, 0.99)
    return ModelResult(
        strategy, percentile(completions, 0.50), p99, percentile(waits, 0.99), (p99, p99)
    )


def ideal(
    workload: Workload, strategy: str, workers: int, slots: int, runs: int = 31
) -> ModelResult:
    """:func:`simulate` with ``runs`` router seeds: medians, and the spread of the p99."""
    results = [simulate(workload, strategy, workers, slots, seed) for seed in range(runs)]
    p99s = sorted(r.p99_ms for r in results)
    return ModelResult(
        strategy,
        statistics.median(r.p50_ms for r in results),
        statistics.median(p99s),
        statistics.median(r.wait_p99_ms for r in results),
        (percentile(p99s, 0.10), percentile(p99s, 0.90)),
    )
