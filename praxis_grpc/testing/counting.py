"""Contract tools for process-level tests that count executions across node
processes and restarts: each run appends ``<node pid> start|done <key>`` to
a log file shared by the whole test (the pid is the node's, the tool's
parent), one line per write, fsynced before the tool goes on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "install_counting_tools"]

_CONTRACT = """\
name: {name}
description: Sleep, logging start and end with the node's pid.
input_schema:
  type: object
  properties:
    seconds: {{type: number, minimum: 0, maximum: 60}}
    key: {{type: string}}
    log: {{type: string}}
  required: [seconds, key, log]
  additionalProperties: false
command: ["{{python}}", "count.py"]
timeout: 60s
idempotent: {idempotent}
"""
_SCRIPT = """\
import json, os, sys, time
args = json.load(sys.stdin)
def note(what):
    with open(args["log"], "a") as log:
        log.write(f"{os.getppid()} {what} {args['key']}\\n")
        log.flush()
        os.fsync(log.fileno())
note("start")
time.sleep(args["seconds"])
note("done")
print(json.dumps({"pid": os.getppid(), "key": args["key"]}))
"""


def install_counting_tools(root: Path, tools: Mapping[str, bool] | None = None) -> Path:
    """Write counting contract tools under ``root``, a ``tools.contracts_dir``.

    Args:
        root: The directory to create them in.
        tools: Tool name -> idempotent; default one idempotent ``count``.

    Returns:
        ``root``.
    """
    for name, idempotent in (tools or {"count": True}).items():
        tool = root / name
        tool.mkdir(parents=True)
        contract = _CONTRACT.format(name=name, idempotent="true" if idempotent else "false")
        (tool / "contract.yaml").write_text(contract)
        (tool / "count.py").write_text(_SCRIPT)
    return root


class RunLog:
    """The shared log of the counting tools' runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def arguments(self, key: str, seconds: float = 0) -> dict[str, Any]:
        """Arguments of a run that sleeps ``seconds`` and logs under ``key``."""
        return {"seconds": seconds, "key": key, "log": str(self.path)}

    def events(self, key: str) -> list[tuple[int, str]]:
        """``(node pid, "start" | "done")`` of every run with ``key``, in order."""
        return [(pid, what) for pid, what, k in self._lines() if k == key]

    def runs(self) -> dict[str, int]:
        """How many runs started, per key."""
        counts: dict[str, int] = {}
        for _, what, key in self._lines():
            if what == "start":
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _lines(self) -> list[tuple[int, str, str]]:
        if not self.path.exists():
            return []
        lines = [line.split() for line in self.path.read_text().splitlines()]
        return [(int(pid), what, key) for pid, what, key in lines]
