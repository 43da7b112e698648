"""End to end: SWIM failure detection on a mesh of five real node processes.

A killed process (kill -9) refuses connections and is removed at once; a
stopped one (SIGSTOP) keeps its sockets open and is removed by the probe path
(suspect, then dead after the suspicion timeout); one resumed (SIGCONT) while
only suspected refutes and is removed nowhere. Every node watches the cards
(WatchCards) for the whole test, so a removal that is undone later still shows.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest

from praxis_grpc._gen.praxis.v1 import agent_service_pb2, card_service_pb2
from praxis_grpc.client import PraxisClient
from praxis_grpc.launcher import LocalMesh, NodeProcess
from praxis_grpc.testing import eventually

pytestmark = pytest.mark.e2e

# Suspicion lasts at least 8 * 0.5 s here (up to 6x without confirmations), wide
# enough to resume a stopped node on a busy machine before anyone declares it dead.
BASE = {
    "tools": {"builtins": ["calculator", "echo"]},
    "cards": {"heartbeat": "1s", "ttl": "30s"},
    "p2p": {"rendezvous": ""},
    "membership": {"suspicion_mult": 8},
}
ALIVE = agent_service_pb2.MEMBER_STATE_ALIVE
SUSPECT = agent_service_pb2.MEMBER_STATE_SUSPECT
DEAD = agent_service_pb2.MEMBER_STATE_DEAD
REMOVED = card_service_pb2.CARD_EVENT_TYPE_REMOVED


class CardWatch:
    """Every REMOVED event one node streams, collected in a thread."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.removed: list[str] = []
        self._client = PraxisClient(node.grpc, timeout=None)
        self._stream = self._client.cards_stub.WatchCards(card_service_pb2.WatchCardsRequest())
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        try:
            for event in self._stream:
                if event.type == REMOVED:
                    self.removed.append(event.card.name)
        except grpc.RpcError:
            return  # cancelled by close(), or the node stopped

    def close(self) -> None:
        self._client.close()  # cancels the stream
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    local = LocalMesh(tmp_path_factory.mktemp("swim") / "mesh", 5, BASE)
    local.start()
    try:
        yield local
    finally:
        for node in local.nodes:  # a stopped node cannot shut down
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
        local.stop()


@pytest.fixture(scope="module")
def watches(mesh: LocalMesh) -> Iterator[dict[str, CardWatch]]:
    started = {node.name: CardWatch(node) for node in mesh.nodes}
    try:
        yield started
    finally:
        for watch in started.values():
            watch.close()


def members(node: NodeProcess) -> dict[str, agent_service_pb2.Member]:
    with PraxisClient(node.grpc, timeout=5) as client:
        return {m.agent_id: m for m in client.list_peers_and_members()[1]}


def card_names(node: NodeProcess) -> set[str]:
    with PraxisClient(node.grpc, timeout=5) as client:
        return {card.name for card in client.list_cards()}


def agent_id(node: NodeProcess) -> str:
    return str(node.info["agent_id"])


def removed_everywhere(survivors: list[NodeProcess], victim: NodeProcess) -> None:
    def gone() -> bool:
        return all(victim.name not in card_names(node) for node in survivors)

    eventually(gone, timeout=60, what=f"{victim.name} removed everywhere")


def test_praxis_peers_prints_each_member_and_its_state(mesh: LocalMesh) -> None:
    # The member table was lost once when the CLI became a package.
    node = mesh.nodes[0]
    others = {agent_id(n) for n in mesh.nodes[1:]}
    eventually(lambda: others <= set(members(node)), timeout=20, what="every member listed")
    shown = subprocess.run(
        [sys.executable, "-m", "praxis_grpc", "--target", node.grpc, "peers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.startswith("MEMBER"), shown.stdout
    table = shown.stdout.split("\n\n")[0].splitlines()[1:]  # then the peer table
    rows = {line.split()[0]: line.split()[1] for line in table}
    assert {rows.get(other) for other in others} == {"alive"}, shown.stdout


def test_a_node_resumed_while_suspected_is_removed_nowhere(
    mesh: LocalMesh, watches: dict[str, CardWatch]
) -> None:
    victim, others = mesh.nodes[4], mesh.nodes[:4]
    victim_id = agent_id(victim)
    before = members(others[0])[victim_id].incarnation
    victim.process.send_signal(signal.SIGSTOP)
    try:
        eventually(
            lambda: any(members(n)[victim_id].state == SUSPECT for n in others),
            timeout=60,
            what=f"someone suspects {victim.name}",
        )
    finally:
        victim.process.send_signal(signal.SIGCONT)

    def refuted() -> bool:
        seen = [members(node)[victim_id] for node in others]
        return all(m.state == ALIVE and m.incarnation > before for m in seen)

    eventually(refuted, timeout=30, what=f"everyone sees {victim.name} refute")
    everyone = {node.name for node in mesh.nodes}
    for node in mesh.nodes:
        assert card_names(node) == everyone
        assert victim.name not in watches[node.name].removed


def test_a_stopped_node_is_removed_everywhere_by_the_probe_path(
    mesh: LocalMesh, watches: dict[str, CardWatch]
) -> None:
    victim = mesh.nodes[3]
    survivors = [node for node in mesh.nodes if node is not victim]
    victim.process.send_signal(signal.SIGSTOP)
    removed_everywhere(survivors, victim)
    verdicts = [members(node)[agent_id(victim)] for node in survivors]
    assert all(m.state == DEAD for m in verdicts)
    learnt = {m.learnt for m in verdicts}
    assert "suspicion timeout" in learnt
    assert "connection refused" not in learnt  # a stopped process still accepts
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)


def test_a_killed_node_is_removed_everywhere_as_refused(
    mesh: LocalMesh, watches: dict[str, CardWatch]
) -> None:
    victim = mesh.nodes[2]
    survivors = [node for node in mesh.nodes if node is not victim and node.process.poll() is None]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    removed_everywhere(survivors, victim)
    verdicts = [members(node)[agent_id(victim)] for node in survivors]
    assert all(m.state == DEAD for m in verdicts)
    assert "connection refused" in {m.learnt for m in verdicts}
