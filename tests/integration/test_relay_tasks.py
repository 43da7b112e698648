"""Circuit relay v2 and tasks over libp2p, on loopback with in-process nodes.

A worker whose gRPC endpoint cannot be dialed (it advertises 127.0.0.2, where
nothing listens) keeps a reservation on a relay node and advertises its
``/p2p-circuit`` address; tasks for its tool submitted at the relay reach it
over ``/praxis/peer/1.0.0``. (The same in real NAT: tests/e2e/test_nat_process.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.client import PraxisClient
from praxis_grpc.node import Node
from praxis_grpc.testing import make_config, running_node


async def until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def p2p(**settings: Any) -> dict[str, Any]:
    return {"enabled": True, "rendezvous": "", **settings}


def circuit_addrs(node: Node, agent_id: str) -> list[str]:
    card = node.directory.get(agent_id)
    if card is None:
        return []
    return [e.address for e in card.endpoints if "/p2p-circuit" in e.address]


def reservations(node: Node) -> float | None:
    return node.metrics.registry.get_sample_value("praxis_p2p_relay_reservations")


async def start(stack: contextlib.AsyncExitStack, data_dir: Path, **settings: Any) -> Node:
    """A node named after ``data_dir`` (metrics off), running until ``stack`` closes."""
    config = make_config(data_dir, name=data_dir.name, metrics={"enabled": False}, **settings)
    return await stack.enter_async_context(running_node(config))


@contextlib.asynccontextmanager
async def relay_and_worker(tmp_path: Path, **worker_p2p: Any) -> AsyncIterator[tuple[Node, Node]]:
    """A relay node and a worker whose gRPC endpoint nothing can dial, with
    ``p2p.relays`` naming the relay and, unless ``worker_p2p`` says otherwise,
    ``p2p.reachability: private`` (on loopback, peers would dial it back and
    find it public); yields once the relay sees the worker's relayed address."""
    settings: dict[str, Any] = {"reachability": "private", **worker_p2p}
    async with contextlib.AsyncExitStack() as stack:
        relay = await start(
            stack, tmp_path / "relay", tools={"builtins": ["echo"]}, p2p=p2p(relay_service=True)
        )
        seed = relay.p2p_addrs[:1]
        # The worker advertises 127.0.0.2: nothing listens there.
        worker = await start(
            stack,
            tmp_path / "worker",
            api={"advertise_host": "127.0.0.2"},
            tools={"builtins": ["sleep", "text_analyzer"]},
            p2p=p2p(bootstrap_nodes=seed, relays=seed, **settings),
        )
        if settings["reachability"] == "private":
            await until(lambda: circuit_addrs(relay, worker.agent_id))
        yield relay, worker


async def test_a_worker_behind_a_relay_advertises_its_circuit_address(tmp_path: Path) -> None:
    async with relay_and_worker(tmp_path) as (relay, worker):
        [circuit] = circuit_addrs(relay, worker.agent_id)
        assert circuit.startswith(relay.p2p_addrs[0] + "/p2p-circuit/p2p/")
        assert circuit.endswith(worker.agent_id)
        card = relay.directory.get(worker.agent_id)
        assert card is not None
        assert card.peer_address == circuit
        assert card.grpc_address.startswith("127.0.0.2:")


async def test_tasks_reach_a_worker_without_grpc_reachability_over_libp2p(
    tmp_path: Path,
) -> None:
    async with relay_and_worker(tmp_path) as (relay, worker):
        with PraxisClient(relay.endpoints.grpc) as client:
            done = await asyncio.to_thread(
                client.submit, "text_analyzer", {"text": "hello relayed world"}, wait=True
            )
            assert done.task.state == types_pb2.TASK_STATE_COMPLETED, done.task
            assert done.task.owner_agent_id == worker.agent_id

            running = await asyncio.to_thread(client.submit, "sleep", {"seconds": 60})
            task_id = running.task.task_id
            assert running.task.owner_agent_id == worker.agent_id
            await until(lambda: worker.engine.load().in_flight == 1)

            def watch() -> list[int]:
                return [state.state for state in client.watch_task(task_id)]

            watching = asyncio.create_task(asyncio.to_thread(watch))
            cancelled = await asyncio.to_thread(client.cancel_task, task_id, "test")
            assert cancelled.state == types_pb2.TASK_STATE_CANCELED
            states = await asyncio.wait_for(watching, 30)
            assert states[-1] == types_pb2.TASK_STATE_CANCELED
        await until(lambda: worker.engine.load().in_flight == 0)


async def test_nodes_that_peers_can_dial_back_are_public_and_hold_no_reservation(
    tmp_path: Path,
) -> None:
    """On loopback everyone is reachable: the dial-back says so, in the metric
    and the card too; the worker then holds no reservation though it has relays."""
    async with relay_and_worker(tmp_path, reachability="auto") as (relay, worker):
        await until(lambda: relay.reachability == worker.reachability == "public")
        value = worker.metrics.registry.get_sample_value(
            "praxis_p2p_reachability", {"state": "public"}
        )
        assert value == 1.0

        def public_direct_card() -> bool:
            card = relay.directory.get(worker.agent_id)
            public = card is not None and card.reachability == "public"
            return public and not circuit_addrs(relay, worker.agent_id)

        await until(public_direct_card)
        assert not [a for a in worker.p2p_addrs if "/p2p-circuit" in a]
        assert reservations(worker) == 0


async def test_a_private_node_without_relays_reserves_on_one_its_cards_offer(
    tmp_path: Path,
) -> None:
    """No ``p2p.relays``: the worker finds the relay service in the relay's card."""
    async with contextlib.AsyncExitStack() as stack:
        relay = await start(
            stack, tmp_path / "relay", tools={"builtins": ["echo"]}, p2p=p2p(relay_service=True)
        )
        worker = await start(
            stack,
            tmp_path / "worker",
            api={"advertise_host": "127.0.0.2"},
            tools={"builtins": ["text_analyzer"]},
            p2p=p2p(bootstrap_nodes=relay.p2p_addrs[:1], reachability="private"),
        )
        await until(lambda: circuit_addrs(relay, worker.agent_id))
        [circuit] = circuit_addrs(relay, worker.agent_id)
        assert circuit.startswith(relay.p2p_addrs[0] + "/p2p-circuit/")
        card = relay.directory.get(worker.agent_id)
        assert card is not None
        assert card.reachability == "private"
        with PraxisClient(relay.endpoints.grpc) as client:
            done = await asyncio.to_thread(
                client.submit, "text_analyzer", {"text": "found my relay"}, wait=True
            )
        assert done.task.state == types_pb2.TASK_STATE_COMPLETED, done.task
        assert done.task.owner_agent_id == worker.agent_id


async def test_without_a_relay_the_same_worker_cannot_be_given_tasks(tmp_path: Path) -> None:
    """The control: the worker's gRPC endpoint really is unreachable."""
    async with contextlib.AsyncExitStack() as stack:
        entry = await start(stack, tmp_path / "entry", tools={"builtins": ["echo"]}, p2p=p2p())
        worker = await start(
            stack,
            tmp_path / "worker",
            api={"advertise_host": "127.0.0.2"},
            tools={"builtins": ["text_analyzer"]},
            p2p=p2p(bootstrap_nodes=entry.p2p_addrs[:1]),
        )
        await until(lambda: entry.directory.get(worker.agent_id) is not None)
        with PraxisClient(entry.endpoints.grpc) as client, pytest.raises(grpc.RpcError) as failed:
            await asyncio.to_thread(
                client.submit, "text_analyzer", {"text": "x"}, wait=True, rpc_timeout=20
            )
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_lost_relay_is_replaced_by_a_reservation_on_another(tmp_path: Path) -> None:
    """Three relays, reservations on two at a time: when one relay dies, the
    worker reserves on the third, advertises that instead, and still gets tasks."""
    async with contextlib.AsyncExitStack() as stack:
        relays: list[Node] = []
        for index in range(3):
            seed = relays[0].p2p_addrs[:1] if relays else []
            relay = await start(
                stack,
                tmp_path / f"relay{index}",
                tools={"builtins": ["echo"]},
                p2p=p2p(relay_service=True, bootstrap_nodes=seed),
            )
            relays.append(relay)
        seeds = [relay.p2p_addrs[0] for relay in relays]
        worker = await start(
            stack,
            tmp_path / "worker",
            api={"advertise_host": "127.0.0.2"},
            tools={"builtins": ["text_analyzer"]},
            p2p=p2p(bootstrap_nodes=seeds[:1], relays=seeds, reachability="private"),
        )

        def relayed_by() -> set[str]:
            return {a.split("/p2p-circuit")[0] for a in worker.p2p_addrs if "/p2p-circuit" in a}

        await until(lambda: relayed_by() == set(seeds[:2]))
        assert reservations(worker) == 2
        await relays[0].aclose(grace=0)
        await until(lambda: relayed_by() == set(seeds[1:]))
        assert reservations(worker) == 2
        await until(
            lambda: (
                set(circuit_addrs(relays[2], worker.agent_id))
                == {a for a in worker.p2p_addrs if "/p2p-circuit" in a}
            )
        )
        with PraxisClient(relays[2].endpoints.grpc) as client:
            done = await asyncio.to_thread(
                client.submit, "text_analyzer", {"text": "after a relay died"}, wait=True
            )
        assert done.task.state == types_pb2.TASK_STATE_COMPLETED, done.task
        assert done.task.owner_agent_id == worker.agent_id


async def test_announced_addresses_replace_the_listen_ones(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "n",
        name="n",
        metrics={"enabled": False},
        p2p=p2p(announce_addrs=["/dns4/node.example/tcp/4001"]),
    )
    async with running_node(config) as node:
        assert node.p2p_addrs == [f"/dns4/node.example/tcp/4001/p2p/{node.agent_id}"]
        libp2p = [e.address for e in node.directory.local.endpoints if e.transport == "libp2p"]
        assert libp2p == node.p2p_addrs
