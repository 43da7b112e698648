"""What a ``praxis`` process imports before it does its job (issue 11: start-up cost).

Every CLI test, every node a test starts and every tool worker a node starts is
a new process; each heavy module it imports costs every one of them. py-libp2p
alone (with trio, which it pulls in) costs about a second of CPU here
(``python -m bench.startup``). A client command talks gRPC to a node and needs
none of the node's machinery, a config error is reported before any of it is
loaded, and a tool worker loads only the module of the function it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: The node's heavy dependencies, none of which a client command needs.
NODE_ONLY = (
    "libp2p",
    "trio",
    "multiaddr",
    "pysyncobj",
    "jsonschema",
    "pydantic",
    "prometheus_client",
    "psutil",
    "cryptography",
    "praxis_grpc.node",
    "praxis_grpc.tasks.engine",
    "praxis_grpc.consensus.raft",
    "praxis_grpc.consensus.etcd",
    # Tens of milliseconds, for a version string hardly anyone asks for.
    "importlib.metadata",
)
#: Never imported outside the tests.
TEST_ONLY = ("hypothesis", "pytest", "praxis_grpc.testing")

# Runs ``praxis ARGS...`` in this interpreter and, at exit, writes which of the
# watched modules were imported to the file named by argv[1].
_RUNNER = """
import atexit, json, runpy, sys
out, watched = sys.argv[1], json.loads(sys.argv[2])
def report():
    loaded = [m for m in watched if m in sys.modules]
    with open(out, "w") as f:
        json.dump(loaded, f)
atexit.register(report)
sys.argv = ["praxis", *sys.argv[3:]]
runpy.run_module("praxis_grpc", run_name="__main__", alter_sys=True)
"""


def imported(tmp_path: Path, *argv: str) -> list[str]:
    """Run ``praxis *argv``; return which heavy modules it imported."""
    out = tmp_path / "imported.json"
    watched = [*NODE_ONLY, *TEST_ONLY]
    subprocess.run(
        [sys.executable, "-c", _RUNNER, str(out), json.dumps(watched), *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    return list(json.loads(out.read_text()))


def _closed_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["submit"],  # the usage error
        ["submit", "echo", "--args", '{"a": 1}'],
        ["status"],
        ["tasks"],
        ["task", "get", "a3b4c5d6-0000-4000-8000-000000000000"],
        ["agent"],
        ["cards"],
        ["peers"],
    ],
    ids=lambda argv: "-".join(argv[:2]),
)
def test_a_client_command_imports_nothing_of_the_node(tmp_path: Path, argv: list[str]) -> None:
    target = ["--target", _closed_port()]  # nothing listens: the connection error
    assert imported(tmp_path, *argv, *target) == []


def test_a_config_error_is_reported_before_the_node_is_imported(tmp_path: Path) -> None:
    """``praxis node`` imported the whole node (libp2p included) before it read
    the config, so a bad config cost as much as a start."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("api: {port: nope}\n")
    found = imported(tmp_path, "node", "--config", str(bad))
    assert not [m for m in found if m in ("libp2p", "trio", "praxis_grpc.node")]
    assert not [m for m in found if m in TEST_ONLY]


def test_a_tool_worker_loads_only_what_its_functions_need(tmp_path: Path) -> None:
    """A worker imports ``praxis_grpc.tools`` to reach the module it runs; the
    package imported every tool (jsonschema, pydantic, psutil) on each spawn."""
    modules = [
        "praxis_grpc.tools._worker",
        "praxis_grpc.tools.calculator",
        "praxis_grpc.tools.text",
        "praxis_grpc.tools.files",
    ]
    probe = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {list(NODE_ONLY)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(done.stdout) == []


def test_the_tools_package_names_each_export_once_where_it_is_loaded_from() -> None:
    """``praxis_grpc.tools`` loads its names on first use from a table of their
    modules; the table and ``__all__`` (which mypy and ``import *`` read) must
    name the same things, and each must resolve to what its module defines."""
    import importlib

    import praxis_grpc.tools as tools

    table: dict[str, str] = tools._WHERE
    assert set(table) == set(tools.__all__)
    for name, module in table.items():
        defined = getattr(importlib.import_module(f"praxis_grpc.tools.{module}"), name)
        assert getattr(tools, name) is defined, name
