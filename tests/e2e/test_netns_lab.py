"""The NAT laboratory itself: reachability, mapping behaviour and cleanup."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from praxis_grpc.testing.netns import PUBLIC_ADDR, NatLab, lab_names, nat_lab, require_netns

# Listens on PORT, accepts COUNT connections, prints the peers' (host, port) as JSON.
_SERVER = """
import json, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(); print("ready", flush=True)
seen = []
for _ in range(count):
    c, addr = s.accept(); seen.append(addr); c.close()
print(json.dumps(seen), flush=True)
"""

# From one local port, connects to each of the given ports in turn.
_CLIENT = """
import socket, sys
host, local, ports = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
for port in ports:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", local)); s.connect((host, port)); s.close()
"""


def _observed_ports(lab: NatLab) -> tuple[set[str], set[int]]:
    """Connect from private 0 out of one local port to two public servers; the source
    (address, port)s the public side saw."""
    seen: list[list[object]] = []
    for port in (7001, 7002):
        server = lab.popen(
            lab.public,
            [sys.executable, "-c", _SERVER, str(port), "1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        lab.run(lab.privates[0], [sys.executable, "-c", _CLIENT, PUBLIC_ADDR, "40000", str(port)])
        seen.extend(json.loads(server.stdout.readline()))
        server.wait(10)
    return {str(addr[0]) for addr in seen}, {int(str(addr[1])) for addr in seen}


def test_private_side_reaches_out_through_its_nat(lab: NatLab) -> None:
    hosts, ports = _observed_ports(lab)
    assert hosts == {lab.nat_wan_addr(0)}  # masqueraded
    assert ports == {40000}  # endpoint-independent: the port is kept for both destinations


def test_symmetric_nat_maps_each_destination_to_another_port(symmetric_lab: NatLab) -> None:
    hosts, ports = _observed_ports(symmetric_lab)
    assert hosts == {symmetric_lab.nat_wan_addr(0)}
    assert len(ports) == 2
    assert 40000 not in ports


@pytest.mark.parametrize("target", ["private", "nat"])
def test_nothing_behind_a_nat_is_reachable_from_outside(lab: NatLab, target: str) -> None:
    lab.popen(lab.privates[0], [sys.executable, "-c", _SERVER, "7003", "1"], stdout=subprocess.PIPE)
    lab.popen(lab.nats[0], [sys.executable, "-c", _SERVER, "7003", "1"], stdout=subprocess.PIPE)
    address = lab.private_addr(0) if target == "private" else lab.nat_wan_addr(0)
    probe = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, 7003), timeout=1.0)\n"
        "    print('reached')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    for source in (lab.public, lab.privates[1]):
        assert lab.python(source, probe).strip() != "reached"


def test_every_namespace_and_link_is_removed_even_after_a_failure() -> None:
    require_netns()
    built: list[str] = []

    def fail_inside() -> None:
        with nat_lab() as lab:
            built.append(lab.prefix)
            lab.popen(lab.privates[0], ["sleep", "600"])
            assert len(lab_names(lab.prefix)) == 5  # public, two NATs, two private namespaces
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        fail_inside()
    assert lab_names(built[0]) == []
