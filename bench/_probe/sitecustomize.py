"""A measuring probe for any Python process of a benchmark (issue 11, wt19-q19).

Not imported by praxis or by the benchmarks: put this directory first on
``PYTHONPATH`` and set ``PRAXIS_PROBE_DIR`` and every Python process started
with that environment (nodes, proxies, load) imports it at start-up as
``sitecustomize`` and, every second, appends a line to ``<dir>/<pid>.jsonl``:

- ``gc``: per generation, collections, seconds spent in them, objects freed,
  and the seconds by thread (timed with :data:`gc.callbacks`);
- ``trio``: when the process runs :func:`trio.run` (praxis' libp2p thread),
  the run's wake-ups (returns from its I/O wait), task steps and seconds spent
  in task steps (a trio instrument);
- ``objects``: objects tracked by the collector (every 5 s);
- ``threads``: CPU seconds (user, system) and context switches (voluntary,
  involuntary) of each thread, by its Python name (``C:`` and the kernel's
  name for the others), from ``/proc``.

Each line of ``<dir>/<pid>.jsonl`` is one such record, with the wall time.

Knobs (to test a cause on an unmodified node): ``PRAXIS_PROBE_FREEZE=S``
calls :func:`gc.freeze` S seconds after start-up;
``PRAXIS_PROBE_THRESHOLD=a,b,c`` sets :func:`gc.set_threshold`;
``PRAXIS_PROBE_GC_OFF=1`` disables the collector;
``PRAXIS_PROBE_CPROFILE=1`` runs :mod:`cProfile` on the main thread (where
the event loop runs) and writes its statistics to ``<dir>/<pid>.pstats`` when
the process exits (deterministic call counts per request: divide by the
requests of a run with a fixed ``--requests``; the timings are inflated).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import threading
import time
from typing import Any

_DIR = os.environ.get("PRAXIS_PROBE_DIR", "")


class _GcTimer:
    def __init__(self) -> None:
        self.started = 0.0
        self.gens: dict[int, list[float]] = {0: [0, 0.0, 0], 1: [0, 0.0, 0], 2: [0, 0.0, 0]}
        self.by_thread: dict[str, float] = {}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        row = self.gens[info["generation"]]
        row[0] += 1
        row[1] += took
        row[2] += info["collected"]
        name = threading.current_thread().name
        self.by_thread[name] = self.by_thread.get(name, 0.0) + took


class _TrioCounter:
    def __init__(self) -> None:
        self.wakeups = 0
        self.steps = 0
        self.step_s = 0.0
        self._step_started = 0.0

    def after_io_wait(self, timeout: float) -> None:
        self.wakeups += 1

    def before_task_step(self, task: object) -> None:
        self._step_started = time.perf_counter()

    def after_task_step(self, task: object) -> None:
        self.steps += 1
        self.step_s += time.perf_counter() - self._step_started


def _threads() -> dict[str, list[float]]:
    """CPU seconds and context switches of each of this process's threads."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    threads: dict[str, list[float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/status") as status:
                lines = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        name = names.get(int(tid)) or "C:" + lines["Name"].strip()
        row = threads.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        row[0] += int(fields[11]) / tick
        row[1] += int(fields[12]) / tick
        row[2] += int(lines["voluntary_ctxt_switches"])
        row[3] += int(lines["nonvoluntary_ctxt_switches"])
    return threads


def _patch_trio(counter: _TrioCounter) -> None:
    import trio
    import trio.abc

    class Instrument(trio.abc.Instrument):
        def after_io_wait(self, timeout: float) -> None:
            counter.after_io_wait(timeout)

        def before_task_step(self, task: Any) -> None:
            counter.before_task_step(task)

        def after_task_step(self, task: Any) -> None:
            counter.after_task_step(task)

    original = trio.run

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), Instrument()]
        return original(*args, **kwargs)

    trio.run = run


def _profile(path: str) -> None:
    import atexit
    import cProfile

    profile = cProfile.Profile()

    def dump() -> None:
        profile.disable()
        profile.dump_stats(path)

    atexit.register(dump)
    profile.enable()


def _start() -> None:
    timer = _GcTimer()
    gc.callbacks.append(timer)
    trio_counter = _TrioCounter()
    with contextlib.suppress(ImportError):
        _patch_trio(trio_counter)
    if os.environ.get("PRAXIS_PROBE_GC_OFF"):
        gc.disable()
    threshold = os.environ.get("PRAXIS_PROBE_THRESHOLD", "")
    if threshold:
        gc.set_threshold(*(int(x) for x in threshold.split(",")))
    freeze_after = float(os.environ.get("PRAXIS_PROBE_FREEZE", "0") or 0)
    born = time.monotonic()
    path = os.path.join(_DIR, f"{os.getpid()}.jsonl")
    if os.environ.get("PRAXIS_PROBE_CPROFILE"):
        _profile(os.path.join(_DIR, f"{os.getpid()}.pstats"))

    def dump() -> None:
        objects = 0
        frozen = False
        tick = 0
        while True:
            time.sleep(1.0)
            tick += 1
            if freeze_after and not frozen and time.monotonic() - born >= freeze_after:
                gc.collect()
                gc.freeze()
                frozen = True
            if tick % 5 == 1:
                objects = len(gc.get_objects())
            state = {
                "wall": time.time(),
                "pid": os.getpid(),
                "argv": sys.argv,
                "age_s": time.monotonic() - born,
                "cpu_s": time.process_time(),
                "gc": timer.gens,
                "gc_by_thread": timer.by_thread,
                "trio": vars(trio_counter),
                "objects": objects,
                "frozen": gc.get_freeze_count(),
                "threshold": gc.get_threshold(),
                "threads": _threads(),
            }
            with open(path, "a") as out:
                out.write(json.dumps(state) + "\n")

    threading.Thread(target=dump, name="praxis-probe", daemon=True).start()


if _DIR:
    _start()
