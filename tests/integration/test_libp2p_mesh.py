"""In-process nodes on real libp2p hosts over loopback: bootstrap and mDNS meshes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from praxis_grpc.node import Node
from praxis_grpc.testing import make_config, running_node


async def until(
    predicate: Callable[[], bool], timeout: float = 20.0, nodes: Sequence[Node] = ()
) -> None:
    """Wait for ``predicate``; on timeout, fail with what each of ``nodes`` lists
    and how it sees each member (so a failure in CI says why)."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        views = []
        for node in nodes:
            members = sorted(f"{m.member[-6:]}:{m.state.name}" for m in await node.members())
            views.append(
                f"{node.config.agent.name} ({node.agent_id[-6:]}) lists "
                f"{sorted(names(node))}, members {members}"
            )
        raise AssertionError("timed out; " + "; ".join(views)) from None


def p2p(**settings: Any) -> Mapping[str, Any]:
    return {"enabled": True, "rendezvous": "", "disconnect_grace": "300ms", **settings}


def names(node: Node) -> set[str]:
    return {card.name for card in node.directory.cards()}


async def test_five_nodes_knowing_one_bootstrap_peer_converge(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            running_node(
                make_config(tmp_path / "n0", name="n0", metrics={"enabled": False}, p2p=p2p())
            )
        )
        seed = first.p2p_addrs[:1]
        assert seed
        assert seed[0].startswith("/ip4/127.0.0.1/tcp/")
        nodes = [first]
        for index in range(1, 5):
            config = make_config(
                tmp_path / f"n{index}",
                name=f"n{index}",
                metrics={"enabled": False},
                p2p=p2p(bootstrap_nodes=seed),
            )
            nodes.append(await stack.enter_async_context(running_node(config)))
        everyone = {f"n{i}" for i in range(5)}
        await until(lambda: all(names(n) == everyone for n in nodes), nodes=nodes)
        card = first.directory.get(nodes[3].agent_id)
        assert card is not None
        assert any(e.transport == "libp2p" for e in card.endpoints)
        peers = await first.peers()
        assert {p.peer_id for p in peers} >= {nodes[1].agent_id}
        assert all(p.direction in {"inbound", "outbound"} for p in peers)

        nodes[2].set_draining(True)
        await until(
            lambda: all(
                (c := n.directory.get(nodes[2].agent_id)) is not None and c.draining
                for n in nodes
                if n is not nodes[2]
            )
        )
        await nodes[4].aclose(grace=0)
        await until(lambda: all(names(n) == everyone - {"n4"} for n in nodes[:4]), nodes=nodes[:4])


async def test_mdns_alone_forms_a_mesh(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                running_node(
                    make_config(
                        tmp_path / f"m{i}",
                        name=f"m{i}",
                        metrics={"enabled": False},
                        p2p=p2p(enable_mdns=True),
                    )
                )
            )
            for i in range(3)
        ]
        await until(lambda: all(names(n) >= {"m0", "m1", "m2"} for n in nodes), timeout=30)


async def test_nodes_with_a_bounded_degree_still_learn_every_card(tmp_path: Path) -> None:
    bounded = p2p(target_peers=2, max_peers=3, trim_grace="1s")
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            running_node(
                make_config(tmp_path / "n0", name="n0", metrics={"enabled": False}, p2p=bounded)
            )
        )
        nodes = [first]
        for index in range(1, 5):
            config = make_config(
                tmp_path / f"n{index}",
                name=f"n{index}",
                metrics={"enabled": False},
                p2p={**bounded, "bootstrap_nodes": first.p2p_addrs[:1]},
            )
            nodes.append(await stack.enter_async_context(running_node(config)))
        everyone = {f"n{i}" for i in range(5)}
        degrees: list[int] = []

        async def bounded_and_complete() -> bool:
            degrees[:] = [len(await n.peers()) for n in nodes]
            connections = first.metrics.p2p_connections._value.get()
            return (
                max(degrees) <= 3 and connections <= 3 and all(names(n) == everyone for n in nodes)
            )

        async with asyncio.timeout(40):
            while not await bounded_and_complete():
                await asyncio.sleep(0.1)
        nodes[3].set_draining(True)
        await until(
            lambda: all(
                (c := n.directory.get(nodes[3].agent_id)) is not None and c.draining for n in nodes
            )
        )
        sent = first.metrics.gossip_messages_total.labels("status", "sent")._value.get()
        assert sent > 0
