"""What the failover benchmark measured, and its Markdown tables.

Plain data (:class:`Trial`, :class:`ClusterRun`, :class:`LoadRow`) filled by
:mod:`bench.failover`; the functions here only format and judge it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._accept_load import AcceptLoad
from bench._cluster import describe_problems
from bench._common import median
from bench._etcd_failover import EtcdFailover

FAILOVER_LIMIT_S = 1.0


@dataclass
class Trial:
    """One SIGKILL of the coordinator under load and what became of the tasks."""

    number: int
    victim: str
    failover_s: float | None = None
    elected_s: float | None = None
    acked_by: str = ""
    new_coordinator: str = ""
    new_term: int = 0
    old_term: int = 0
    confirmed: bool = False
    attempts: int = 0
    failed_by_code: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    completed: int = 0
    other_terminal: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    key_remapped: list[str] = field(default_factory=list)
    key_unchecked: list[str] = field(default_factory=list)
    accepted_unacked: int = 0
    duplicate_keys: list[str] = field(default_factory=list)
    ran_twice: list[str] = field(default_factory=list)
    reruns: int = 0
    stale: dict[str, int] = field(default_factory=dict)
    stale_get: dict[str, int] = field(default_factory=dict)
    settled_s: float | None = None
    restart_s: float | None = None
    error: str = ""
    reaped_s: float | None = None
    # Every submission: (start, end) in seconds from the SIGKILL, node, status code name.
    timeline: list[tuple[float, float, str, str]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Acknowledged tasks not found, not finished, or finished otherwise than COMPLETED."""
        return len(self.missing) + len(self.unfinished) + sum(self.other_terminal.values())

    @property
    def duplicated(self) -> int:
        """Keys mapped to a second task id, and tasks that ran on two nodes."""
        return len(self.key_remapped) + len(self.duplicate_keys) + len(self.ran_twice)


@dataclass
class LoadRow:
    """One accepted-tasks/s measurement."""

    cluster: str
    submitted_at: str
    load: AcceptLoad | None = None
    drained_s: float | None = None
    unfinished_before: int = 0
    error: str = ""


@dataclass
class ClusterRun:
    """Every trial on one active-passive cluster configuration."""

    label: str
    backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    granted_lease_s: list[int] = field(default_factory=list)
    etcd_timing: tuple[float, float] | None = None
    trials: list[Trial] = field(default_factory=list)
    error: str = ""
    exit_codes: dict[str, int] = field(default_factory=dict)
    log_problems: dict[str, int] = field(default_factory=dict)
    log_problems_shutdown: dict[str, int] = field(default_factory=dict)

    def failovers(self) -> list[float]:
        """Measured failover times, in trial order."""
        return [t.failover_s for t in self.trials if t.failover_s is not None]


def _s(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _settings(run: ClusterRun) -> str:
    return ", ".join(f"{key} {value}" for key, value in run.settings.items())


def failover_table(runs: Sequence[ClusterRun]) -> str:
    """Coordinator failover per cluster configuration."""
    lines = [
        "| cluster | settings | lease granted by etcd | trials measured | min s | median s "
        "| max s | GetAgent shows the new coordinator: median s | ack by new coordinator "
        "confirmed | failed calls per trial (median) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        times = run.failovers()
        granted = ", ".join(f"{ttl} s" for ttl in sorted(set(run.granted_lease_s))) or "n/a"
        failed = median(sum(t.failed_by_code.values()) for t in run.trials)
        elected = median(t.elected_s for t in run.trials if t.elected_s is not None)
        lines.append(
            f"| {run.label} | {_settings(run)} | {granted if run.backend == 'etcd' else 'n/a'} "
            f"| {len(times)}/{len(run.trials)} | {_s(min(times, default=None))} "
            f"| {_s(median(times))} | {_s(max(times, default=None))} | {_s(elected)} "
            f"| {sum(t.confirmed for t in run.trials)}/{len(run.trials)} "
            f"| {'n/a' if math.isnan(failed) else f'{failed:.0f}'} |"
        )
    return "\n".join(lines)


def etcd_table(results: Sequence[EtcdFailover]) -> str:
    """etcd's own leader failover per timing."""
    lines = [
        "| etcd heartbeat/election | trials measured | first survivor: median s (min-max) "
        "| all survivors agree: median s (min-max) |",
        "|---|---:|---:|---:|",
    ]
    for result in results:
        first = [v for v in result.first_s if v is not None]
        agreed = [v for v in result.agreed_s if v is not None]
        lines.append(
            f"| {result.label} | {len(agreed)}/{len(result.agreed_s)} "
            f"| {_range(first)} | {_range(agreed)} |"
        )
    return "\n".join(lines)


def _range(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return f"{median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def tasks_table(runs: Sequence[ClusterRun]) -> str:
    """What became of every acknowledged task, summed over each cluster's trials."""
    lines = [
        "| cluster | submissions | acknowledged | completed | missing | unfinished "
        "| failed/other | key resent -> other task | key resent, no answer | key with >1 task id "
        "| ran on >1 node | re-runs | accepted but not acknowledged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        trials = run.trials

        def total(values: Iterable[int]) -> int:
            return sum(values)

        lines.append(
            f"| {run.label} | {total(t.attempts for t in trials)} "
            f"| {total(t.acknowledged for t in trials)} | {total(t.completed for t in trials)} "
            f"| {total(len(t.missing) for t in trials)} "
            f"| {total(len(t.unfinished) for t in trials)} "
            f"| {total(sum(t.other_terminal.values()) for t in trials)} "
            f"| {total(len(t.key_remapped) for t in trials)} "
            f"| {total(len(t.key_unchecked) for t in trials)} "
            f"| {total(len(t.duplicate_keys) for t in trials)} "
            f"| {total(len(t.ran_twice) for t in trials)} | {total(t.reruns for t in trials)} "
            f"| {total(t.accepted_unacked for t in trials)} |"
        )
    return "\n".join(lines)


def load_table(rows: Sequence[LoadRow]) -> str:
    """Accepted tasks per second, side by side."""
    lines = [
        "| cluster | submitted at | clients | requests | accepted | errors | accepted/s "
        "| p50 ms | p99 ms | backlog finished after s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        load = row.load
        if load is None:
            lines.append(f"| {row.cluster} | {row.submitted_at} | {row.error} |||||||")
            continue
        lines.append(
            f"| {row.cluster} | {row.submitted_at} | {load.concurrency} | {load.requests} "
            f"| {load.accepted} | {load.errors} | {load.rps:.0f} | {load.p50_ms:.1f} "
            f"| {load.p99_ms:.1f} | {_s(row.drained_s)} |"
        )
    return "\n".join(lines)


def equal_etcd(run: ClusterRun, etcd: Sequence[EtcdFailover]) -> EtcdFailover | None:
    """The etcd leader failover measured at the settings ``run`` compares with.

    raft: etcd at the same heartbeat and election timeout; etcd: the timing of
    the etcd cluster the praxis nodes used.
    """
    if run.backend == "raft":
        wanted = (run.settings.get("heartbeat_s"), run.settings.get("election_timeout_s"))
    elif run.etcd_timing is not None:
        wanted = run.etcd_timing
    else:
        return None
    return next(
        (
            e
            for e in etcd
            if math.isclose(e.heartbeat, wanted[0] or 0)
            and math.isclose(e.election_timeout, wanted[1] or 0)
        ),
        None,
    )


def targets_table(runs: Sequence[ClusterRun], etcd: Sequence[EtcdFailover]) -> str:
    """Each target next to what was measured."""
    lines = ["| target | limit | measured | met |", "|---|---:|---:|---|"]
    for run in runs:
        measured = median(run.failovers())
        yardstick = equal_etcd(run, etcd)
        if yardstick is not None:
            own = median(v for v in yardstick.agreed_s if v is not None)
            lines.append(
                f"| {run.label}: failover median <= etcd's own leader failover at "
                f"{yardstick.label} | <= {_s(own)} s | {_s(measured)} s "
                f"| {_met(measured <= own)} |"
            )
        if run.backend == "raft":
            lines.append(
                f"| {run.label}: failover median with election timeout "
                f"{run.settings.get('election_timeout_s')} s | < {FAILOVER_LIMIT_S:g} s "
                f"| {_s(measured)} s | {_met(measured < FAILOVER_LIMIT_S)} |"
            )
    trials = [t for run in runs for t in run.trials]
    lost = sum(t.lost for t in trials)
    duplicated = sum(t.duplicated for t in trials)
    acked = sum(t.acknowledged for t in trials)
    lines.append(
        f"| acknowledged tasks lost, all trials | 0 | {lost} of {acked} | {_met(lost == 0)} |"
    )
    lines.append(
        f"| acknowledged tasks duplicated, all trials | 0 | {duplicated} "
        f"| {_met(duplicated == 0)} |"
    )
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def notes(
    runs: Sequence[ClusterRun], etcd: Sequence[EtcdFailover], loads: Sequence[LoadRow]
) -> str:
    """Per-trial times, errors, anomalies and node-log problems."""
    lines: list[str] = []
    for run in runs:
        times = " ".join(_s(t.failover_s) for t in run.trials)
        restarts = median(t.restart_s for t in run.trials if t.restart_s is not None)
        settle = median(t.settled_s for t in run.trials if t.settled_s is not None)
        lines.append(
            f"- {run.label}: failover per trial (s): {times}; killed node back and cluster "
            f"whole after {_s(restarts)} s (median); every acknowledged task terminal "
            f"{_s(settle)} s after the trial (median)"
        )
        for trial in run.trials:
            lines.extend(_trial_notes(run.label, trial))
        if run.error:
            lines.append(f"- {run.label}: stopped early: {run.error}")
        odd = {name: code for name, code in run.exit_codes.items() if code != 0}
        if odd:
            lines.append(f"- {run.label}: node exit codes after SIGTERM: {odd}")
        for when, problems in (
            ("during the trials", run.log_problems),
            ("at shutdown", run.log_problems_shutdown),
        ):
            if problems:
                lines.append(f"- {run.label}: node logs {when}: {describe_problems(problems)}")
    lines.extend(f"- etcd {e.label}: {e.error}" for e in etcd if e.error)
    for row in loads:
        if row.error:
            lines.append(f"- load {row.cluster} at {row.submitted_at}: {row.error}")
        elif row.load is not None and row.load.errors:
            samples = "; ".join(row.load.error_samples)
            lines.append(f"- load {row.cluster} at {row.submitted_at}: errors: {samples}")
        if row.unfinished_before:
            lines.append(
                f"- load {row.cluster} at {row.submitted_at}: {row.unfinished_before} tasks "
                "listed as unfinished before the load, not counted as backlog"
            )
    return "\n".join(lines) if lines else "- nothing odd"


def _trial_notes(label: str, trial: Trial) -> list[str]:
    where = f"{label} trial {trial.number}"
    lines = []
    if trial.error:
        lines.append(f"- {where}: {trial.error}")
    if trial.failover_s is not None and not trial.confirmed:
        lines.append(
            f"- {where}: the first ack came through {trial.acked_by}, whose coordinator "
            f"{trial.new_coordinator or '?'} (term {trial.new_term}) was not confirmed new"
        )
    for name, items in (
        ("missing", trial.missing),
        ("unfinished", trial.unfinished),
        ("key resent -> other task", trial.key_remapped),
        ("keys not re-checked: no node answered the resend in time", trial.key_unchecked),
        ("keys with >1 task id", trial.duplicate_keys),
        ("ran on >1 node", trial.ran_twice),
    ):
        if items:
            lines.append(f"- {where}: {len(items)} {name}, e.g. {', '.join(items[:3])}")
    if trial.other_terminal:
        lines.append(f"- {where}: acknowledged tasks ended {trial.other_terminal}")
    if trial.stale:
        lines.append(
            f"- {where}: nodes listing an acknowledged task as unfinished after every one was "
            f"terminal: {trial.stale}; GetTask there says unfinished too: {trial.stale_get}"
        )
    return lines
