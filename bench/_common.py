"""What every benchmark script shares: argument types, interrupts, the machine line, statistics.

Interrupts: :func:`install_interrupt_handler` turns the first SIGTERM or
SIGINT into ``KeyboardInterrupt`` so ``finally`` blocks stop every process
the run started; later signals are ignored so that cleanup (bounded by its
own timeouts) is not cut short. Code that starts a process and records its
pid runs inside :func:`interrupts_deferred`, so no process is started and
then lost to an interrupt before it is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import FrameType

import grpc
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_number(text: str, what: str = "a number") -> float:
    """argparse type: a positive finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    return positive_number(text, "seconds")


def int_list(minimum: int, example: str) -> Callable[[str], list[int]]:
    """argparse type: comma-separated whole numbers, each at least ``minimum``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected e.g. {example}, got {text!r}") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"every value must be at least {minimum}")
        return values

    return parse


def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """argparse type: comma-separated names out of ``choices``, in the given order."""

    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [value for value in values if value not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"expected some of {','.join(choices)}, got {text!r}")
        return list(dict.fromkeys(values))

    return parse


class _Interrupts:
    # Signal dispositions are process-wide, so this state is too.
    deferring = 0
    pending = False
    fired = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _Interrupts.fired:
        return
    if _Interrupts.deferring:
        _Interrupts.pending = True
        return
    _Interrupts.fired = True
    raise KeyboardInterrupt


def install_interrupt_handler() -> None:
    """Make the first SIGTERM or SIGINT raise ``KeyboardInterrupt``; ignore later ones."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back an interrupt until the block ends (e.g. spawn a process and record it)."""
    _Interrupts.deferring += 1
    try:
        yield
    finally:
        _Interrupts.deferring -= 1
    if not _Interrupts.deferring and _Interrupts.pending and not _Interrupts.fired:
        _Interrupts.fired = True
        raise KeyboardInterrupt


def run_main(main: Callable[[], int], what: str = "process") -> None:
    """Install the interrupt handler, run ``main`` and exit with its code (130 if interrupted)."""
    install_interrupt_handler()
    try:
        code = main()
    except KeyboardInterrupt:
        progress(f"interrupted; every {what} this run started has been stopped")
        code = 130
    sys.exit(code)


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the result)."""
    print(message, file=sys.stderr, flush=True)


def command_line() -> str:
    """The command this run was started with, as a shell would read it."""
    return shlex.join(sys.orig_argv)


def machine() -> dict[str, str]:
    """What the numbers were measured on, and the code revision that produced them."""
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "libp2p": metadata.version("libp2p"),
        "platform": platform.platform(),
        "revision": revision(),
    }


def header(info: Mapping[str, str], command: str) -> str:
    """The command, machine and revision lines printed above every Markdown result."""
    return (
        f"command: `{command}`\n"
        f"machine: nproc={info['nproc']}, python {info['python']}, grpcio {info['grpcio']}, "
        f"libp2p {info['libp2p']}, {info['platform']}\n"
        f"revision: {info['revision']}"
    )


def revision() -> str:
    """The commit the nodes ran, and which files under praxis_grpc/ differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args],
                check=False,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    status = git("status", "--porcelain", "--", "praxis_grpc")
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return f"{commit} + uncommitted {', '.join(changed)}" if changed else commit


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time the processes used so far."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def busy_seconds() -> float:
    """CPU time the whole machine spent busy so far, summed over CPUs."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class CpuWindow:
    """CPU used over a window by given processes, and by everything else on the machine.

    "Everything else" excludes the given processes, this process and its
    children reaped during the window (e.g. a load process run to completion).
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start = {name: cpu_seconds([pid]) for name, pid in self._pids.items()}
        self._busy, self._children = busy_seconds(), _children_seconds()
        self._own, self._wall = time.process_time(), time.monotonic()

    def finish(self) -> tuple[dict[str, float], float]:
        """CPU seconds per named process, and other processes' CPU in % of one core."""
        used = {name: cpu_seconds([pid]) - self._start[name] for name, pid in self._pids.items()}
        ours = sum(used.values()) + _children_seconds() - self._children
        ours += time.process_time() - self._own
        wall = max(time.monotonic() - self._wall, 1e-9)
        return used, max(100.0 * (busy_seconds() - self._busy - ours) / wall, 0.0)


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(values: Iterable[float]) -> float:
    """The median, NaN when there are no values."""
    listed = list(values)
    return statistics.median(listed) if listed else math.nan


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def add_json_out(parser: argparse.ArgumentParser) -> None:
    """The ``--json-out PATH`` option of the benchmarks :mod:`bench.plots` reads."""
    parser.add_argument(
        "--json-out",
        type=Path,
        metavar="PATH",
        help="also write the JSON document to PATH (python -m bench.plots reads it)",
    )


def write_json(path: Path | None, document: object) -> None:
    """Write ``document`` to ``path`` as ``--json`` prints it; nothing when ``path`` is None."""
    if path is not None:
        path.write_text(json.dumps(document, indent=2, default=list) + "\n")
