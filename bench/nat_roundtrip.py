"""Delegated round trip and accepted tasks/s to a worker reached directly,
through a relay, and after hole punching, in Linux network namespaces, with
the relay's CPU per task on each path; and a NATed worker's time from start
to its first routed task. Needs root and ``ip netns``.

Usage::

    sudo .venv/bin/python -m bench.nat_roundtrip [--requests N] [--warmup N]
        [--tasks N] [--seconds S] [--concurrency C] [--symmetric]

The lab of :mod:`praxis_grpc.testing.netns`, three NATs: in the public
namespace a relay node (``p2p.relay_service``) and a worker reached over
gRPC ("direct"); behind NAT 0 the target worker ("natted", no
``p2p.relays``: it finds itself private by dial-back and reserves on the
relay its card offers); behind NAT 1 and NAT 2 the two entry nodes that take
the submissions: ``entry_relay`` (hole punching off: it reaches the natted
worker through the relay) and ``entry_punch`` (``p2p.hole_punching`` on, as on
the natted worker: after its first call the two punch through their NATs and
calls take the direct connection; behind symmetric NATs the punch fails and
they stay relayed). Every node is a separate ``praxis node`` process. The
natted worker is started before the entries: the client submits
``text_analyzer``, which only it offers, at the relay every 100 ms from that
moment until one completes; the time from starting its process to that
completion is printed. Then, per path: sequential ``SubmitTask(echo,
wait=True)`` naming the worker as ``preferred_agent`` (counted only when that
worker ran it), p50/p95; then closed-loop ``SubmitTask(echo)`` from
``--concurrency`` threads until ``--tasks`` are accepted by the worker or
``--seconds`` pass, tasks/s; the relay process's CPU seconds (user+system,
``/proc``) over both, per task. Run it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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

# At argv[1]: echo with preferred_agent argv[2]: sequential round trips, then a
# closed loop; JSON {"latencies": [s], "accepted": n, "seconds": s}.
_PATH = """
import json, sys, threading, time
from praxis_grpc.client import PraxisClient
target, agent = sys.argv[1], sys.argv[2]
requests, warmup, tasks, seconds, concurrency = (float(a) for a in sys.argv[3:8])
out = {"latencies": []}
with PraxisClient(target, timeout=30) as client:
    for index in range(int(warmup + requests)):
        started = time.perf_counter()
        done = client.submit("echo", {"n": index}, wait=True, preferred_agent=agent)
        elapsed = time.perf_counter() - started
        if done.task.state == 3 and done.task.owner_agent_id == agent and index >= warmup:
            out["latencies"].append(elapsed)
    accepted, errors = [0], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    def loop():
        while time.monotonic() < deadline:
            with lock:
                if accepted[0] >= tasks:
                    return
            try:
                done = client.submit("echo", {"n": 0}, preferred_agent=agent)
            except Exception as exc:
                with lock:
                    errors.append(repr(exc)[:200])
                continue
            if done.task.owner_agent_id == agent:
                with lock:
                    accepted[0] += 1
    started = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(int(concurrency))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out["seconds"] = time.monotonic() - started
    out["accepted"] = accepted[0]
    out["errors"] = errors
print(json.dumps(out))
"""

# Prints the number of established TCP connections from argv[1] (ip:port) to argv[2] (ip:port).
_DIRECT = """
import subprocess, sys
source, peer = sys.argv[1], sys.argv[2]
lines = subprocess.run(["ss", "-Htn", "state", "established", "src", source],
                       capture_output=True, text=True, check=True).stdout.splitlines()
print(sum(1 for line in lines if line.split()[-1] == peer))
"""


@dataclass
class _Node:
    info: dict[str, Any]
    process: subprocess.Popen[Any]
    started: float


def _start(lab: NatLab, namespace: str, name: str, root: Path, overrides: dict[str, Any]) -> _Node:
    """Start a node and wait until it is ready."""
    config = node_config(name, root / name, _BASE)
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    ready = root / f"{name}.ready.json"
    argv = [sys.executable, "-m", "praxis_grpc", "node", "--config", str(path)]
    with (root / f"{name}.log").open("wb") as log:
        started = time.time()
        process = lab.popen(namespace, [*argv, "--ready-file", str(ready)], stdout=log, stderr=log)

    def written() -> dict[str, Any] | None:
        return json.loads(ready.read_text()) if ready.exists() else None

    info = eventually(written, timeout=60, interval=0.1, what=str(ready))
    return _Node(info, process, started)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listen(node: _Node) -> str:
    """ip:port of the node's (direct) libp2p listen address."""
    addr = next(a for a in node.info["p2p"] if "/p2p-circuit" not in a)
    parts = addr.split("/")
    return f"{parts[2]}:{parts[4]}"


def _percentiles(values: list[float]) -> tuple[float, float]:
    ms = sorted(1000 * value for value in values)
    if not ms:
        return float("nan"), float("nan")
    return ms[len(ms) // 2], ms[int(0.95 * (len(ms) - 1))]


def _run(lab: NatLab, root: Path, args: argparse.Namespace) -> None:
    relay = _start(
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
    seed = [a for a in relay.info["p2p"] if "/tcp/4001/" in a]

    def private(index: int, name: str, tools: list[str], punch: bool) -> _Node:
        host = lab.private_addr(index)
        p2p = {"host": host, "bootstrap_nodes": seed, "hole_punching": punch}
        overrides = {"api": {"host": host}, "p2p": p2p, "tools": {"builtins": tools}}
        return _start(lab, lab.privates[index], name, root, overrides)

    direct = _start(
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
    # Timed from before its start: _start waits for the ready file.
    natted_started = time.time()
    first_argv = [sys.executable, "-c", _FIRST_TASK, relay.info["grpc"]]
    first_client = lab.popen(lab.public, first_argv, stdout=subprocess.PIPE, text=True)
    natted = private(0, "natted", ["echo", "text_analyzer"], True)
    first, _ = first_client.communicate(timeout=150)
    if not first.strip():
        raise TimeoutError("the NATed worker got no task in 120 s")
    entry_relay = private(1, "entry_relay", ["system_info"], False)
    entry_punch = private(2, "entry_punch", ["system_info"], True)
    print(f"nat={'symmetric' if lab.symmetric else 'endpoint-independent'}")
    print(f"natted worker: start to first routed task {float(first) - natted_started:.2f} s")
    punch_peer = f"{lab.nat_wan_addr(0)}:{_listen(natted).split(':')[1]}"

    def punched() -> bool:
        argv = [sys.executable, "-c", _DIRECT, _listen(entry_punch), punch_peer]
        return int(lab.run(lab.privates[2], argv).strip()) > 0

    paths = [
        ("direct (grpc)", lab.privates[1], entry_relay, direct),
        ("relayed (libp2p)", lab.privates[1], entry_relay, natted),
        ("hole-punched", lab.privates[2], entry_punch, natted),
    ]
    numbers = [str(n) for n in (args.requests, args.warmup, args.tasks, args.seconds)]
    print(
        f"requests={args.requests} warmup={args.warmup} closed loop: "
        f"concurrency={args.concurrency} up to {args.tasks} tasks or {args.seconds} s"
    )
    header = ("path", "ok", "p50 ms", "p95 ms", "tasks/s", "relay CPU", "errors")
    print("{:<17} {:>5} {:>8} {:>8} {:>8} {:>10} {:>6}".format(*header))
    for name, namespace, entry, worker in paths:
        label = name
        argv = [sys.executable, "-c", _PATH, entry.info["grpc"], worker.info["agent_id"]]
        if worker is natted and entry is entry_punch:
            warm = [*argv, "0", str(args.warmup), "0", "0", "1"]
            lab.run(namespace, warm, timeout=300)  # the first call opens the relayed connection
            try:
                eventually(punched, timeout=30, interval=0.5, what="a direct connection")
            except TimeoutError:
                label = "punch failed"
        cpu = _cpu_seconds(relay.process.pid)
        text = lab.run(namespace, [*argv, *numbers, str(args.concurrency)], timeout=900)
        cpu = _cpu_seconds(relay.process.pid) - cpu
        out = json.loads(text)
        p50, p95 = _percentiles(out["latencies"])
        done = len(out["latencies"]) + out["accepted"]
        rate = out["accepted"] / out["seconds"] if out["seconds"] else float("nan")
        per_task = 1000 * cpu / done if done else float("nan")
        print(
            f"{label:<17} {len(out['latencies']):>5} {p50:>8.2f} {p95:>8.2f} "
            f"{rate:>8.1f} {per_task:>7.2f} ms {len(out['errors']):>6}"
        )
        if out["errors"]:
            print(f"  first error: {out['errors'][0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--tasks", type=int, default=1000, help="closed loop: at most")
    parser.add_argument("--seconds", type=float, default=15.0, help="closed loop: at most")
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop: threads")
    parser.add_argument("--symmetric", action="store_true", help="symmetric NATs")
    args = parser.parse_args()
    require_netns()
    with tempfile.TemporaryDirectory() as tmp, nat_lab(3, symmetric=args.symmetric) as lab:
        try:
            _run(lab, Path(tmp), args)
        except (subprocess.SubprocessError, RuntimeError, TimeoutError) as exc:
            print(f"failed: {exc}; logs were in {tmp}", file=sys.stderr)
            raise


if __name__ == "__main__":
    main()
