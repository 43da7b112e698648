"""Card gossip between in-process nodes over the in-memory mesh (no libp2p)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from praxis_grpc.card_codec import encode_signed_card
from praxis_grpc.cards import AgentCard
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.node import Node
from praxis_grpc.testing import make_config
from praxis_grpc.testing.memory_mesh import MemoryMesh


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def mesh_node(mesh: MemoryMesh, root: Path, name: str) -> AsyncIterator[Node]:
    config = make_config(
        root / name,
        name=name,
        metrics={"enabled": False},
        p2p={"disconnect_grace": "200ms"},
        cards={"heartbeat": "100ms", "ttl": "2s"},
    )
    identity = load_or_create_identity(config.key_file)
    node = Node(config, identity=identity, discovery=mesh.member(identity.agent_id))
    await node.start()
    try:
        yield node
    finally:
        await node.aclose(grace=0)


def known(node: Node) -> set[str]:
    return {card.name for card in node.directory.cards()}


async def test_three_nodes_converge_and_see_changes(tmp_path: Path) -> None:
    mesh = MemoryMesh()
    async with (
        mesh_node(mesh, tmp_path, "a") as a,
        mesh_node(mesh, tmp_path, "b") as b,
        mesh_node(mesh, tmp_path, "c") as c,
    ):
        await until(lambda: all(known(n) == {"a", "b", "c"} for n in (a, b, c)))
        b.set_draining(True)
        await until(lambda: all(n.directory.get(b.agent_id).draining for n in (a, c)))  # type: ignore[union-attr]
        assert a.metrics.card_updates_total.labels("gossip")._value.get() > 0
        assert c.metrics.card_updates_total.labels("exchange")._value.get() > 0


async def test_departed_node_is_removed_and_returns_with_higher_incarnation(
    tmp_path: Path,
) -> None:
    mesh = MemoryMesh()
    async with mesh_node(mesh, tmp_path, "a") as a:
        async with mesh_node(mesh, tmp_path, "b") as b:
            await until(lambda: known(a) == {"a", "b"})
            first: AgentCard = a.directory.get(b.agent_id)  # type: ignore[assignment]
        await until(lambda: known(a) == {"a"})
        async with mesh_node(mesh, tmp_path, "b") as b:
            await until(lambda: known(a) == {"a", "b"})
            again = a.directory.get(b.agent_id)
            assert again is not None
            assert again.agent_id == first.agent_id
            assert again.incarnation == first.incarnation + 1


async def test_a_card_a_peer_lost_while_connected_comes_back_by_gossip(tmp_path: Path) -> None:
    # After a restart, a peer got b's card from the exchange but none of b's
    # first statuses (gossip sent before its subscription took effect), so
    # the card expired; later statuses of an agent whose card is unknown are
    # dropped. The card must come back without a new connection.
    mesh = MemoryMesh()
    async with mesh_node(mesh, tmp_path, "a") as a, mesh_node(mesh, tmp_path, "b") as b:
        await until(lambda: known(a) == {"a", "b"})
        a.directory.remove(b.agent_id)  # what the TTL did
        assert mesh.linked(a.agent_id, b.agent_id)
        await until(lambda: known(a) == {"a", "b"})  # ttl 2s: a card goes out every 1s


async def test_forged_and_oversized_cards_are_dropped(tmp_path: Path) -> None:
    mesh = MemoryMesh()
    async with mesh_node(mesh, tmp_path, "a") as a, mesh_node(mesh, tmp_path, "b") as b:
        await until(lambda: known(a) == {"a", "b"})
        mallory = load_or_create_identity(tmp_path / "mallory.key")
        real = a.directory.get(b.agent_id)
        assert real is not None
        # Mallory signs b's identity claim with her own key: a must drop it.
        stolen = encode_signed_card(
            real.__class__(**{**real.__dict__, "agent_id": mallory.agent_id, "version": 99}),
            mallory,
        ).replace(mallory.agent_id.encode(), b.agent_id.encode())
        mesh.inject(a.agent_id, stolen)
        mesh.inject(a.agent_id, b"x" * (a.config.p2p.max_card_bytes + 1))
        rejected = a.metrics.cards_rejected_total
        await until(
            lambda: (
                rejected.labels("bad_signature")._value.get() == 1
                and rejected.labels("oversized")._value.get() == 1
            )
        )
        current = a.directory.get(b.agent_id)
        assert current is not None
        assert current.version < 99


async def test_cut_link_removes_then_heals(tmp_path: Path) -> None:
    mesh = MemoryMesh()
    async with mesh_node(mesh, tmp_path, "a") as a, mesh_node(mesh, tmp_path, "b") as b:
        await until(lambda: known(a) == {"a", "b"})
        mesh.disconnect(a.agent_id, b.agent_id)
        await until(lambda: known(a) == {"a"})
        assert not await a.peers()


@pytest.mark.parametrize("count", [5])
async def test_five_nodes_converge(tmp_path: Path, count: int) -> None:
    mesh = MemoryMesh()
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(mesh_node(mesh, tmp_path, f"n{i}"))
            for i in range(count)
        ]
        names = {f"n{i}" for i in range(count)}
        await until(lambda: all(known(n) == names for n in nodes))
        for node in nodes:
            assert len(await node.peers()) == count - 1
