"""Admission across NAT traversal (issues 13 and 14), in network namespaces: a relay
and two workers behind NATs, all with ``cluster`` certificates from one CA, run
tasks over relayed connections; strangers behind a NAT get nothing from them.

One mesh serves every assertion (each lab test takes ~20 s). Strangers:

* a praxis node with a certificate from another CA, reserving on the relay:
  refused by the relay (``untrusted``), it never holds a member's card and
  members never list it or give it a task for the tool it also offers;
* a bare libp2p host with a fresh key and no certificate that asks the relay
  for a reservation and a circuit to a NATed member: the relay serves its hop
  protocol to members only, so it gets neither (nor the member's card), and
  the relay counts the refusal (``no_certificate``).

Admission on relayed connections themselves is what the member-to-member
task from one NATed worker to the other rests on (a circuit through the relay).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from praxis_grpc.secure_setup import SecureSetup
from praxis_grpc.testing import eventually
from praxis_grpc.testing.netns import PUBLIC_ADDR, NatLab, nat_lab, require_netns
from tests.e2e.test_nat_process import _ANALYZE, _CARDS, _TASKS, RELAY_PORT, _ready, _start

pytestmark = [
    pytest.mark.e2e,
    # py-libp2p 0.8.1 leaves the socket of a refused stranger's connection to the GC.
    pytest.mark.filterwarnings("ignore:Exception ignored in.*<socket.socket"),
]

# The node at argv[1]: the names of the cards it lists, and the owners of argv[2] calculator
# tasks submitted there.
_CALC = """
import json, sys
from praxis_grpc.client import PraxisClient
with PraxisClient(sys.argv[1], timeout=30) as client:
    names = sorted(c.name for c in client.list_cards())
    owners = [
        client.submit("calculator", {"expression": f"{i} + 1"}, wait=True).task.owner_agent_id
        for i in range(int(sys.argv[2]))
    ]
print(json.dumps({"cards": names, "owners": owners}))
"""

# The /metrics at argv[1]: {reason: count} of praxis_admission_rejected_total.
_REFUSED = """
import json, re, sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
found = re.findall(r'praxis_admission_rejected_total[{]reason="(\\w+)"[}] ([0-9.]+)', text)
print(json.dumps({reason: float(count) for reason, count in found}))
"""

# A stranger: a bare libp2p host (fresh key, no certificate) in a private namespace
# (listening on argv[1]) asks the relay argv[2] for a reservation and for a circuit to the
# member at argv[3], then for that member's card and a peer call; JSON of what it got.
_STRANGER = """
import json, sys, trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr
from praxis_grpc.discovery._options import HostOptions
from praxis_grpc.discovery._relay import Relaying, RelayOptions
from praxis_grpc.discovery._wire import _read_frame, _write_frame, request_card
from praxis_grpc.discovery._host_setup import new_noise_host
from praxis_grpc.discovery.streams import PEER_PROTOCOL

listen, relay, member = sys.argv[1:4]
out = {}
async def attempt(name, call):
    try:
        with trio.fail_after(20):
            out[name] = repr(await call())
    except Exception as exc:
        out[name] = "failed: " + type(exc).__name__
async def peer_call(host, peer_id):
    stream = await host.new_stream(peer_id, [TProtocol(PEER_PROTOCOL)])
    await _write_frame(stream, b"\\x00" * 8)
    return await _read_frame(stream, 1 << 20)
async def main():
    host = new_noise_host(HostOptions(key_pair=create_new_key_pair()))
    relaying = Relaying(host, RelayOptions(relays=(relay,)), lambda addrs: None)
    target = info_from_p2p_addr(Multiaddr(member)).peer_id
    async with host.run([Multiaddr(f"/ip4/{listen}/tcp/0")]):
        async with background_trio_service(relaying.protocol):
            with trio.fail_after(20):
                await relaying._tend()  # reserve, as a node behind NAT does
            out["reserved"] = relaying.circuit_addrs != []
            await attempt("circuit", lambda: relaying.dial(member))
            await attempt("card", lambda: request_card(host, target, b"", 1 << 16))
            await attempt("peer_call", lambda: peer_call(host, target))
trio.run(main)
print(json.dumps(out))
"""


@pytest.fixture
def lab3() -> Iterator[NatLab]:
    """The lab with three private namespaces (two workers and a stranger)."""
    require_netns()
    with nat_lab(3) as built:
        yield built


def test_members_behind_nats_admit_each_other_over_the_relay_and_no_stranger(
    lab3: NatLab, tmp_path: Path
) -> None:
    lab = lab3
    members, others = SecureSetup(tmp_path / "ca"), SecureSetup(tmp_path / "other-ca")
    members.prepare()
    others.prepare()

    def cluster(setup: SecureSetup, name: str) -> dict[str, Any]:
        keys: dict[str, Any] = setup.node_overlay(name, tmp_path / name)["cluster"]
        return {**keys, "admission_timeout": "5s"}

    def start(namespace: str, name: str, setup: SecureSetup, **sections: Any) -> Any:
        return _start(lab, namespace, name, tmp_path, {"cluster": cluster(setup, name), **sections})

    relay = _ready(
        start(
            lab.public,
            "relay",
            members,
            api={"host": PUBLIC_ADDR},
            metrics={"host": PUBLIC_ADDR},
            p2p={"host": PUBLIC_ADDR, "port": RELAY_PORT, "relay_service": True},
            tools={"builtins": ["echo"]},
        )
    )
    seed = [a for a in relay["p2p"] if f"/tcp/{RELAY_PORT}/" in a]
    assert seed, relay

    def behind_nat(index: int, name: str, setup: SecureSetup, tools: list[str], **p2p: Any) -> Any:
        host = lab.private_addr(index)
        return start(
            lab.privates[index],
            name,
            setup,
            api={"host": host},
            metrics={"host": host},
            p2p={"host": host, "bootstrap_nodes": seed, **p2p},
            tools={"builtins": tools},
        )

    # worker1 is given no relay: it finds itself private and the relay in a member's card.
    started = [
        behind_nat(0, "worker0", members, ["sleep", "text_analyzer"], relays=seed),
        behind_nat(1, "worker1", members, ["calculator"]),
        behind_nat(2, "stranger", others, ["calculator"], relays=seed),
    ]
    worker0, worker1, stranger = (_ready(s) for s in started)
    everyone = ["relay", "worker0", "worker1"]

    def run(namespace: str, script: str, *argv: str, timeout: float = 90) -> Any:
        return json.loads(lab.run(namespace, [sys.executable, "-c", script, *argv], timeout))

    # 1. Cards reach every member over relayed connections; none from the stranger.
    for namespace, info in [
        (lab.public, relay),
        (lab.privates[0], worker0),
        (lab.privates[1], worker1),
    ]:
        cards = run(namespace, _CARDS, info["grpc"], *everyone)
        assert sorted(cards) == everyone, cards
    assert any("/p2p-circuit/" in a for a in cards["worker0"]), cards

    # Tasks for a NATed worker's tool, submitted at the relay: done and cancelled there,
    # peer calls over /praxis/peer/1.0.0 on admitted relayed connections.
    out = run(lab.public, _TASKS, relay["grpc"], timeout=110)
    completed, canceled = 3, 5  # TASK_STATE_COMPLETED, TASK_STATE_CANCELED
    assert out["analyzed"] == [completed, worker0["agent_id"]]
    assert out["sleeping_owner"] == worker0["agent_id"]
    assert [out["cancelled"], out["watched"][-1]] == [canceled, canceled]
    # From one NATed member to the other: a circuit through the relay, admitted both ways.
    assert run(lab.privates[1], _ANALYZE, worker1["grpc"]) == [completed, worker0["agent_id"]]

    # 2. The stranger with another CA's certificate was refused by the relay ...
    def refused(namespace: str, info: dict[str, Any]) -> dict[str, float]:
        counts: dict[str, float] = run(namespace, _REFUSED, info["metrics"], timeout=30)
        return counts

    eventually(
        lambda: refused(lab.public, relay).get("untrusted", 0) >= 1, timeout=30, what="refused"
    )
    # ... holds no member's card, and no member lists it or gives it a calculator task.
    assert run(lab.privates[2], _CALC, stranger["grpc"], "0")["cards"] == ["stranger"]
    at_relay = run(lab.public, _CALC, relay["grpc"], "4")
    assert at_relay == {"cards": everyone, "owners": [worker1["agent_id"]] * 4}

    # A stranger without a certificate asks the relay for a reservation and a circuit to
    # worker0: the relay serves members only, so it gets neither, nor worker0's card.
    before = refused(lab.public, relay).get("no_certificate", 0)
    circuit = next(a for a in cards["worker0"] if "/p2p-circuit/" in a)
    got = run(lab.privates[2], _STRANGER, lab.private_addr(2), seed[0], circuit, timeout=90)
    assert got["reserved"] is False, got
    assert [got["circuit"][:7], got["card"][:7], got["peer_call"][:7]] == ["failed:"] * 3, got
    eventually(
        lambda: refused(lab.public, relay).get("no_certificate", 0) > before,
        timeout=30,
        what="the relay refusing the stranger",
    )
    assert refused(lab.privates[0], worker0) == {}, "worker0 never met a stranger"
    for namespace, info in [(lab.public, relay), (lab.privates[1], worker1)]:
        assert "stranger" not in run(namespace, _CALC, info["grpc"], "0")["cards"]
