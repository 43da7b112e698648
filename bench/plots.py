"""PNG plots of what the benchmarks wrote with ``--json-out``.

Usage::

    .venv/bin/python -m bench.plots [--task-roundtrip FILE] [--failover FILE]
        [--mesh-sim FILE] [--mesh-propagation FILE] [--out DIR]

Each input makes one plot in ``--out`` (default ``docs/bench``):

- ``--task-roundtrip`` -> ``throughput.png``: requests/s and p99 latency
  against client concurrency, praxis next to the raw gRPC echo ceiling.
- ``--failover`` -> ``failover_timeline.png``: for each cluster, the trial
  with the median failover time; every submission as a bar from its start to
  its end on the node it was sent to, by status, with the SIGKILL, the first
  GetAgent naming the new coordinator, and its first acknowledgement marked.
- ``--mesh-sim`` and/or ``--mesh-propagation`` -> ``mesh_convergence.png``:
  seconds until a change reaches the whole mesh against the number of nodes,
  on the virtual-clock SWIM simulation and on real node processes.

Nothing is measured here: the plots only draw the JSON, and each carries the
command line that produced it. Drawing uses matplotlib's Agg renderer on
:class:`~matplotlib.figure.Figure` objects (no pyplot, no display).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from bench._common import REPO_ROOT

Document = Any  # a benchmark's JSON document, as json.load returns it
DPI = 100
COLORS = {"echo": "tab:gray", "praxis": "tab:blue"}
OK_COLOR, FAILED_COLOR = "tab:green", "tab:red"


def _finite(value: object) -> float | None:
    """``value`` as a float when it is a finite number (timeouts are None or inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _caption(figure: Figure, document: Document) -> None:
    """The command line and machine the numbers came from, under the plot."""
    if not isinstance(document, Mapping):
        return
    lines = [f"$ {document['command']}"] if "command" in document else []
    info = document.get("machine")
    if isinstance(info, Mapping):
        lines.append(
            f"nproc={info.get('nproc')}, python {info.get('python')}, "
            f"grpcio {info.get('grpcio')}, revision {info.get('revision', '?')}"
        )
    figure.text(0.01, 0.01, "\n".join(lines), fontsize=7, family="monospace", va="bottom")


def throughput(document: Document) -> Figure:
    """Requests/s and p99 latency against concurrency, praxis and echo (bench.task_roundtrip)."""
    rows = document["summary"]
    figure = Figure(figsize=(10, 4.6), dpi=DPI)
    rate, latency = figure.subplots(1, 2)
    for target in ("echo", "praxis"):
        mine = sorted((r for r in rows if r["target"] == target), key=lambda r: r["concurrency"])
        levels = [r["concurrency"] for r in mine]
        color = COLORS[target]
        rate.plot(levels, [r["rps"] for r in mine], "o-", color=color, label=target)
        latency.plot(levels, [r["p50_ms"] for r in mine], "o--", color=color, label=f"{target} p50")
        latency.plot(levels, [r["p99_ms"] for r in mine], "o-", color=color, label=f"{target} p99")
        if target == "praxis":
            for r in mine:
                rate.annotate(
                    f"{r['ratio']:.2f}x echo",
                    (r["concurrency"], r["rps"]),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=8,
                )
    for axes, label in ((rate, "successful requests/s"), (latency, "latency (ms)")):
        _ticks_at(axes, [r["concurrency"] for r in rows])
        axes.set_xlabel("client concurrency (coroutines on one channel)")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    rate.set_ylim(bottom=0)
    latency.set_ylim(bottom=0)
    rate.set_title("SubmitTask(wait=True, echo) vs raw gRPC echo")
    latency.set_title("round-trip latency")
    figure.subplots_adjust(bottom=0.27, wspace=0.3)
    _caption(figure, document)
    return figure


def median_trial(trials: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The trial with the median failover time (the first one when none finished)."""
    timed = [t for t in trials if t.get("timeline") and _finite(t.get("failover_s")) is not None]
    if not timed:
        return next((t for t in trials if t.get("timeline")), None)
    timed.sort(key=lambda t: t["failover_s"])
    return timed[(len(timed) - 1) // 2]


def _timeline(axes: Axes, label: str, trial: Mapping[str, Any], count: int) -> None:
    nodes = sorted({node for _, _, node, _ in trial["timeline"]})
    rows = {node: index for index, node in enumerate(nodes)}
    for start, end, node, code in trial["timeline"]:
        color = OK_COLOR if code == "OK" else FAILED_COLOR
        axes.hlines(rows[node], start, max(end, start), colors=color, linewidth=6)
    marks = [(0.0, "black", "SIGKILL")]
    for key, color, name in (
        ("elected_s", "tab:purple", "new coordinator (GetAgent)"),
        ("failover_s", "tab:blue", "first ack by the new coordinator"),
    ):
        value = _finite(trial.get(key))
        if value is not None:
            marks.append((value, color, f"{name} {value:.2f} s"))
    for at, color, name in marks:
        axes.axvline(at, color=color, linestyle="--", linewidth=1, label=name)
    axes.set_yticks(range(len(nodes)))
    axes.set_yticklabels([f"{n} (killed)" if n == trial["victim"] else n for n in nodes])
    axes.set_ylim(-0.6, len(nodes) - 0.4)
    axes.set_title(
        f"{label}: trial {trial['number']} of {count} (median failover)", fontsize=10, loc="left"
    )
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(True, axis="x", alpha=0.3)


def failover_timeline(document: Document) -> Figure:
    """Submissions around the coordinator's SIGKILL, one panel per cluster (bench.failover)."""
    panels = []
    for cluster in document["clusters"]:
        trial = median_trial(cluster["trials"])
        if trial is not None:
            panels.append((cluster["label"], trial, len(cluster["trials"])))
    if not panels:
        raise ValueError("no trial in the failover document has a timeline (--json-out needed)")
    figure = Figure(figsize=(12, 1.1 + 2.2 * len(panels)), dpi=DPI)
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (label, trial, count) in zip(axes_list, panels, strict=True):
        _timeline(axes, label, trial, count)
    axes_list[-1].set_xlabel(
        "seconds from the SIGKILL of the coordinator (bars: SubmitTask calls, green OK, red failed)"
    )
    figure.suptitle("Coordinator failover under load (3 nodes, active-passive)")
    figure.subplots_adjust(bottom=0.5 / figure.get_figheight() + 0.12, hspace=0.45, right=0.72)
    _caption(figure, document)
    return figure


SIM_SERIES = (
    ("payload_100", "card change reaches all", "tab:blue"),
    ("dead_100", "silent crash marked dead by all", "tab:red"),
    ("refused_99", "refusing crash marked dead by 99%", "tab:orange"),
)
REAL_SERIES = (
    ("converge_s", "first N-1 nodes list every card", "tab:green"),
    ("join_visible_s", "joining node listed by all", "tab:purple"),
    ("change_median_s", "card change reaches all (median)", "tab:blue"),
    ("dead_removed_s", "killed node removed by all", "tab:red"),
    ("stopped_removed_s", "SIGSTOPped node removed by all", "tab:orange"),
)


def _series(
    axes: Axes,
    rows: Sequence[Mapping[str, Any]],
    key: str,
    label: str,
    style: str,
    color: str,
    n_of: Callable[[Mapping[str, Any]], int],
) -> None:
    points = sorted((n_of(row), _finite(row.get(key))) for row in rows)
    shown = [(n, value) for n, value in points if value is not None]
    if shown:
        axes.plot(*zip(*shown, strict=True), style, color=color, label=label)


def _ticks_at(axes: Axes, values: Sequence[int]) -> None:
    """Log-scaled x with a plain label at each measured value."""
    axes.set_xscale("log")
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticks(sorted(set(values)), labels=[str(v) for v in sorted(set(values))])


def _sim_panel(axes: Axes, rows: Sequence[Mapping[str, Any]]) -> None:
    for loss in sorted({row["loss"] for row in rows}):
        mine = [row for row in rows if row["loss"] == loss]
        style = "o-" if loss == 0 else "s--"
        for key, label, color in SIM_SERIES:
            name = f"{label}, loss {loss:.0%}"
            _series(axes, mine, key, name, style, color, lambda row: int(row["n"]))
    _ticks_at(axes, [int(row["n"]) for row in rows])
    axes.set_title("SWIM on a virtual clock (mesh_sim)", fontsize=10)
    axes.set_ylabel("virtual seconds")


def _real_panel(axes: Axes, document: Mapping[str, Any]) -> None:
    results = [r for r in document["results"] if not r.get("error")]
    for key, label, color in REAL_SERIES:
        _series(axes, results, key, label, "o-", color, lambda row: int(row["nodes"]))
    _ticks_at(axes, [int(row["nodes"]) for row in results])
    axes.set_title("real node processes on one machine (mesh_propagation)", fontsize=10)
    axes.set_ylabel("seconds")


def mesh_convergence(sim: Document | None, real: Document | None) -> Figure:
    """Seconds to converge against N: simulation and/or real processes (bench.mesh_*)."""
    panels: list[tuple[Callable[[Axes, Any], None], Document]] = []
    if sim is not None:
        panels.append((_sim_panel, sim))
    if real is not None:
        panels.append((_real_panel, real))
    if not panels:
        raise ValueError("mesh_convergence needs the mesh_sim or mesh_propagation document")
    figure = Figure(figsize=(5.2 * len(panels), 4.8), dpi=DPI)
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (draw, document) in zip(axes_list, panels, strict=True):
        draw(axes, document)
        axes.set_xlabel("nodes in the mesh (N)")
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("Mesh convergence against size")
    figure.subplots_adjust(bottom=0.22, wspace=0.3)
    _caption(figure, panels[-1][1])
    return figure


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.plots", description=__doc__.splitlines()[0]
    )
    for name in ("task-roundtrip", "failover", "mesh-sim", "mesh-propagation"):
        parser.add_argument(f"--{name}", type=Path, metavar="FILE", help="its --json-out file")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench")
    args = parser.parse_args(argv)
    if not any((args.task_roundtrip, args.failover, args.mesh_sim, args.mesh_propagation)):
        parser.error("give at least one benchmark's JSON file")
    return args


def _load(path: Path | None) -> Document | None:
    return None if path is None else json.loads(path.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """Draw every plot whose input was given; returns the exit code."""
    args = parse_args(argv)
    figures: dict[str, Figure] = {}
    if args.task_roundtrip:
        figures["throughput.png"] = throughput(_load(args.task_roundtrip))
    if args.failover:
        figures["failover_timeline.png"] = failover_timeline(_load(args.failover))
    if args.mesh_sim or args.mesh_propagation:
        figures["mesh_convergence.png"] = mesh_convergence(
            _load(args.mesh_sim), _load(args.mesh_propagation)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(args.out / name)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
