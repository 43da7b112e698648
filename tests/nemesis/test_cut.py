"""The partition harness checks its cut: a socket of the victim that receives
anything while it is cut off is reported as a leak, and a cut that holds
reports none. One small echo process in its own cgroup; needs root, nft and
cgroup2 (skipped otherwise)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from bench._nemesis_net import Cut, _nft, unavailable

pytestmark = pytest.mark.nemesis

# Opens its listener only after it was moved into its cgroup (a line on
# stdin), prints the port, then echoes one connection.
ECHO = """
import socket, sys
sys.stdin.readline()
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
connection, _ = listener.accept()
while data := connection.recv(64):
    connection.sendall(data)
"""


@pytest.fixture
def echo() -> Iterator[tuple[Cut, subprocess.Popen[str], socket.socket]]:
    if why := unavailable():
        pytest.skip(f"cannot cut a process off: {why}")
    cut = Cut(uuid.uuid4().hex[:8])
    with subprocess.Popen(
        [sys.executable, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            cut.adopt("echo", process.pid)
            process.stdin.write("go\n")
            process.stdin.flush()
            port = int(process.stdout.readline())
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"hello")
                assert client.recv(64) == b"hello"
                yield cut, process, client
        finally:
            process.kill()
            process.wait(10)
            with contextlib.suppress(OSError):
                cut.close()


def test_a_cut_that_holds_reports_no_leak(
    echo: tuple[Cut, subprocess.Popen[str], socket.socket],
) -> None:
    cut, process, client = echo
    cut.isolate("echo", process.pid)
    client.sendall(b"dropped")  # dropped before the echo's socket sees it
    assert cut.leaks() == []
    cut.heal()
    assert client.recv(64) == b"dropped"  # retransmitted after the heal


def test_segments_that_reach_the_victim_during_the_cut_are_a_leak(
    echo: tuple[Cut, subprocess.Popen[str], socket.socket],
) -> None:
    cut, process, client = echo
    cut.isolate("echo", process.pid)
    # The rules let packets through, as a socket the match misses would.
    _nft(f"flush table inet {cut._table}\n")
    client.sendall(b"through")
    assert client.recv(64) == b"through"  # so the echo's socket received it
    leaks = cut.leaks()
    assert len(leaks) == 1
    assert "ESTAB" in leaks[0]
    assert "during the cut" in leaks[0]
