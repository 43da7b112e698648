"""``python -m praxis_grpc.container`` against a live node process: the
Docker HEALTHCHECK and the seed bootstrap that docker-compose.yml and
deploy/k8s run before ``praxis node``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from praxis_grpc.testing import node_process
from praxis_grpc.testing.system_tools import free_port

pytestmark = pytest.mark.e2e


def container(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "praxis_grpc.container", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_health_and_join_against_a_live_seed(tmp_path: Path) -> None:
    with node_process(tmp_path, "seed", overrides={"p2p": {"enabled": True}}) as seed:
        assert container("health", seed.grpc).returncode == 0
        (p2p,) = seed.info["p2p"]
        port = int(p2p.split("/tcp/")[1].split("/")[0])
        show = "import os; print(os.environ['PRAXIS_P2P__BOOTSTRAP_NODES'])"
        joined = container("join", "--wait", "10", seed.grpc, str(port), sys.executable, "-c", show)
        assert joined.returncode == 0, joined.stderr
        assert json.loads(joined.stdout) == [p2p]


def test_health_fails_without_a_node_and_join_gives_up() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    assert container("health", nobody).returncode == 1
    joined = container("join", "--wait", "0", nobody, "4001", "true")
    assert joined.returncode == 1
    assert "did not answer" in joined.stderr
