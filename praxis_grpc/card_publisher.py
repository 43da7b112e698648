"""This node's own card: built from its live state, published into the
directory and announced over gossip, refreshed by a heartbeat; and what only
the card carries, reported by the libp2p host (the advertised addresses and
whether peers can dial this node)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from praxis_grpc import __version__
from praxis_grpc.cards import AgentCard, CardLoad, Endpoint, ToolInfo, timer_scale
from praxis_grpc.config import Config
from praxis_grpc.directory import CardDirectory
from praxis_grpc.gossip import CardGossip
from praxis_grpc.metrics import Metrics
from praxis_grpc.tasks.engine import EngineLoad
from praxis_grpc.tools.registry import ToolRegistry

__all__ = ["CardPublisher", "local_card"]


class CardPublisher:
    """Publishes the local card and keeps the libp2p host's reports on it.

    ``on_change`` is called (on the event loop) whenever a report changes
    what the card says; the node republishes from it once it serves.
    """

    def __init__(self, config: Config, metrics: Metrics, *, on_change: Callable[[], None]) -> None:
        self._config = config
        self._metrics = metrics
        self._on_change = on_change
        self.p2p_addrs: list[str] = []
        """The libp2p addresses this node advertises."""
        self.reachability = "unknown"
        """Whether peers can dial this node (dial-back, or ``p2p.reachability``):
        "unknown", "public" or "private"."""

    def p2p_addrs_changed(self, addrs: list[str]) -> None:
        """The libp2p host advertises other addresses (a relay reservation came or went)."""
        self.p2p_addrs = addrs
        self._metrics.p2p_relay_reservations.set(sum("/p2p-circuit/" in a for a in addrs))
        self._on_change()

    def reachability_changed(self, state: str) -> None:
        """Peers dialed this node back (or could not): "public" or "private"."""
        self.reachability = state
        for each in ("unknown", "public", "private"):
            self._metrics.p2p_reachability.labels(each).set(1 if each == state else 0)
        self._on_change()

    def publish(
        self,
        directory: CardDirectory,
        gossip: CardGossip | None,
        *,
        agent_id: str,
        role: str,
        grpc_address: str,
        peer_address: str | None,
        tools: ToolRegistry,
        load: EngineLoad,
        draining: bool,
        incarnation: int,
    ) -> AgentCard:
        """Publish the card with this state into ``directory`` and announce it
        over ``gossip`` (if any); returns it as the directory numbered it."""
        card = local_card(
            self._config,
            agent_id=agent_id,
            role=role,
            endpoints=(
                Endpoint("grpc", grpc_address),
                *(Endpoint("peer", peer) for peer in (peer_address,) if peer),
                *(Endpoint("libp2p", addr) for addr in self.p2p_addrs),
            ),
            tools=tools,
            load=load,
            draining=draining,
            incarnation=incarnation,
            reachability=self.reachability,
        )
        card = directory.publish_local(card)
        if gossip is not None:
            gossip.announce()
        return card

    async def heartbeat(
        self, directory: CardDirectory, gossip: CardGossip | None, refresh: Callable[[], object]
    ) -> None:
        """Sample the load every ``cards.sample_interval`` (``refresh``
        publishes; a status goes out if it moved); refresh the status over
        ``gossip`` now and then. Runs until cancelled."""
        cards, loop = self._config.cards, asyncio.get_running_loop()
        refresh_at = loop.time() + cards.heartbeat
        while True:
            await asyncio.sleep(cards.sample_interval)
            refresh()
            if gossip is not None and loop.time() >= refresh_at:
                gossip.refresh()
                refresh_at = loop.time() + cards.heartbeat * timer_scale(len(directory))


def local_card(
    cfg: Config,
    *,
    agent_id: str,
    role: str,
    endpoints: Sequence[Endpoint],
    tools: ToolRegistry,
    load: EngineLoad,
    draining: bool,
    incarnation: int,
    reachability: str = "unknown",
) -> AgentCard:
    """The card this node publishes now (version 0: the directory numbers it)."""
    return AgentCard(
        agent_id=agent_id,
        name=cfg.agent.name,
        praxis_version=__version__,
        role=role,
        endpoints=tuple(endpoints),
        tools=tuple(
            ToolInfo(
                name=spec.name,
                description=spec.description,
                input_schema=dict(spec.input_schema),
                idempotent=spec.idempotent,
                default_timeout=spec.default_timeout,
            )
            for spec in tools.specs()
        ),
        tags=tuple(cfg.agent.tags),
        load=CardLoad(load.in_flight, load.queued, load.capacity, load.queue_limit),
        draining=draining,
        incarnation=incarnation,
        version=0,
        updated_at=datetime.now(UTC),
        reachability=reachability,
        relay_service=cfg.p2p.enabled and cfg.p2p.relay_service,
    )
