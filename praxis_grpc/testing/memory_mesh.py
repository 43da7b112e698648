"""An in-memory :class:`~praxis_grpc.discovery.base.Discovery` for deterministic tests.

Like hashicorp/raft's in-memory transport: every member of one
:class:`MemoryMesh` is connected to every other, cards are exchanged on
connect and gossip reaches every connected member, all on the running event
loop. Tests can cut links (:meth:`MemoryMesh.disconnect`) and inject raw bytes
(:meth:`MemoryMesh.inject`) to play a forger.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from praxis_grpc.discovery.base import DiscoveryEvents, PeerStatus


@dataclass
class MemoryMesh:
    """A set of in-memory discovery members that all see each other."""

    members: dict[str, MemoryDiscovery] = field(default_factory=dict)
    cut: set[frozenset[str]] = field(default_factory=set)

    def member(self, peer_id: str) -> MemoryDiscovery:
        """A new discovery endpoint for ``peer_id`` (joins on ``start``)."""
        return MemoryDiscovery(self, peer_id)

    def linked(self, a: str, b: str) -> bool:
        """True when both are started and their link is not cut."""
        return a in self.members and b in self.members and frozenset((a, b)) not in self.cut

    def disconnect(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b`` (both see a disconnect)."""
        if self.linked(a, b):
            self.cut.add(frozenset((a, b)))
            self.members[a].lost(b)
            self.members[b].lost(a)

    def inject(self, to: str, data: bytes, source: str = "gossip", sender: str = "") -> None:
        """Deliver arbitrary bytes to ``to`` as if a peer had sent them."""
        self.members[to].deliver(data, source, sender or "12D3KooWinjected")


class MemoryDiscovery:
    """One member of a :class:`MemoryMesh`."""

    def __init__(self, mesh: MemoryMesh, peer_id: str) -> None:
        self._mesh = mesh
        self.peer_id = peer_id
        self._events: DiscoveryEvents | None = None
        self._card = b""
        self._since: dict[str, float] = {}

    async def start(self, events: DiscoveryEvents) -> list[str]:
        self._events = events
        self._mesh.members[self.peer_id] = self
        for other in list(self._mesh.members.values()):
            if other is not self and self._mesh.linked(self.peer_id, other.peer_id):
                self._connect(other)
                other._connect(self)
        return [f"/memory/{self.peer_id}/p2p/{self.peer_id}"]

    async def aclose(self) -> None:
        if self._mesh.members.get(self.peer_id) is not self:
            return
        del self._mesh.members[self.peer_id]
        for other in list(self._mesh.members.values()):
            if self.peer_id in other._since:
                other.lost(self.peer_id)
        self._events = None

    def set_local_card(self, data: bytes) -> None:
        self._card = data

    def publish(self, data: bytes) -> None:
        for other in list(self._mesh.members.values()):
            if other is not self and self._mesh.linked(self.peer_id, other.peer_id):
                other.deliver(data, "gossip", self.peer_id)

    async def peers(self) -> list[PeerStatus]:
        return [
            PeerStatus(peer, (f"/memory/{peer}",), "outbound", 0.0, since)
            for peer, since in sorted(self._since.items())
        ]

    def deliver(self, data: bytes, source: str, sender: str) -> None:
        """Hand ``data`` to this member's events on the next loop iteration."""
        events = self._events
        if events is not None:
            asyncio.get_running_loop().call_soon(events.on_card, data, source, sender)

    def lost(self, peer: str) -> None:
        """The link to ``peer`` went away."""
        if self._since.pop(peer, None) is not None and self._events is not None:
            self._events.on_peer_disconnected(peer)

    def _connect(self, other: MemoryDiscovery) -> None:
        self._since[other.peer_id] = time.time()
        assert self._events is not None
        self._events.on_peer_connected(other.peer_id)
        if other._card:
            self.deliver(other._card, "exchange", other.peer_id)
