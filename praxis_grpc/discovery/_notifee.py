"""A network notifee whose hooks do nothing, for notifees that need only some.

py-libp2p's ``INotifee`` declares six abstract hooks; a subclass overrides
the ones it cares about. Trio thread only.
"""

from __future__ import annotations

from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from multiaddr import Multiaddr

__all__ = ["QuietNotifee"]


class QuietNotifee(INotifee):
    """Every hook of :class:`INotifee` as a no-op."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None
