"""Delegated round trip to a worker reached directly and to one behind NAT
reached through a relay, in Linux network namespaces; and a NATed worker's
time from start to its first routed task. Needs root and ``ip netns``.

Usage::

    sudo .venv/bin/python -m bench.nat_roundtrip [--requests N] [--warmup N] [--symmetric]

The lab of :mod:`praxis_grpc.testing.netns`: in the public namespace a relay
node (``p2p.relay_service``, the entry that takes the submissions) and a
worker it reaches over gRPC; behind a NAT a worker with no ``p2p.relays``,
which finds itself private by dial-back and reserves on the relay its card
offers. Every node is a separate ``praxis node`` process. The NATed worker is
started last: the client (in the public namespace) submits ``text_analyzer``,
which only it offers, every 100 ms from that moment until one completes; the
time from starting its process to that completion is printed. Then
sequential ``SubmitTask(echo, wait=True)`` at the relay, each naming its
worker as ``preferred_agent`` (counted only when that worker ran it), p50/p95
per path. Run it by hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from praxis_grpc.launcher import node_config
from praxis_grpc.testing import eventually
from praxis_grpc.testing.netns import PUBLIC_ADDR, NatLab, nat_lab, require_netns

_BASE: dict[str, Any] = {
    "cards": {"heartbeat": "500ms", "ttl": "10s"},
    "metrics": {"enabled": False},
    "tasks": {"max_concurrency": 16},
}

# At argv[1]: submit text_analyzer until it completes; print the wall time then.
_FIRST_TASK = """
import sys, time, grpc
from praxis_grpc.client import PraxisClient
deadline = time.monotonic() + 120
with PraxisClient(sys.argv[1], timeout=10) as client:
    while time.monotonic() < deadline:
        try:
            done = client.submit("text_analyzer", {"text": "first"}, wait=True, rpc_timeout=10)
            if done.task.state == 3:
                print(time.time())
                break
        except grpc.RpcError:
            pass
        time.sleep(0.1)
"""

# At argv[1]: echo with preferred_agent argv[2..]; JSON {agent: [latencies s]}.
_ROUNDTRIP = """
import json, sys, time
from praxis_grpc.client import PraxisClient
target, requests, warmup, agents = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
out = {}
with PraxisClient(target, timeout=30) as client:
    for agent in agents:
        out[agent] = []
        for index in range(warmup + requests):
            started = time.perf_counter()
            done = client.submit("echo", {"n": index}, wait=True, preferred_agent=agent)
            elapsed = time.perf_counter() - started
            ok = done.task.state == 3 and done.task.owner_agent_id == agent
            if ok and index >= warmup:
                out[agent].append(elapsed)
print(json.dumps(out))
"""


def _start(
    lab: NatLab, namespace: str, name: str, root: Path, overrides: dict[str, Any]
) -> tuple[Path, float]:
    """Start a node: its ready file and the wall time it was started at."""
    config = node_config(name, root / name, _BASE)
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    ready = root / f"{name}.ready.json"
    argv = [sys.executable, "-m", "praxis_grpc", "node", "--config", str(path)]
    with (root / f"{name}.log").open("wb") as log:
        started = time.time()
        lab.popen(namespace, [*argv, "--ready-file", str(ready)], stdout=log, stderr=log)
    return ready, started


def _ready(path: Path) -> dict[str, Any]:
    def written() -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path.exists() else None

    return eventually(written, timeout=60, interval=0.1, what=str(path))


def _percentiles(values: list[float]) -> tuple[float, float]:
    ms = sorted(1000 * value for value in values)
    if not ms:
        return float("nan"), float("nan")
    return ms[len(ms) // 2], ms[int(0.95 * (len(ms) - 1))]


def _run(lab: NatLab, root: Path, requests: int, warmup: int) -> None:
    relay_ready, _ = _start(
        lab,
        lab.public,
        "relay",
        root,
        {
            "api": {"host": PUBLIC_ADDR},
            "p2p": {"host": PUBLIC_ADDR, "port": 4001, "relay_service": True},
            "tools": {"builtins": ["system_info"]},
        },
    )
    relay = _ready(relay_ready)
    seed = [a for a in relay["p2p"] if "/tcp/4001/" in a]
    direct_ready, _ = _start(
        lab,
        lab.public,
        "direct",
        root,
        {
            "api": {"host": PUBLIC_ADDR},
            "p2p": {"host": PUBLIC_ADDR, "bootstrap_nodes": seed},
            "tools": {"builtins": ["echo"]},
        },
    )
    direct = _ready(direct_ready)
    host = lab.private_addr(0)
    natted_ready, started = _start(
        lab,
        lab.privates[0],
        "natted",
        root,
        {
            "api": {"host": host},
            "p2p": {"host": host, "bootstrap_nodes": seed},
            "tools": {"builtins": ["echo", "text_analyzer"]},
        },
    )
    first = lab.run(lab.public, [sys.executable, "-c", _FIRST_TASK, relay["grpc"]], timeout=150)
    if not first.strip():
        raise TimeoutError("the NATed worker got no task in 120 s")
    natted = _ready(natted_ready)
    print(f"nat={'symmetric' if lab.symmetric else 'endpoint-independent'}")
    print(f"natted worker: start to first routed task {float(first) - started:.2f} s")
    agents = {"direct (grpc)": direct["agent_id"], "relayed (libp2p)": natted["agent_id"]}
    argv = [sys.executable, "-c", _ROUNDTRIP, relay["grpc"], str(requests), str(warmup)]
    text = lab.run(lab.public, [*argv, *agents.values()], timeout=600)
    latencies = json.loads(text)
    print(f"requests={requests} warmup={warmup} concurrency=1")
    print(f"{'path':<18} {'ok':>6} {'p50 ms':>8} {'p95 ms':>8}")
    for name, agent in agents.items():
        p50, p95 = _percentiles(latencies[agent])
        print(f"{name:<18} {len(latencies[agent]):>6} {p50:>8.2f} {p95:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--symmetric", action="store_true", help="symmetric NATs")
    args = parser.parse_args()
    require_netns()
    with tempfile.TemporaryDirectory() as tmp, nat_lab(symmetric=args.symmetric) as lab:
        try:
            _run(lab, Path(tmp), args.requests, args.warmup)
        except (subprocess.SubprocessError, RuntimeError, TimeoutError) as exc:
            print(f"failed: {exc}; logs were in {tmp}", file=sys.stderr)
            raise


if __name__ == "__main__":
    main()
