"""Closing a peer's connections never leaves a socket open when the orderly close hangs.

py-libp2p marks a connection closed before it writes GO_AWAY and only then closes
the socket; a close cut short by a bound kept the socket open until garbage
collection (a likely owner of the rare "ResourceWarning: unclosed socket").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from praxis_grpc.discovery._closing import close_peer


@dataclass
class Secured:
    closes: int = 0

    async def close(self) -> None:
        self.closes += 1


@dataclass
class Muxed:
    secured_conn: Secured = field(default_factory=Secured)


@dataclass
class Conn:
    muxed_conn: Muxed = field(default_factory=Muxed)


@dataclass
class Network:
    conns: list[Conn]
    hang: bool

    def get_connections(self, peer_id: ID) -> list[Conn]:
        return self.conns

    async def close_peer(self, peer_id: ID) -> None:
        if self.hang:  # GO_AWAY waits for a write lock held by a writer to a stopped peer
            await trio.sleep_forever()
        for conn in self.conns:
            await conn.muxed_conn.secured_conn.close()


def run(network: Network) -> float:
    async def main() -> float:
        peer = ID.from_pubkey(create_new_key_pair().public_key)
        start = trio.current_time()
        await close_peer(network, peer, 2.0)  # type: ignore[arg-type]
        return trio.current_time() - start

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_hanging_close_still_closes_every_socket_after_the_bound() -> None:
    network = Network([Conn(), Conn()], hang=True)
    took = run(network)
    assert took == 2.0
    assert [conn.muxed_conn.secured_conn.closes for conn in network.conns] == [1, 1]


def test_an_orderly_close_is_not_cut_short() -> None:
    network = Network([Conn()], hang=False)
    assert run(network) == 0.0
    assert network.conns[0].muxed_conn.secured_conn.closes >= 1
