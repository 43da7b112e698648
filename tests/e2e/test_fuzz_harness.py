"""The gRPC fuzzer (bench/fuzz_grpc.py) itself, on a small run against a real node process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench._fuzz_node import FUZZ_TOOLS, NodeUnderTest
from bench._fuzz_run import FuzzOptions, fuzz

pytestmark = pytest.mark.e2e


async def test_a_short_fuzz_run_neither_crashes_nor_hangs_the_node(tmp_path: Path) -> None:
    overrides: dict[str, dict[str, Any]] = {
        "tools": {"builtins": list(FUZZ_TOOLS)},
        "p2p": {"enabled": False},
        "metrics": {"enabled": False},
    }
    with NodeUnderTest(tmp_path, overrides) as node:
        report = await fuzz(node, FuzzOptions(seed=7, count=300, batch=50, max_restarts=0))
    assert report.inputs == 300
    assert report.by_outcome["ok"] > 0
    assert report.by_outcome["documented"] > 0
    assert (report.crashes, report.hangs, report.restarts) == (0, 0, 0), report.to_json()
    assert report.wrong_codes == 0, report.to_json()["findings"]
