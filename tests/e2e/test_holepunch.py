"""End to end in network namespaces: hole punching (``p2p.hole_punching``)
between two workers behind NATs that first reach each other through a relay.

Behind endpoint-independent NATs they end directly connected (a TCP
connection between the two NATs' public addresses, seen with ``ss``) and a
task between them still completes once the relay is gone; behind symmetric
NATs the punch fails, tasks keep going through the relay and SWIM declares
nobody dead.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from praxis_grpc.testing import eventually
from praxis_grpc.testing.netns import NatLab
from tests.e2e.test_nat_process import _ANALYZE, _CARDS, _ready, _start, _start_relay

pytestmark = pytest.mark.e2e

NO_DEATHS_WINDOW = 15.0
"""How long after a failed punch the workers are watched for SWIM deaths: well
past the suspicion timeout of the defaults (dead after at most 6 x 2 s)."""

# Prints {"outcome": count} of praxis_p2p_holepunch_total and {"state": n} of
# praxis_members for the node whose /metrics is at argv[1]; JSON.
_METRICS = """
import json, re, sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
punch = re.findall(r'praxis_p2p_holepunch_total[{]outcome="([a-z]+)"[}] ([0-9.e+]+)', text)
members = re.findall(r'praxis_members[{]state="([a-z]+)"[}] ([0-9.e+]+)', text)
print(json.dumps([{k: float(v) for k, v in punch}, {k: float(v) for k, v in members}]))
"""


def _port(info: dict[str, Any]) -> int:
    direct = [a for a in info["p2p"] if "/p2p-circuit" not in a]
    return int(direct[0].split("/tcp/")[1].split("/")[0])


def test_hole_punching_goes_direct_where_the_nat_allows_and_keeps_the_relay_where_not(
    any_lab: NatLab, tmp_path: Path
) -> None:
    lab = any_lab
    relay_started, _, seed = _start_relay(lab, tmp_path)
    started = []
    for index, namespace in enumerate(lab.privates):
        host = lab.private_addr(index)
        started.append(
            _start(
                lab,
                namespace,
                f"worker{index}",
                tmp_path,
                {
                    "api": {"host": host},
                    "metrics": {"host": host},
                    "p2p": {
                        "host": host,
                        "bootstrap_nodes": seed,
                        "relays": seed,
                        "hole_punching": True,
                    },
                    "tools": {"builtins": [["text_analyzer"], ["calculator"]][index]},
                },
            )
        )
    infos = [_ready(s) for s in started]

    def analyze() -> list[Any]:
        """text_analyzer submitted at worker1: it runs on worker0."""
        argv = [sys.executable, "-c", _ANALYZE, infos[1]["grpc"]]
        result: list[Any] = json.loads(lab.run(lab.privates[1], argv, timeout=60))
        return result

    def metrics(index: int) -> tuple[dict[str, float], dict[str, float]]:
        argv = [sys.executable, "-c", _METRICS, infos[index]["metrics"]]
        punch, members = json.loads(lab.run(lab.privates[index], argv))
        return punch, members

    def outcomes() -> dict[str, float]:
        total: dict[str, float] = {}
        for index in range(2):
            for outcome, count in metrics(index)[0].items():
                total[outcome] = total.get(outcome, 0.0) + count
        return total

    def nat_to_nat() -> list[str]:
        """Established TCP connections from worker0's listen port to worker1's NAT."""
        argv = ["ss", "-Htn", "state", "established", "sport", f"= :{_port(infos[0])}"]
        lines = lab.run(lab.privates[0], argv).splitlines()
        peer = f"{lab.nat_wan_addr(1)}:{_port(infos[1])}"
        return [line for line in lines if re.search(rf"\s{re.escape(peer)}\s*$", line)]

    def no_deaths() -> None:
        for index in range(2):
            members = metrics(index)[1]
            assert (members["dead"], members["left"], members["alive"]) == (0, 0, 3), members

    def outcome() -> dict[str, float] | None:
        if lab.symmetric:
            no_deaths()  # while punching, too
        return {k: v for k, v in outcomes().items() if k in ("direct", "failed")} or None

    completed = 3  # TASK_STATE_COMPLETED
    names = ["relay", "worker0", "worker1"]
    cards = lab.run(lab.privates[1], [sys.executable, "-c", _CARDS, infos[1]["grpc"], *names])
    assert any("/p2p-circuit/" in a for a in json.loads(cards)["worker0"]), cards
    # The first call opens the relayed connection between the workers; the punch follows.
    assert analyze() == [completed, infos[0]["agent_id"]]
    finished = eventually(outcome, timeout=60, interval=0.5, what="a hole punch outcome")
    if not lab.symmetric:
        assert finished == {"direct": 1.0}
        assert nat_to_nat(), "no TCP connection between the two NATs"
        # With the relay gone, only the direct connection can carry the call.
        relay_started[1].kill()
        relay_started[1].wait(10)
        assert analyze() == [completed, infos[0]["agent_id"]]
        return
    assert finished == {"failed": 1.0}
    assert not nat_to_nat()
    # The relayed connection carries on: tasks complete and nobody is declared dead.
    deadline = time.monotonic() + NO_DEATHS_WINDOW
    while time.monotonic() < deadline:
        assert analyze() == [completed, infos[0]["agent_id"]]
        no_deaths()
    # One session for the pair (one initiator), not repeated while they stay connected.
    assert outcomes() == {"failed": 1.0}
