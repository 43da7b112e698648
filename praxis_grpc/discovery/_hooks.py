"""What a host does when a peer connects, is admitted or disconnects, and which
protocol handlers admission gates: the hooks :class:`~.libp2p.MeshHost` wires
into its host's notifee and stream handlers.

With ``p2p`` admission options, a new connection first goes through admission
(``/praxis/admit/1.0.0``) and SWIM hears of the peer only once it is admitted;
every praxis protocol handler (cards, peers, trim, SWIM, reach) is served to
admitted peers only. Without them, SWIM hears of every connection at once and
handlers serve everyone. Trio thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from praxis_grpc.discovery._admission import ADMIT_PROTOCOL, Admission, StreamHandler
from praxis_grpc.discovery._dialer import Trimmer
from praxis_grpc.discovery._membership import call_safely
from praxis_grpc.discovery._options import HostOptions, MeshCallbacks
from praxis_grpc.discovery._swim import SwimService

log = logging.getLogger("praxis_grpc.discovery")


class PeerHooks:
    """The connection hooks of one host; serves the admission protocol when admission is on.

    Args:
        host: the host (not yet running).
        options: its options (``options.admission`` turns admission on).
        callbacks: the application's connect and disconnect callbacks.
        greet: where a connected peer is queued for the card exchange.
        swim: the running SWIM service, if any, when a hook fires (read each time:
            SWIM starts after the hooks are wired).
        trimmer: the host's trimmer, if any, when a hook fires.
    """

    def __init__(
        self,
        host: IHost,
        options: HostOptions,
        callbacks: MeshCallbacks,
        greet: trio.MemorySendChannel[ID],
        *,
        swim: Callable[[], SwimService | None],
        trimmer: Callable[[], Trimmer | None],
    ) -> None:
        self._callbacks = callbacks
        self._greet = greet
        self._swim = swim
        self._trimmer = trimmer
        self.admission: Admission | None = None
        if options.admission is not None:
            self.admission = Admission(host, options.admission, self.admitted)
            host.set_stream_handler(ADMIT_PROTOCOL, self.admission.serve)

    def gate(self, handler: StreamHandler) -> StreamHandler:
        """``handler``, for admitted peers only when admission is on."""
        admission = self.admission
        return handler if admission is None else admission.gate(handler)

    def admitted(self, peer_id: ID) -> None:
        """Admission accepted ``peer_id``: SWIM may talk to it now."""
        swim = self._swim()
        if swim is not None:
            swim.peer_connected(peer_id)

    def connected(self, peer_id: ID) -> None:
        """A neighbour connected: admit it (or tell SWIM), greet it, tell the application."""
        self.transient(peer_id)
        try:
            self._greet.send_nowait(peer_id)
        except trio.WouldBlock:
            log.warning("greeting backlog full; no card exchange with %s", peer_id)
        call_safely(self._callbacks.on_peer_connected, peer_id.to_base58())

    def transient(self, peer_id: ID) -> None:
        """A probe connection opened: admit it (SWIM hears of it once admitted)."""
        if self.admission is not None:
            self.admission.start(peer_id)
        else:
            self.admitted(peer_id)

    def disconnected(self, peer_id: ID) -> None:
        """The last connection to ``peer_id`` closed: a departure unless trimmed or SWIM runs
        (then it is only a hint: SWIM decides who is gone)."""
        trimmer, swim = self._trimmer(), self._swim()
        departed = trimmer is None or not trimmer.was_trimmed(peer_id)
        if swim is not None:
            if departed:
                swim.peer_disconnected(peer_id)
            departed = False
        call_safely(self._callbacks.on_peer_disconnected, peer_id.to_base58(), departed)
