"""Admission to the mesh on real loopback sockets (issue 13): a stranger that reaches a
member's p2p port with a fresh key (no certificate, one from another CA, or a member's
certificate replayed under its own key) gets no card accepted, receives no card, and
is disconnected and counted; members admit each other and exchange cards and gossip.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from praxis_grpc import certs
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.discovery._admission import _BACKLOG, Admission, AdmissionOptions
from praxis_grpc.discovery.libp2p import HostOptions, MeshHost
from praxis_grpc.discovery.members import MembershipOptions
from praxis_grpc.membership import State
from tests.unit.test_libp2p_host import FAST, Node, Recorder, run_trio, until
from tests.unit.test_swim_host import TIMING, Members

# py-libp2p 0.8.1 now and then leaves the socket of a connection closed while the
# other side closes it too (a refused stranger) to the garbage collector; it is
# collected after each test here, so no later test is blamed for it.
pytestmark = pytest.mark.filterwarnings("ignore:Exception ignored in.*<socket.socket")


@pytest.fixture(autouse=True)
def collected() -> Iterator[None]:
    yield
    gc.collect()


def credentials(ca_dir: Path, out: Path, name: str, key_pair: KeyPair) -> ClusterCredentials:
    peer_id = ID.from_pubkey(key_pair.public_key).to_base58()
    issued = certs.issue(ca_dir, name, out, peer_id=peer_id)
    return ClusterCredentials.load(issued.ca_cert, issued.cert, issued.key, peer_id=peer_id)


async def start(
    nursery: trio.Nursery,
    key_pair: KeyPair,
    admission: AdmissionOptions | None,
    card: bytes,
    members: Members | None = None,
    **overrides: object,
) -> Node:
    options = HostOptions(key_pair=key_pair, admission=admission, **{**FAST, **overrides})  # type: ignore[arg-type]
    events = Recorder()
    swim = None if members is None else MembershipOptions(TIMING, 1, members)
    host = MeshHost(options, events, swim)
    host.set_local_card(card)
    scope = trio.CancelScope()

    async def run(task_status: object = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await host.run(task_status=task_status)  # type: ignore[arg-type]

    addrs: list[str] = await nursery.start(run)
    return Node(host, events, addrs[0], scope)


def members_only(creds: ClusterCredentials, refused: list[str]) -> AdmissionOptions:
    return AdmissionOptions(creds, timeout=2.0, on_refused=refused.append)


@pytest.mark.parametrize(
    ("stranger", "reason"),
    [
        ("no certificate", "no_certificate"),
        ("another CA", "untrusted"),
        ("a member's certificate", "peer_id_mismatch"),
    ],
)
def test_a_stranger_with_a_fresh_key_neither_joins_nor_reads_the_mesh(
    tmp_path: Path, stranger: str, reason: str
) -> None:
    ca, other_ca = tmp_path / "ca", tmp_path / "other"
    certs.init_ca(ca)
    certs.init_ca(other_ca)
    keys = {name: create_new_key_pair() for name in ("a", "b", "s")}
    a_creds = credentials(ca, tmp_path / "a", "a", keys["a"])
    b_creds = credentials(ca, tmp_path / "b", "b", keys["b"])
    s_creds: ClusterCredentials | None = None
    if stranger == "another CA":
        s_creds = credentials(other_ca, tmp_path / "s", "s", keys["s"])
    elif stranger == "a member's certificate":
        s_creds = a_creds  # sent as is, under the stranger's own Noise key
    refused: list[str] = []
    ignored: list[str] = []

    async def test(nursery: trio.Nursery) -> None:
        a = await start(nursery, keys["a"], members_only(a_creds, refused), b"card-a")
        s = await start(
            nursery,
            keys["s"],
            None if s_creds is None else members_only(s_creds, ignored),
            b"card-s",
        )
        await reach(s, a)
        b = await start(
            nursery, keys["b"], members_only(b_creds, refused), b"card-b", bootstrap=(a.addr,)
        )
        await until(lambda: reason in refused, f"a refused the stranger ({reason})")
        await until(lambda: a.events.got(b"card-b", "exchange", b.peer_id), "a has b's card")
        await until(lambda: b.events.got(b"card-a", "exchange", a.peer_id), "b has a's card")
        await until(lambda: a.knows_subscribers(b), "a sees b subscribed")
        await _publish_until(a, lambda: b.events.got(b"gossip-a", "gossip", a.peer_id))
        assert s.events.cards == []  # not a's card, not a's gossip
        assert not any(peer == s.peer_id for _, _, peer in a.events.cards)
        assert s.peer_id not in {status.peer_id for status in a.host.peers()}
        assert set(refused) == {reason}

    run_trio(test)


def test_members_admit_each_other_both_ways(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    certs.init_ca(ca)
    keys = [create_new_key_pair() for _ in range(2)]
    creds = [credentials(ca, tmp_path / str(i), f"n{i}", key) for i, key in enumerate(keys)]
    refused: list[str] = []

    async def test(nursery: trio.Nursery) -> None:
        a = await start(nursery, keys[0], members_only(creds[0], refused), b"card-a")
        b = await start(
            nursery, keys[1], members_only(creds[1], refused), b"card-b", bootstrap=(a.addr,)
        )
        await until(lambda: a.events.got(b"card-b", "exchange", b.peer_id), "a has b's card")
        await until(lambda: b.events.got(b"card-a", "exchange", a.peer_id), "b has a's card")
        await until(lambda: b.knows_subscribers(a), "b sees a subscribed")
        await _publish_until(b, lambda: a.events.got(b"gossip-a", "gossip", b.peer_id))
        assert refused == []

    run_trio(test)


def test_swim_members_never_hear_of_a_stranger(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    certs.init_ca(ca)
    keys = [create_new_key_pair() for _ in range(3)]
    creds = [credentials(ca, tmp_path / str(i), f"n{i}", key) for i, key in enumerate(keys[:2])]
    refused: list[str] = []
    swims = [Members() for _ in keys]

    async def test(nursery: trio.Nursery) -> None:
        a = await start(nursery, keys[0], members_only(creds[0], refused), b"card-a", swims[0])
        s = await start(nursery, keys[2], None, b"card-s", swims[2])
        await reach(s, a)
        b = await start(
            nursery,
            keys[1],
            members_only(creds[1], refused),
            b"card-b",
            swims[1],
            bootstrap=(a.addr,),
        )
        await until(lambda: "no_certificate" in refused, "a refused the stranger")
        await until(
            lambda: (
                swims[0].states.get(b.peer_id) is State.ALIVE
                and swims[1].states.get(a.peer_id) is State.ALIVE
            ),
            "a and b are SWIM members of each other",
        )
        assert s.peer_id not in swims[0].states
        assert s.peer_id not in swims[1].states
        assert b.peer_id not in swims[2].states  # the stranger learnt no member from a
        assert s.events.cards == []

    run_trio(test)


async def reach(stranger: Node, member: Node) -> None:
    """The stranger dials the member once (a bootstrap address would redial it after
    every refusal, and a dial cancelled by the test's end can leave a socket behind)."""
    host = stranger.host._host
    assert host is not None
    with contextlib.suppress(Exception):  # the member may close it at once
        await host.connect(info_from_p2p_addr(Multiaddr(member.addr)))


async def _publish_until(node: Node, arrived: Callable[[], bool]) -> None:
    """Publish b"gossip-a" until ``arrived`` (the mesh forms a heartbeat after subscribing)."""
    with trio.fail_after(10):
        while not arrived():
            await node.host.publish(b"gossip-a")
            with trio.move_on_after(0.2):
                while not arrived():
                    await trio.sleep(0.02)


def test_connections_beyond_the_backlog_are_shed_not_remembered(tmp_path: Path) -> None:
    """A flood of connections that never handshake cannot grow admission's state:
    past the queue of pending handshakes a peer is refused (``backlog``), and a
    stream from a peer whose connection was not announced starts its handshake."""
    certs.init_ca(tmp_path / "ca")
    creds = credentials(tmp_path / "ca", tmp_path / "a", "a", create_new_key_pair())
    refused: list[str] = []
    admission = Admission(host=None, options=members_only(creds, refused))  # type: ignore[arg-type]
    flood = [ID(f"stranger-{i}".encode()) for i in range(_BACKLOG + 50)]

    async def check() -> None:
        for peer_id in flood:
            admission.start(peer_id)
        assert refused == ["backlog"] * 50
        shed = flood[-1]
        assert not await admission.wait(shed)  # refused at once, nothing kept for it
        assert len(admission._decided) == _BACKLOG

    trio.run(check)
