"""The connection trimmer keeps the relays a host holds a reservation on,
including relays found in cards (not only ``p2p.relays``), as they change."""

from __future__ import annotations

from typing import Any, cast

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from praxis_grpc.discovery._reach import HostReach


def _peer() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


class _Reach:
    def __init__(self) -> None:
        self.held_relays: frozenset[ID] = frozenset()

    def keeps(self, peer_id: ID) -> bool:
        return peer_id in self.held_relays


def test_protected_peers_follow_the_reservations_held() -> None:
    bootstrap, relay, other = _peer(), _peer(), _peer()
    reach = _Reach()
    protected = HostReach.protects(cast(Any, reach), frozenset({bootstrap}))
    assert bootstrap in protected
    assert relay not in protected
    reach.held_relays = frozenset({relay})  # a reservation on a relay found in a card
    assert relay in protected
    assert other not in protected
    reach.held_relays = frozenset()  # dropped (the host found itself public)
    assert relay not in protected
