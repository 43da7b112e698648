"""``praxis up --secure``: a 3-node mesh with TLS and tokens on every API and a
cluster CA for the mesh runs tasks end to end, through grpcurl over TLS with a
token and through the ``praxis`` CLI; without a token or without TLS nothing
gets in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from praxis_grpc.secure_setup import SecureSetup
from tests.e2e.test_readme_commands import marked_block, run_shell
from tests.e2e.test_up_process import GRPCURL, ROOT, up

pytestmark = pytest.mark.e2e

MARK = "<!-- readme-test: secure"


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=60, check=False)


def _metrics_status(address: str, token: str = "") -> int:
    request = urllib.request.Request(f"http://{address}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_secure_mesh_runs_tasks_over_tls_with_tokens_only(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "praxis_grpc", "up", "--secure", "--json"]
    command += ["--dir", str(tmp_path / "up")]
    with up(command, cwd=tmp_path) as (document, _):
        ca, tokens = document["ca_cert"], Path(document["tokens"])
        assert (tokens.stat().st_mode & 0o077) == 0
        entry = document["nodes"][0]
        assert entry["name"] == "orchestrator"
        assert "calculator" not in entry["tools"]
        setup = SecureSetup(tokens.parent)  # the files praxis up --secure made
        admin = setup.token("admin")
        body = '{"tool": "calculator", "arguments": {"expression": "6*7"}, "wait": true}'
        submit = ["-d", body, entry["grpc"], "praxis.v1.TaskService/SubmitTask"]

        done = _grpcurl("-cacert", ca, "-H", f"authorization: Bearer {admin}", *submit)
        assert done.returncode == 0, done.stderr
        task = json.loads(done.stdout)["task"]
        assert task["state"] == "TASK_STATE_COMPLETED"
        assert task["result"]["result"] == 42
        assert task["submitter"] == "admin"
        # Delegated: the orchestrator has no calculator, so a member ran it,
        # called over the members-only mutual-TLS peer port.
        assert task["owner_agent_id"] != entry["agent_id"]

        anonymous = _grpcurl("-cacert", ca, *submit)
        assert "Unauthenticated" in anonymous.stderr, anonymous.stderr
        assert admin not in anonymous.stderr
        plaintext = _grpcurl("-plaintext", "-H", f"authorization: Bearer {admin}", *submit)
        assert plaintext.returncode != 0

        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PRAXIS_TARGET": entry["grpc"],
            "PRAXIS_CACERT": ca,
            "PRAXIS_TOKEN": setup.token("client"),
        }
        argv = ["submit", "calculator", "--args", '{"expression": "1+2"}', "--wait", "--json"]
        cli = subprocess.run(
            [sys.executable, "-m", "praxis_grpc", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["submitter"] == "client"

        assert _metrics_status(entry["metrics"]) == 401
        assert _metrics_status(entry["metrics"], setup.token("reader")) == 200


def test_the_readmes_secure_commands_run_as_written(tmp_path: Path) -> None:
    block = marked_block(MARK)
    assert block[0].startswith("export PRAXIS_CACERT=")
    script = "\n".join(["set -euo pipefail", *block])
    command = [sys.executable, "-m", "praxis_grpc", "up", "--secure", "--json"]
    with up(command, cwd=tmp_path) as (document, _):  # the default --dir, as the README
        entry = document["nodes"][0]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PRAXIS_TARGET": entry["grpc"],
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        printed = run_shell(script.replace("<metrics>", entry["metrics"]), env, tmp_path, 120)
    assert '"submitter": "admin"' in printed
    assert '"result": 1024' in printed
    assert "praxis_cards_known 3.0" in printed
