"""A dial-back costs outgoing dials: a peer is served one at a time, all
peers together a few at once; the rest are refused (the stream reset)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from praxis_grpc.discovery import _dialback
from praxis_grpc.discovery._dialback import Reachability


class _Host:
    def __init__(self) -> None:
        self.handler: Any = None

    def set_stream_handler(self, _protocol: object, handler: Any) -> None:
        self.handler = handler


class _Stream:
    """A request that never arrives: the dial-back stays in flight."""

    def __init__(self, peer: ID) -> None:
        self.muxed_conn = SimpleNamespace(peer_id=peer)
        self.reset_done = False

    async def read(self, _n: int | None = None) -> bytes:
        await trio.sleep_forever()
        return b""

    async def reset(self) -> None:
        self.reset_done = True


def _peer() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


def test_dial_backs_served_at_once_are_bounded() -> None:
    async def main() -> None:
        host = _Host()
        Reachability(cast(Any, host), lambda _state: None)
        first = _peer()
        busy = [_Stream(first)] + [_Stream(_peer()) for _ in range(_dialback._MAX_SERVING - 1)]
        async with trio.open_nursery() as nursery:
            for stream in busy:
                nursery.start_soon(host.handler, stream)
            await trio.testing.wait_all_tasks_blocked()
            again, stranger = _Stream(first), _Stream(_peer())
            await host.handler(again)  # the same peer, a second time
            await host.handler(stranger)  # one peer too many
            assert again.reset_done
            assert stranger.reset_done
            assert not any(stream.reset_done for stream in busy)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock())
