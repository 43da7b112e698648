"""End to end in network namespaces: two workers behind NATs (no inbound
reachability) join through a relay node in the public namespace, and get tasks.

The test process talks to the nodes only from inside their namespaces
(``NatLab.python`` runs a client script there): nothing here is reachable
from the root namespace, by design.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from praxis_grpc.launcher import node_config
from praxis_grpc.testing import eventually
from praxis_grpc.testing.netns import PUBLIC_ADDR, NatLab

pytestmark = pytest.mark.e2e

BASE: dict[str, Any] = {
    "cards": {"heartbeat": "500ms", "ttl": "10s"},
    "p2p": {"enabled": True, "rendezvous": ""},
}
RELAY_PORT = 4001

# Waits until the node at argv[1] knows every card named in argv[2:], each worker's with
# a relayed address; prints their endpoints.
_CARDS = """
import json, sys, time
from praxis_grpc.client import PraxisClient
target, names = sys.argv[1], set(sys.argv[2:])
deadline = time.monotonic() + 60
def relayed(cards):
    return all(any("/p2p-circuit/" in a for a in cards[n]) for n in names if "worker" in n)
with PraxisClient(target, timeout=5) as client:
    while True:
        cards = {c.name: [e.address for e in c.endpoints] for c in client.list_cards()}
        if names <= set(cards) and relayed(cards) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
print(json.dumps(cards))
"""

# At the node at argv[1]: run text_analyzer, then start a sleep, watch and cancel it.
_TASKS = """
import json, sys, threading
from praxis_grpc.client import PraxisClient
out = {}
with PraxisClient(sys.argv[1], timeout=30) as client:
    done = client.submit("text_analyzer", {"text": "across two NATs"}, wait=True)
    out["analyzed"] = [done.task.state, done.task.owner_agent_id]
    sleeping = client.submit("sleep", {"seconds": 120})
    task_id = sleeping.task.task_id
    out["sleeping_owner"] = sleeping.task.owner_agent_id
    states = []
    first = threading.Event()
    def watch():
        for task in client.watch_task(task_id):
            states.append(task.state)
            first.set()
    watcher = threading.Thread(target=watch)
    watcher.start()
    first.wait(30)
    out["cancelled"] = client.cancel_task(task_id, "e2e").state
    watcher.join(30)
    out["watched"] = states
print(json.dumps(out))
"""


_ANALYZE = """
import json, sys
from praxis_grpc.client import PraxisClient
with PraxisClient(sys.argv[1], timeout=30) as client:
    done = client.submit("text_analyzer", {"text": "relayed"}, wait=True)
print(json.dumps([done.task.state, done.task.owner_agent_id]))
"""


# At the node at argv[1]: its own reachability (GetAgent) and that of every card it knows,
# once every one of the argv[2:] names is known and checked; JSON.
_REACH = """
import json, sys, time
from praxis_grpc.client import PraxisClient
target, names = sys.argv[1], set(sys.argv[2:])
deadline = time.monotonic() + 60
with PraxisClient(target, timeout=5) as client:
    while True:
        own = client.get_agent().reachability
        cards = {c.name: [c.reachability, c.relay_service] for c in client.list_cards()}
        checked = names <= set(cards) and all(cards[n][0] for n in names)
        if own and checked or time.monotonic() > deadline:
            break
        time.sleep(0.2)
print(json.dumps({"own": own, "cards": cards}))
"""

# Prints the reachability the node whose /metrics is at argv[1] reports, once known.
_REACHABILITY = """
import re, sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
    known = re.findall(r'praxis_p2p_reachability[{]state="(public|private)"[}] 1[.]0', text)
    if known or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(known[0] if known else "unknown")
"""


def _start(
    lab: NatLab, namespace: str, name: str, tmp: Path, overrides: dict[str, Any]
) -> tuple[Path, subprocess.Popen[Any]]:
    """Start a node in ``namespace``: its ready file and its process."""
    config = node_config(name, tmp / name, BASE)
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    ready = tmp / f"{name}.ready.json"
    log = (tmp / f"{name}.log").open("wb")
    argv = [sys.executable, "-m", "praxis_grpc", "node", "--config", str(path)]
    process = lab.popen(namespace, [*argv, "--ready-file", str(ready)], stdout=log, stderr=log)
    log.close()
    return ready, process


def _ready(started: tuple[Path, subprocess.Popen[Any]]) -> dict[str, Any]:
    path = started[0]

    def written() -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path.exists() else None

    return eventually(written, timeout=60, what=str(path))


def _start_relay(
    lab: NatLab, tmp_path: Path
) -> tuple[tuple[Path, subprocess.Popen[Any]], dict[str, Any], list[str]]:
    """Start the public relay (``p2p.relay_service``, echo only) and wait for it:
    its process, its ready file's contents and its listen address to bootstrap from."""
    started = _start(
        lab,
        lab.public,
        "relay",
        tmp_path,
        {
            "api": {"host": PUBLIC_ADDR},
            "metrics": {"host": PUBLIC_ADDR},
            "p2p": {"host": PUBLIC_ADDR, "port": RELAY_PORT, "relay_service": True},
            "tools": {"builtins": ["echo"]},
        },
    )
    relay = _ready(started)
    seed = [a for a in relay["p2p"] if f"/tcp/{RELAY_PORT}/" in a]
    assert seed, relay
    return started, relay, seed


def test_workers_behind_nat_are_members_and_get_tasks_through_a_relay(
    any_lab: NatLab, tmp_path: Path
) -> None:
    """Relaying does not depend on the NAT's mapping: the same with a symmetric NAT."""
    lab = any_lab
    _, relay, seed = _start_relay(lab, tmp_path)
    tools = [["sleep", "text_analyzer"], ["calculator"]]
    workers = []
    for index, namespace in enumerate(lab.privates):
        host = lab.private_addr(index)
        # worker1 is given no relay: it finds itself private and the relay in its card.
        relays = {"relays": seed} if index == 0 else {}
        ready = _start(
            lab,
            namespace,
            f"worker{index}",
            tmp_path,
            {
                "api": {"host": host},
                "metrics": {"host": host},
                "p2p": {"host": host, "bootstrap_nodes": seed, **relays},
                "tools": {"builtins": tools[index]},
            },
        )
        workers.append(ready)
    infos = [_ready(ready) for ready in workers]
    everyone = {"relay", "worker0", "worker1"}

    def cards_at(namespace: str, grpc: str) -> dict[str, list[str]]:
        text = lab.run(namespace, [sys.executable, "-c", _CARDS, grpc, *everyone], timeout=90)
        cards: dict[str, list[str]] = json.loads(text)
        return cards

    at_relay = cards_at(lab.public, relay["grpc"])
    assert set(at_relay) == everyone
    for index, info in enumerate(infos):
        circuits = [a for a in at_relay[f"worker{index}"] if "/p2p-circuit/" in a]
        assert circuits, at_relay  # reached through the relay: advertised as such
        assert all(a.startswith(seed[0]) for a in circuits)
        at_worker = cards_at(lab.privates[index], info["grpc"])
        assert set(at_worker) == everyone
        other = f"worker{1 - index}"
        assert any("/p2p-circuit/" in a for a in at_worker[other]), at_worker

    text = lab.run(lab.public, [sys.executable, "-c", _TASKS, relay["grpc"]], timeout=110)
    out = json.loads(text)
    completed, canceled = 3, 5  # TASK_STATE_COMPLETED, TASK_STATE_CANCELED
    assert out["analyzed"] == [completed, infos[0]["agent_id"]]
    assert out["sleeping_owner"] == infos[0]["agent_id"]
    assert out["cancelled"] == canceled
    assert out["watched"][-1] == canceled

    # From one NATed worker to the other: the call goes through the relay.
    text = lab.run(lab.privates[1], [sys.executable, "-c", _ANALYZE, infos[1]["grpc"]], timeout=60)
    assert json.loads(text) == [completed, infos[0]["agent_id"]]

    # Through any member, with the CLI: worker1 (itself behind NAT) describes worker0,
    # and the relay places a task on worker0 by name (target_agent).
    praxis = [sys.executable, "-m", "praxis_grpc", "--json"]
    via = ["--via", infos[1]["grpc"], "--agent", infos[0]["agent_id"]]
    described = json.loads(lab.run(lab.privates[1], [*praxis, "agent", *via]))
    assert (described["name"], described["reachability"]) == ("worker0", "REACHABILITY_PRIVATE")
    submit = ["submit", "text_analyzer", "--args", '{"text": "by name"}', "--wait"]
    via = ["--via", relay["grpc"], "--agent", infos[0]["agent_id"]]
    targeted = json.loads(lab.run(lab.public, [*praxis, *submit, *via], timeout=60))
    assert (targeted["state"], targeted["owner_agent_id"]) == (
        "TASK_STATE_COMPLETED",
        infos[0]["agent_id"],
    )

    def reachability(namespace: str, info: dict[str, Any]) -> str:
        return lab.run(namespace, [sys.executable, "-c", _REACHABILITY, info["metrics"]]).strip()

    # Dial-back: peers reach the relay; nothing reaches a worker behind its NAT.
    assert reachability(lab.public, relay) == "public"
    for namespace, info in zip(lab.privates, infos, strict=True):
        assert reachability(namespace, info) == "private"

    # The same in GetAgent and in the cards each node holds (1 public, 2 private).
    public, private = 1, 2
    expected = {"relay": [public, True], "worker0": [private, False], "worker1": [private, False]}
    for namespace, info, own in [
        (lab.public, relay, public),
        *((ns, i, private) for ns, i in zip(lab.privates, infos, strict=True)),
    ]:
        text = lab.run(namespace, [sys.executable, "-c", _REACH, info["grpc"], *everyone])
        assert json.loads(text) == {"own": own, "cards": expected}


def test_a_relay_that_dies_is_replaced_by_another(lab: NatLab, tmp_path: Path) -> None:
    """A worker behind NAT reserves on two relays; when one dies its card
    advertises only the other, through which it still gets tasks."""
    relays: list[dict[str, Any]] = []
    processes = []
    for index, port in enumerate((RELAY_PORT, RELAY_PORT + 1)):
        started = _start(
            lab,
            lab.public,
            f"relay{index}",
            tmp_path,
            {
                "api": {"host": PUBLIC_ADDR},
                "p2p": {
                    "host": PUBLIC_ADDR,
                    "port": port,
                    "relay_service": True,
                    "bootstrap_nodes": [a for r in relays for a in r["p2p"]][:1],
                },
                "tools": {"builtins": ["echo"]},
            },
        )
        processes.append(started[1])
        relays.append(_ready(started))
    seeds = [r["p2p"][0] for r in relays]
    host = lab.private_addr(0)
    worker = _ready(
        _start(
            lab,
            lab.privates[0],
            "worker0",
            tmp_path,
            {
                "api": {"host": host},
                "p2p": {"host": host, "bootstrap_nodes": seeds, "relays": seeds},
                "tools": {"builtins": ["text_analyzer"]},
            },
        )
    )

    def worker_circuits(*names: str) -> set[str]:
        text = lab.run(lab.public, [sys.executable, "-c", _CARDS, relays[1]["grpc"], *names])
        cards: dict[str, list[str]] = json.loads(text)
        return {a.split("/p2p-circuit")[0] for a in cards.get("worker0", []) if "/p2p-circuit" in a}

    everyone = ("relay0", "relay1", "worker0")
    eventually(
        lambda: worker_circuits(*everyone) == set(seeds), timeout=30, what="both reservations"
    )
    processes[0].kill()
    processes[0].wait(10)
    eventually(
        lambda: worker_circuits("relay1", "worker0") == {seeds[1]}, timeout=30, what="relay0 gone"
    )
    text = lab.run(lab.public, [sys.executable, "-c", _ANALYZE, relays[1]["grpc"]], timeout=60)
    assert json.loads(text) == [3, worker["agent_id"]]  # COMPLETED, on the worker
