"""Per-peer bounds on inbound peer calls (issue 13): the pure counter, and the
libp2p ``/praxis/peer/1.0.0`` handler on real loopback hosts, where a peer
that floods a node is refused RESOURCE_EXHAUSTED past
``cluster.max_calls_per_peer`` while another peer is still served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import trio
from google.rpc import status_pb2

from praxis_grpc.call_slots import PerPeerSlots
from praxis_grpc.discovery._peer_stream import make_call
from praxis_grpc.discovery._reach import HostReach, ReachOptions
from praxis_grpc.discovery.streams import END, ERROR
from praxis_grpc.reach import reach_options
from praxis_grpc.testing import make_config
from tests.unit.test_libp2p_host import Node, Recorder, run_trio, until

HOLD, QUICK = b"hold", b"quick"
LIMIT = 2


def test_slots_are_counted_per_peer_and_given_back() -> None:
    slots = PerPeerSlots(2)
    assert slots.acquire("b")
    assert slots.acquire("b")
    assert not slots.acquire("b")  # b is at its bound
    assert slots.acquire("c")  # c is not
    slots.release("b")
    assert slots.in_progress("b") == 1
    assert slots.acquire("b")
    for peer in ("b", "b", "c"):
        slots.release(peer)
    assert len(slots) == 0  # nothing kept for peers without calls
    with pytest.raises(ValueError, match="at least 1"):
        PerPeerSlots(0)


def test_the_bound_comes_from_the_config(tmp_path: Path) -> None:
    config = make_config(tmp_path, cluster={"max_calls_per_peer": 7})
    counted: list[int] = []
    options = reach_options(config, lambda: counted.append(1))
    assert options.max_calls_per_peer == 7
    options.on_call_refused()
    assert counted == [1]
    assert make_config(tmp_path).cluster.max_calls_per_peer == 2048


class Answers:
    """The callee's answers: ``hold`` waits for :meth:`release_all`, ``quick`` ends at once."""

    def __init__(self) -> None:
        self.held: list[trio.MemorySendChannel[bytes]] = []

    def start(self, request: bytes, send: trio.MemorySendChannel[bytes]) -> Callable[[], None]:
        if request == HOLD:
            self.held.append(send)
        else:
            send.send_nowait(bytes([END]))
        return lambda: None

    def release_all(self) -> None:
        for send in self.held:
            send.send_nowait(bytes([END]))
        self.held.clear()


async def start(nursery: trio.Nursery, reach: HostReach, bootstrap: tuple[str, ...] = ()) -> Node:
    from libp2p.crypto.ed25519 import create_new_key_pair

    from praxis_grpc.discovery.libp2p import HostOptions, MeshHost

    options = HostOptions(
        key_pair=create_new_key_pair(),
        discovery_interval=0.3,
        ping_interval=0.3,
        bootstrap=bootstrap,
    )
    events = Recorder()
    host = MeshHost(options, events, reach=reach)
    scope = trio.CancelScope()

    async def run(task_status: object = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await host.run(task_status=task_status)  # type: ignore[arg-type]

    addrs: list[str] = await nursery.start(run)
    return Node(host, events, addrs[0], scope)


def caller() -> HostReach:
    return HostReach(ReachOptions(), lambda _addrs: None, None)


def test_a_flooding_peer_is_refused_past_its_bound_and_another_is_served() -> None:
    answers = Answers()
    refused: list[int] = []
    served = HostReach(
        ReachOptions(max_calls_per_peer=LIMIT, on_call_refused=lambda: refused.append(1)),
        lambda _addrs: None,
        answers.start,
    )

    async def call(reach: HostReach, address: str, request: bytes, frames: list[bytes]) -> None:
        stream = await reach.open(address)
        await make_call(stream, request, 1 << 20, frames.append)

    async def test(nursery: trio.Nursery) -> None:
        a = await start(nursery, served)
        flooder_reach, other_reach = caller(), caller()
        flooder = await start(nursery, flooder_reach, (a.addr,))
        await start(nursery, other_reach, (a.addr,))
        held: list[list[bytes]] = [[] for _ in range(LIMIT)]
        for frames in held:
            nursery.start_soon(call, flooder_reach, a.addr, HOLD, frames)
        await until(lambda: len(answers.held) == LIMIT, "a holds the flooder's calls")
        # One call more from the flooder: answered RESOURCE_EXHAUSTED, never run.
        over: list[bytes] = []
        await call(flooder_reach, a.addr, HOLD, over)
        assert len(over) == 1
        assert over[0][0] == ERROR
        status = status_pb2.Status.FromString(over[0][1:])
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "cluster.max_calls_per_peer" in status.message
        assert len(answers.held) == LIMIT
        assert refused == [1]
        # Another peer is served meanwhile.
        other: list[bytes] = []
        await call(other_reach, a.addr, QUICK, other)
        assert other == [bytes([END])]
        # Once its calls end, the flooder gets its slots back.
        answers.release_all()
        await until(lambda: all(frames == [bytes([END])] for frames in held), "held calls end")
        await until(lambda: served._calls.in_progress(flooder.peer_id) == 0, "slots back")
        again: list[bytes] = []
        await call(flooder_reach, a.addr, QUICK, again)
        assert again == [bytes([END])]
        assert refused == [1]

    run_trio(test)
