"""The nemesis suite's tables: per backend and nemesis, summed over its trials."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._common import median
from bench._nemesis_trial import TrialResult
from bench._nemesis_workload import distinct


@dataclass
class NemesisRun:
    """Every trial of one nemesis on one backend."""

    backend: str
    nemesis: str
    settings: dict[str, float] = field(default_factory=dict)
    trials: list[TrialResult] = field(default_factory=list)
    skipped: str = ""

    def total(self, what: str) -> int:
        """Sum over the trials of an Audit list's length or count (``acknowledged``...)."""
        found = 0
        for trial in self.trials:
            value = getattr(trial.audit, what)
            found += value if isinstance(value, int) else len(value)
        return found


def _s(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    middle = median(values)
    return f"{max(values):.2f} / {'n/a' if math.isnan(middle) else f'{middle:.2f}'}"


def summary_table(runs: Sequence[NemesisRun]) -> str:
    """One row per backend and nemesis."""
    lines = [
        "| backend | nemesis | hold s | trials | acknowledged | lost | executed twice "
        "| keys with two tasks | answers differ | completed, never ran "
        "| without a coordinator max / median s | serves after heal max / median s "
        "| majority acks after cut max / median s | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        if run.skipped:
            lines.append(f"| {run.backend} | {run.nemesis} | skipped: {run.skipped} |||||||||||")
            continue
        holds = ", ".join(f"{h:g}" for h in sorted({t.hold_s for t in run.trials}))
        served = [t.served_s for t in run.trials if t.served_s is not None]
        never = sum(t.served_s is None for t in run.trials)
        majority = [t.majority_ack_s for t in run.trials if t.majority_ack_s is not None]
        unacked = len(run.trials) - len(majority)
        partition = run.nemesis.startswith("partition")
        lines.append(
            f"| {run.backend} | {run.nemesis} | {holds} | {len(run.trials)} "
            f"| {run.total('acknowledged')} | {run.total('lost')} "
            f"| {run.total('executed_twice')} | {run.total('keys_with_two_tasks')} "
            f"| {run.total('answers_differ')} | {run.total('completed_unrun')} "
            f"| {_s([t.outage_s for t in run.trials])} "
            f"| {_s(served)}{f' ({never} never)' if never else ''} "
            f"| {_s(majority) if partition else 'n/a'}"
            f"{f' ({unacked} never)' if partition and unacked else ''} "
            f"| {sum(bool(t.error) for t in run.trials)} |"
        )
    return "\n".join(lines)


def notes(runs: Sequence[NemesisRun]) -> str:
    """Per-trial findings worth reading: errors and examples of every anomaly."""
    lines: list[str] = []
    for run in runs:
        failed: Counter[str] = Counter()
        for trial in run.trials:
            failed.update(trial.failed_messages)
        if failed:
            lines.append(f"- {run.backend} {run.nemesis}: failed calls: {distinct(failed)}")
        for trial in run.trials:
            where = f"{run.backend} {run.nemesis} trial {trial.number} (victim {trial.victim})"
            if trial.error:
                lines.append(f"- {where}: {trial.error}")
            found = trial.audit
            for name, items in (
                ("lost", found.lost),
                ("executed twice", found.executed_twice),
                ("keys with two tasks", found.keys_with_two_tasks),
                ("answers differ", found.answers_differ),
                ("completed, never ran", found.completed_unrun),
            ):
                if items:
                    lines.append(f"- {where}: {len(items)} {name}, e.g. {'; '.join(items[:3])}")
            if found.listed_unfinished:
                lines.append(
                    f"- {where}: acknowledged tasks still listed unfinished after they were "
                    f"terminal at the coordinator: {found.listed_unfinished}"
                )
            if trial.cut_leaks:
                lines.append(
                    f"- {where}: the cut leaked, {len(trial.cut_leaks)} socket(s) of the victim "
                    f"received segments during it, e.g. {'; '.join(trial.cut_leaks[:3])}"
                )
            if trial.victim_acks_in_cut:
                lines.append(
                    f"- {where}: the cut-off node acknowledged {trial.victim_acks_in_cut} "
                    "submissions started during the cut (the cut leaked)"
                )
    return "\n".join(lines) if lines else "- nothing odd"
