"""What :mod:`bench.balance` measured: per-task outcomes, per-run statistics, the tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._cluster import describe_problems
from bench._common import median, percentile

TARGET_P99_GAIN = 0.30
_MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True)
class Outcome:
    """One task as the client saw it, and (from its owner's copy) where its time went.

    Times are seconds. ``sent``/``received`` are wall-clock, like the task
    timestamps on the same machine; the phases are NaN when unknown.
    """

    task_id: str
    duration_s: float
    late_s: float
    completion_s: float
    owner: str
    error: str = ""
    sent: float = math.nan
    received: float = math.nan
    to_worker_s: float = math.nan
    worker_queue_s: float = math.nan
    back_s: float = math.nan


def _pcts(values: Sequence[float], *fractions: float) -> tuple[float, ...]:
    ordered = sorted(1000 * v for v in values if not math.isnan(v))
    return tuple(percentile(ordered, f) for f in fractions)


@dataclass
class StrategyRun:
    """One strategy on one trial's workload (times in ms unless named otherwise)."""

    strategy: str
    trial: int
    seed: int
    tasks: int = 0
    errors: int = 0
    unfinished: int = 0
    error_samples: list[str] = field(default_factory=list)
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    mean_ms: float = math.nan
    wait_p50_ms: float = math.nan
    wait_p99_ms: float = math.nan
    to_worker_ms: tuple[float, ...] = (math.nan, math.nan)
    worker_queue_ms: tuple[float, ...] = (math.nan, math.nan)
    back_ms: tuple[float, ...] = (math.nan, math.nan)
    phases_known: int = 0
    model_p99_ms: float = math.nan
    model_wait_p99_ms: float = math.nan
    model_p99_spread_ms: tuple[float, float] = (math.nan, math.nan)
    max_late_ms: float = math.nan
    max_inflight: int = 0
    elapsed_s: float = math.nan
    tasks_per_worker: dict[str, int] = field(default_factory=dict)
    work_s_per_worker: dict[str, float] = field(default_factory=dict)
    entry_cpu_us_per_task: float = math.nan
    worker_cpu_us_per_task: float = math.nan
    other_cpu_pct: float = math.nan
    error: str | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)
    log_problems_run: dict[str, int] = field(default_factory=dict)
    log_problems_shutdown: dict[str, int] = field(default_factory=dict)

    def fill(self, outcomes: Sequence[Outcome], workers: Sequence[str]) -> None:
        """The statistics of ``outcomes``."""
        done = [o for o in outcomes if not o.error]
        failed = [o.error for o in outcomes if o.error]
        self.tasks, self.errors = len(outcomes), len(failed)
        self.error_samples = list(dict.fromkeys(failed))[:_MAX_ERROR_SAMPLES]
        completions = [o.completion_s for o in done]
        self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms = _pcts(
            completions, 0.50, 0.95, 0.99, 1.0
        )
        self.mean_ms = 1000 * statistics.fmean(completions) if completions else math.nan
        waits = [o.completion_s - o.duration_s for o in done]
        self.wait_p50_ms, self.wait_p99_ms = _pcts(waits, 0.50, 0.99)
        self.to_worker_ms = _pcts([o.to_worker_s for o in done], 0.50, 0.99)
        self.worker_queue_ms = _pcts([o.worker_queue_s for o in done], 0.50, 0.99)
        self.back_ms = _pcts([o.back_s for o in done], 0.50, 0.99)
        self.phases_known = sum(not math.isnan(o.worker_queue_s) for o in done)
        self.max_late_ms = max((o.late_s * 1000 for o in outcomes), default=math.nan)
        self.tasks_per_worker = dict.fromkeys(workers, 0)
        self.work_s_per_worker = dict.fromkeys(workers, 0.0)
        for o in done:
            self.tasks_per_worker[o.owner] = self.tasks_per_worker.get(o.owner, 0) + 1
            work = self.work_s_per_worker.get(o.owner, 0.0) + o.duration_s
            self.work_s_per_worker[o.owner] = work

    @property
    def work_spread(self) -> float:
        """The busiest worker's share of the sleep seconds over an even share (1.0: even)."""
        work = list(self.work_s_per_worker.values())
        total = sum(work)
        return max(work) * len(work) / total if total else math.nan


@dataclass(frozen=True)
class Summary:
    """Medians over trials for one strategy (tasks and errors summed)."""

    strategy: str
    trials: int
    tasks: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    wait_p50_ms: float
    wait_p99_ms: float
    model_p99_ms: float
    model_p99_spread_ms: tuple[float, float]
    work_spread: float
    entry_cpu_us_per_task: float
    to_worker_ms: tuple[float, float]
    worker_queue_ms: tuple[float, float]
    back_ms: tuple[float, float]


def summarize(runs: Sequence[StrategyRun], strategies: Sequence[str]) -> list[Summary]:
    """One row per strategy, medians over the trials that ran."""
    rows = []
    for strategy in strategies:
        mine = [r for r in runs if r.strategy == strategy and r.error is None]

        def pair(values: list[tuple[float, ...]]) -> tuple[float, float]:
            return median(v[0] for v in values), median(v[1] for v in values)

        rows.append(
            Summary(
                strategy=strategy,
                trials=len(mine),
                tasks=sum(r.tasks for r in mine),
                errors=sum(r.errors + r.unfinished for r in mine),
                p50_ms=median(r.p50_ms for r in mine),
                p95_ms=median(r.p95_ms for r in mine),
                p99_ms=median(r.p99_ms for r in mine),
                max_ms=median(r.max_ms for r in mine),
                wait_p50_ms=median(r.wait_p50_ms for r in mine),
                wait_p99_ms=median(r.wait_p99_ms for r in mine),
                model_p99_ms=median(r.model_p99_ms for r in mine),
                model_p99_spread_ms=pair([r.model_p99_spread_ms for r in mine]),
                work_spread=median(r.work_spread for r in mine),
                entry_cpu_us_per_task=median(r.entry_cpu_us_per_task for r in mine),
                to_worker_ms=pair([r.to_worker_ms for r in mine]),
                worker_queue_ms=pair([r.worker_queue_ms for r in mine]),
                back_ms=pair([r.back_ms for r in mine]),
            )
        )
    return rows


def p99_gains(runs: Sequence[StrategyRun], metric: str = "p99_ms") -> list[float]:
    """Per trial where both ran: 1 - metric(p2c) / metric(round_robin).

    ``metric`` is a :class:`StrategyRun` field: ``p99_ms``, ``wait_p99_ms``,
    ``model_p99_ms`` or ``model_wait_p99_ms``.
    """
    gains = []
    for trial in sorted({r.trial for r in runs}):
        by = {r.strategy: r for r in runs if r.trial == trial and r.error is None}
        if "p2c" in by and "round_robin" in by:
            ours, theirs = getattr(by["p2c"], metric), getattr(by["round_robin"], metric)
            if theirs > 0:
                gains.append(1 - ours / theirs)
    return gains


def markdown(rows: Sequence[Summary]) -> str:
    """The results table."""
    lines = [
        "| strategy | trials | tasks | errors | completion p50 ms | p95 ms | p99 ms | max ms "
        "| queueing p50 ms | queueing p99 ms | ideal router p99 ms | busiest worker / even "
        "| entry CPU µs/task |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.strategy} | {r.trials} | {r.tasks} | {r.errors} | {r.p50_ms:.0f} "
        f"| {r.p95_ms:.0f} | {r.p99_ms:.0f} | {r.max_ms:.0f} | {r.wait_p50_ms:.0f} "
        f"| {r.wait_p99_ms:.0f} | {r.model_p99_ms:.0f} [{r.model_p99_spread_ms[0]:.0f}-"
        f"{r.model_p99_spread_ms[1]:.0f}] | {r.work_spread:.2f} "
        f"| {r.entry_cpu_us_per_task:.0f} |"
        for r in rows
    )
    return "\n".join(lines)


def phases_table(rows: Sequence[Summary]) -> str:
    """Where the queueing went, from the owner's copy of each task."""
    lines = [
        "| strategy | client → accepted by worker p50 / p99 ms "
        "| in the worker's queue p50 / p99 ms | finished → client p50 / p99 ms |",
        "|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.strategy} | {_pair(r.to_worker_ms)} | {_pair(r.worker_queue_ms)} "
        f"| {_pair(r.back_ms)} |"
        for r in rows
    )
    return "\n".join(lines)


def _pair(values: tuple[float, float]) -> str:
    return f"{values[0]:.1f} / {values[1]:.0f}"


def workers_table(runs: Sequence[StrategyRun]) -> str:
    """Tasks and seconds of work each worker got, per run."""
    lines = ["| trial | strategy | tasks per worker | work s per worker |", "|---:|---|---|---|"]
    for r in runs:
        if r.error is None:
            tasks = " / ".join(str(n) for n in r.tasks_per_worker.values())
            work = " / ".join(f"{s:.1f}" for s in r.work_s_per_worker.values())
            lines.append(f"| {r.trial} | {r.strategy} | {tasks} | {work} |")
    return "\n".join(lines)


def targets_table(runs: Sequence[StrategyRun]) -> str:
    """The p99 target against what was measured; queueing and the ideal router for reference."""
    gains = p99_gains(runs)
    if not gains:
        return "(needs p2c and round_robin in the same trial)"
    gain = median(gains)
    met = "yes" if gain >= TARGET_P99_GAIN else "no"
    lines = [
        "| p2c better than round_robin by | limit | measured | per trial | met |",
        "|---|---:|---:|---|---|",
        f"| p99 completion | >= {TARGET_P99_GAIN:.0%} | {gain:.0%} | {_gains(gains)} | {met} |",
    ]
    for what, metric in (
        ("p99 queueing (for reference)", "wait_p99_ms"),
        ("p99 completion, ideal router on the same workload", "model_p99_ms"),
        ("p99 queueing, ideal router on the same workload", "model_wait_p99_ms"),
    ):
        values = p99_gains(runs, metric)
        lines.append(f"| {what} | | {median(values):.0%} | {_gains(values)} | |")
    return "\n".join(lines)


def _gains(values: Sequence[float]) -> str:
    return ", ".join(f"{g:.0%}" for g in values)


def notes(
    runs: Sequence[StrategyRun], max_inflight: int, run_timeout: float, late_ms: float
) -> str:
    """Failures, submissions later than ``late_ms``, machine noise and node-log problems."""
    lines: list[str] = []
    for r in runs:
        parts = []
        if r.error is not None:
            parts.append(f"error: {r.error}")
        if r.errors:
            parts.append(f"{r.errors} tasks failed, e.g. {'; '.join(r.error_samples)}")
        if r.unfinished:
            parts.append(f"{r.unfinished} tasks unfinished after {run_timeout:g}s")
        if r.error is None and r.phases_known < r.tasks - r.errors:
            parts.append(
                f"the owner's copy of {r.tasks - r.errors - r.phases_known} tasks could not "
                "be read; the phase table leaves them out"
            )
        if r.max_late_ms > late_ms:
            parts.append(
                f"a submission was up to {r.max_late_ms:.0f} ms late (in flight at most "
                f"{r.max_inflight} of {max_inflight}): the arrivals were not quite open-loop"
            )
        if r.other_cpu_pct >= 10:
            parts.append(
                f"the machine was not quiet: other processes used {r.other_cpu_pct:.0f}% "
                "of a core during the run"
            )
        odd = {name: code for name, code in r.exit_codes.items() if code != 0}
        if odd:
            parts.append(f"exit codes after SIGTERM: {odd}")
        for label, problems in (
            ("during the run", r.log_problems_run),
            ("at shutdown", r.log_problems_shutdown),
        ):
            if problems:
                parts.append(f"node logs {label}: {describe_problems(problems)}")
        if parts:
            lines.append(f"- trial {r.trial} {r.strategy}: " + "\n  ".join(parts))
    return "\n".join(lines) if lines else "- nothing odd: no errors, late submissions or warnings"


def describe(r: StrategyRun) -> str:
    """One progress line for a finished run."""
    tasks = "/".join(str(n) for n in r.tasks_per_worker.values())
    return (
        f"{r.tasks} ended ({r.errors} failed, {r.unfinished} unfinished) in {r.elapsed_s:.1f} s; "
        f"completion p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms (ideal router "
        f"{r.model_p99_ms:.0f}), max {r.max_ms:.0f} ms; queueing p99 {r.wait_p99_ms:.0f} ms, "
        f"of which in a worker's queue p99 {r.worker_queue_ms[1]:.0f} ms; "
        f"tasks per worker {tasks}; max in flight {r.max_inflight}, latest submission "
        f"{r.max_late_ms:.1f} ms late; other processes {r.other_cpu_pct:.0f}% of a core"
    )
