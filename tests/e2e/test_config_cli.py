"""``praxis node --config <bad file>``: exit 2, the key named, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
QUIET = "api: {port: 0}\nmetrics: {enabled: false}\np2p: {enabled: false}\n"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # issue 9: exited 1 with a traceback
        ("binary", "bad.yaml: not UTF-8 text"),
        ("bad_peer_id", "bad.yaml: p2p.bootstrap_nodes[0]: '/ip4/127.0.0.1/tcp/1/p2p/nope' is"),
        # issue 9: exited 2 without naming the key
        ("data_dir_is_a_file", "cannot start node: data_dir: "),
        ("store_is_a_directory", "cannot start node: tasks.store: unable to open database"),
        # exited 1 with a traceback (consensus built outside the startup error handling)
        ("missing_raft_secret_file", "ha.consensus.raft.secret_file "),
    ],
)
def test_bad_config_exits_2_naming_the_key_without_traceback(
    tmp_path: Path, name: str, expected: str
) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    data_dir = f"data_dir: {tmp_path / 'data'}\n"
    configs = {
        "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
        "bad_peer_id": (
            f"api: {{port: 0}}\nmetrics: {{enabled: false}}\n{data_dir}"
            "p2p: {port: 0, bootstrap_nodes: [/ip4/127.0.0.1/tcp/1/p2p/nope]}\n"
        ).encode(),
        "data_dir_is_a_file": f"{QUIET}data_dir: {tmp_path / 'a_file'}\n".encode(),
        "store_is_a_directory": f"{QUIET}{data_dir}tasks: {{store: {tmp_path}/a_dir}}\n".encode(),
        "missing_raft_secret_file": (
            f"{QUIET}{data_dir}ha:\n  mode: active-passive\n  consensus:\n    backend: raft\n"
            f"    raft: {{address: '127.0.0.1:1', secret_file: {tmp_path / 'nope'}}}\n"
        ).encode(),
    }
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(configs[name])
    result = subprocess.run(
        [sys.executable, "-m", "praxis_grpc", "node", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
