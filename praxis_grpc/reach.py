"""How this node is reached and reaches others beyond gRPC: the libp2p side
of ``p2p.relays``, ``p2p.relay_service`` and ``p2p.announce_addrs``, and the
peer client that picks a transport per agent (see
:mod:`praxis_grpc.peers.by_address`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from praxis_grpc.cards import AgentCard
from praxis_grpc.config import Config
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.peers.service import PeerService

if TYPE_CHECKING:
    from praxis_grpc.discovery._reach import ReachOptions

__all__ = ["offer_relays", "peer_client", "reach_options", "relay_offers", "serve_peer_calls"]


def reach_options(cfg: Config, on_call_refused: Callable[[], None] = lambda: None) -> ReachOptions:
    """The libp2p host's reach of ``p2p.*`` (imports py-libp2p: call lazily);
    ``on_call_refused`` (trio thread) counts peer calls refused for
    ``cluster.max_calls_per_peer``."""
    from praxis_grpc.discovery._reach import ReachOptions
    from praxis_grpc.discovery._relay import RelayOptions

    p2p = cfg.p2p
    return ReachOptions(
        relay=RelayOptions(
            relays=tuple(p2p.relays),
            discover=not p2p.relays and p2p.reachability != "public",
            serve=p2p.relay_service,
            max_reservations=p2p.relay_max_reservations,
            reservation_ttl=p2p.relay_reservation_ttl,
            max_circuits=p2p.relay_max_circuits,
            max_circuit_duration=p2p.relay_max_circuit_duration,
            max_circuit_bytes=p2p.relay_max_circuit_bytes,
        ),
        announce_addrs=tuple(p2p.announce_addrs),
        max_call_bytes=cfg.api.max_message_bytes,
        check_reachability=True,
        hole_punching=p2p.hole_punching,
        reachability="" if p2p.reachability == "auto" else p2p.reachability,
        max_calls_per_peer=cfg.cluster.max_calls_per_peer,
        on_call_refused=on_call_refused,
    )


def relay_offers(cards: Iterable[AgentCard], own_id: str) -> list[str]:
    """One libp2p address (``.../p2p/<id>``) of every other member whose card
    offers the relay service and that is not itself private, ordered by id."""
    offers = []
    for card in sorted(cards, key=lambda c: c.agent_id):
        if card.agent_id == own_id or not card.relay_service or card.reachability == "private":
            continue
        direct = [
            e.address
            for e in card.endpoints
            if e.transport == "libp2p" and "/p2p-circuit" not in e.address and "/p2p/" in e.address
        ]
        offers.extend(direct[:1])
    return offers


async def offer_relays(directory: CardDirectory, discovery: Discovery | None, own_id: str) -> None:
    """Tell a libp2p discovery the relays members' cards offer, whenever they
    change (until the directory closes its watchers); returns at once without one."""
    from praxis_grpc.discovery.bridge import Libp2pDiscovery

    if not isinstance(discovery, Libp2pDiscovery):
        return
    offered: list[str] | None = None
    while True:
        try:
            async for _event in directory.watch():
                now = relay_offers(directory.cards(), own_id)
                if now != offered:
                    offered = now
                    discovery.offer_relays(now)
            return
        except OverflowError:
            continue


def peer_client(grpc: PeerClient, discovery: Discovery | None) -> PeerClient:
    """``grpc``, or with a libp2p discovery that carries peer calls, a client
    that reaches agents behind NAT over it and the others over ``grpc``."""
    from praxis_grpc.discovery.bridge import Libp2pDiscovery

    if not isinstance(discovery, Libp2pDiscovery):
        return grpc
    from praxis_grpc.peers.by_address import ByAddress
    from praxis_grpc.peers.libp2p import Libp2pPeerClient

    return ByAddress(grpc, Libp2pPeerClient(discovery))


def serve_peer_calls(discovery: Discovery | None, service: PeerService) -> None:
    """Answer ``/praxis/peer/1.0.0`` calls with ``service`` (before the discovery starts)."""
    from praxis_grpc.discovery.bridge import Libp2pDiscovery

    if isinstance(discovery, Libp2pDiscovery):
        from praxis_grpc.peers.libp2p import PeerStreamService

        discovery.add_stream_service(PeerStreamService(service))
