"""The discovery plug point, as the asyncio side of a node sees it.

An implementation connects this node to its peers and carries opaque signed
card bytes between them: to every peer on connect (full exchange) and to all
peers by gossip. It knows nothing about what a card means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PeerStatus:
    """One connected peer."""

    peer_id: str
    addresses: tuple[str, ...]
    direction: str  # "inbound" or "outbound"
    ping_rtt: float | None  # seconds; None before the first ping
    connected_at: float  # unix time


class DiscoveryEvents(Protocol):
    """What discovery reports. Called on the node's event loop; must not block.

    Delivery is best effort: a card may arrive more than once, late, or out of
    order (receivers keep the newest by incarnation and version), and may be
    dropped under overload.
    """

    def on_card(self, data: bytes, source: str, peer_id: str) -> None:
        """Signed card bytes from ``peer_id``; ``source`` is "gossip" or "exchange"."""
        ...

    def on_peer_connected(self, peer_id: str) -> None:
        """The first connection to ``peer_id`` opened."""
        ...

    def on_peer_disconnected(self, peer_id: str, departed: bool = True) -> None:
        """The last connection to ``peer_id`` closed (or stopped answering pings).

        ``departed`` is False when the connection was only trimmed to bound
        this node's degree: the peer is up and its card stays (until its TTL).
        """
        ...


class Discovery(Protocol):
    """A running mesh membership. Methods are called on the node's event loop."""

    async def start(self, events: DiscoveryEvents) -> list[str]:
        """Listen and begin discovering; return the listen multiaddrs (with /p2p/)."""
        ...

    async def aclose(self) -> None:
        """Disconnect and release everything. Idempotent."""
        ...

    def set_local_card(self, data: bytes) -> None:
        """The signed card served to peers on connect. Never blocks."""
        ...

    def publish(self, data: bytes) -> None:
        """Gossip ``data`` to all peers. Never blocks; may drop under overload."""
        ...

    async def peers(self) -> list[PeerStatus]:
        """The peers connected now."""
        ...
