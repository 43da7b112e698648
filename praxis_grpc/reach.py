"""How this node is reached and reaches others beyond gRPC: the libp2p side
of ``p2p.relays``, ``p2p.relay_service`` and ``p2p.announce_addrs``, and the
peer client that picks a transport per agent (see
:mod:`praxis_grpc.peers.by_address`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from praxis_grpc.config import Config
from praxis_grpc.discovery.base import Discovery
from praxis_grpc.peers.base import PeerClient
from praxis_grpc.peers.service import PeerService

if TYPE_CHECKING:
    from praxis_grpc.discovery._reach import ReachOptions

__all__ = ["peer_client", "reach_options", "serve_peer_calls"]


def reach_options(cfg: Config) -> ReachOptions:
    """The libp2p host's reach of ``p2p.*`` (imports py-libp2p: call lazily)."""
    from praxis_grpc.discovery._reach import ReachOptions
    from praxis_grpc.discovery._relay import RelayOptions

    p2p = cfg.p2p
    return ReachOptions(
        relay=RelayOptions(
            relays=tuple(p2p.relays),
            serve=p2p.relay_service,
            max_reservations=p2p.relay_max_reservations,
            reservation_ttl=p2p.relay_reservation_ttl,
            max_circuits=p2p.relay_max_circuits,
            max_circuit_duration=p2p.relay_max_circuit_duration,
            max_circuit_bytes=p2p.relay_max_circuit_bytes,
        ),
        announce_addrs=tuple(p2p.announce_addrs),
        max_call_bytes=cfg.api.max_message_bytes,
        # Only where NAT traversal is configured: elsewhere nothing acts on it yet.
        check_reachability=bool(p2p.relays or p2p.relay_service),
    )


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
