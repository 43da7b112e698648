"""A real ``praxis node`` process to fuzz or abuse, whose RSS is read from /proc."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from bench._common import interrupts_deferred
from praxis_grpc.launcher import NodeProcess
from praxis_grpc.testing import TEST_BUILTINS, node_process

__all__ = ["FUZZ_TOOLS", "NodeUnderTest"]

# Every built-in tool the fuzzer submits tasks to; a fuzzed sleep only waits.
FUZZ_TOOLS = tuple(tool for tool in TEST_BUILTINS if tool != "sleep")


class NodeUnderTest:
    """One node process under ``root`` (a new data directory per (re)start).

    Use as a context manager; :meth:`restart` replaces the process.
    """

    def __init__(self, root: Path, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        self._root = root
        self._overrides = {section: dict(values) for section, values in overrides.items()}
        self._stack = contextlib.ExitStack()
        self._lives = 0
        self._node: NodeProcess | None = None

    def __enter__(self) -> NodeUnderTest:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with interrupts_deferred():
            self._stack.close()

    def _start(self) -> None:
        self._lives += 1
        with interrupts_deferred():
            self._node = self._stack.enter_context(
                node_process(self._root / f"life{self._lives}", "fuzzed", self._overrides)
            )

    @property
    def process(self) -> NodeProcess:
        """The current node process."""
        assert self._node is not None
        return self._node

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        return self.process.grpc

    def rss(self) -> int:
        """Resident set size in bytes; 0 once the process is gone."""
        try:
            return int(psutil.Process(self.process.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def alive(self) -> bool:
        """False once the process exited."""
        return self.process.process.poll() is None

    def restart(self) -> None:
        """Kill the node (it may be hung: SIGTERM would wait) and start a fresh one."""
        with interrupts_deferred():
            if self.alive():
                self.process.process.kill()
            self._stack.close()
            self._stack = contextlib.ExitStack()
        self._start()
