"""A serving node's background work, owned by its supervisor: the card
heartbeat, closing channels to departed agents, card expiry, heap trimming,
relay offers; and, in active-passive mode, the role switch following the
consensus leadership."""

from __future__ import annotations

import logging
from collections.abc import Callable

from praxis_grpc.card_publisher import CardPublisher
from praxis_grpc.cards import CardEventType
from praxis_grpc.config import Config
from praxis_grpc.consensus.base import Consensus, ConsensusError
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery
from praxis_grpc.gossip import CardGossip
from praxis_grpc.ha.coordinator import HaController
from praxis_grpc.heap import trim_periodically
from praxis_grpc.node_parts import StartupError
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.reach import offer_relays
from praxis_grpc.supervise import Supervisor

log = logging.getLogger(__name__)

__all__ = ["close_departed_channels", "follow_leadership", "start_upkeep"]


def start_upkeep(
    background: Supervisor,
    cfg: Config,
    *,
    agent_id: str,
    directory: CardDirectory,
    card: CardPublisher,
    refresh_card: Callable[[], object],
    gossip: CardGossip | None,
    discovery: Discovery | None,
    peers: PeerClient,
) -> None:
    """Start the upkeep tasks under ``background`` (they run until it closes)."""
    background.start("card-heartbeat", card.heartbeat(directory, gossip, refresh_card))
    background.start("channel-cleanup", close_departed_channels(directory, peers))
    background.start("card-expiry", directory.expire_periodically(cfg.cards.heartbeat))
    background.start("heap-trim", trim_periodically())
    background.start("relay-offers", offer_relays(directory, discovery, agent_id))


async def follow_leadership(
    background: Supervisor, consensus: Consensus, ha: HaController, *, backend: str
) -> None:
    """Start the consensus member, then the role switch under ``background``
    as a critical task (the supervisor fails the node if it ends).

    Raises:
        StartupError: the member cannot start.
    """
    try:
        await consensus.start()
    except ConsensusError as exc:
        raise StartupError(str(exc)) from exc
    background.start(
        "role-switch",
        ha.run(),
        critical=True,
        reason="the consensus member stopped reporting the leadership",
    )
    log.info("active-passive with consensus backend %s", backend)


async def close_departed_channels(directory: CardDirectory, peers: PeerClient) -> None:
    """Drop the connection to every agent whose card is removed (runs until
    the directory closes its watchers)."""
    while True:
        try:
            async for event in directory.watch():
                if event is not None and event.type is CardEventType.REMOVED:
                    peers.discard(event.card.peer_address)
            return
        except OverflowError:
            continue
