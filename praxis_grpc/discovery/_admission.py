"""Admission to the mesh: a peer is a member once it showed a CA certificate naming it.

When a connection opens (either direction) each side opens
``/praxis/admit/1.0.0`` and sends its node certificate (DER, one frame); the
other side checks it against the cluster CA and that its ``praxis:peer:`` SAN
is the peer id the Noise handshake authenticated on *this* connection, then
answers with its own certificate, which the opener checks the same way. One
exchange admits both sides; both open one so neither waits on the other.

Until a peer is admitted every praxis protocol handler waits for the decision
(:meth:`Admission.wait`, bounded by ``timeout``) and then serves it or resets
the stream; pubsub neither opens a stream to it nor reads one from it (see
``_gossip``). A peer whose certificate fails, or that does not finish the
handshake within ``timeout``, is disconnected and counted by reason.

Trio thread only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from praxis_grpc.cluster import MAX_CERT_BYTES, AdmissionRefused, ClusterCredentials
from praxis_grpc.discovery._wire import FrameTooLarge, _read_frame, _write_frame, abort

log = logging.getLogger("praxis_grpc.discovery")

ADMIT_PROTOCOL = TProtocol("/praxis/admit/1.0.0")
_BACKLOG = 256
_REMEMBERED = 4096

StreamHandler = Callable[[INetStream], Awaitable[None]]


def _ignore(reason: str) -> None:
    return None


@dataclass(frozen=True)
class AdmissionOptions:
    """What admission needs: the credentials, a deadline, and where to count refusals."""

    credentials: ClusterCredentials
    timeout: float = 5.0
    """A connected peer not admitted within this is disconnected (reason ``timeout``)."""
    on_refused: Callable[[str], None] = field(default=_ignore)
    """Called with the reason of each refusal; must not block (trio thread)."""


class Admission:
    """Decides, per connected peer, whether it is a member. Trio thread only."""

    def __init__(
        self,
        host: IHost,
        options: AdmissionOptions,
        on_admitted: Callable[[ID], None] = lambda peer_id: None,
    ) -> None:
        self._host = host
        self._options = options
        self._on_admitted = on_admitted
        self._admitted: OrderedDict[ID, None] = OrderedDict()
        self._refused: OrderedDict[ID, None] = OrderedDict()  # until its next connection
        self._decided: dict[ID, trio.Event] = {}
        self._send, self._receive = trio.open_memory_channel[ID](_BACKLOG)

    def admitted(self, peer_id: ID) -> bool:
        """Whether ``peer_id`` showed a valid certificate naming it."""
        return peer_id in self._admitted

    def start(self, peer_id: ID) -> None:
        """A connection to ``peer_id`` opened: run the handshake (never blocks)."""
        if peer_id in self._admitted:
            return
        self._refused.pop(peer_id, None)
        if peer_id in self._decided:
            return  # its handshake is already queued or running
        try:
            self._send.send_nowait(peer_id)
        except trio.WouldBlock:
            # Shed rather than remember an undecided peer: every entry of
            # _decided has a handshake that will decide it, so it stays bounded.
            _remember(self._refused, peer_id)
            self._options.on_refused("backlog")
            log.warning("admission backlog full; refused %s until it connects again", peer_id)
            return
        self._decided[peer_id] = trio.Event()

    async def run(self) -> None:
        """Run handshakes for the peers :meth:`start` names, until cancelled."""
        async with trio.open_nursery() as nursery:
            async for peer_id in self._receive:
                nursery.start_soon(self._admit, peer_id)

    async def wait(self, peer_id: ID) -> bool:
        """True once ``peer_id`` is admitted; False if refused or undecided after ``timeout``."""
        if peer_id in self._admitted:
            return True
        if peer_id in self._refused:
            return False  # its streams are reset at once, not held
        if peer_id not in self._decided:
            self.start(peer_id)  # a stream before its connection was announced
        event = self._decided.get(peer_id)
        if event is None:
            return peer_id in self._admitted  # decided meanwhile, or shed
        with trio.move_on_after(self._options.timeout):
            await event.wait()
        return peer_id in self._admitted

    def gate(self, handler: StreamHandler) -> StreamHandler:
        """``handler`` for admitted peers only; other peers' streams are reset unread."""

        async def gated(stream: INetStream) -> None:
            peer_id = stream.muxed_conn.peer_id
            if await self.wait(peer_id):
                await handler(stream)
            else:
                await abort(stream)

        return gated

    async def serve(self, stream: INetStream) -> None:
        """Answer one inbound handshake: check the opener's certificate, send ours."""
        peer_id = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(self._options.timeout):
                der = await _read_frame(stream, MAX_CERT_BYTES)
                self._options.credentials.check_peer(der, peer_id.to_base58())
                await _write_frame(stream, self._options.credentials.cert_der)
                await stream.close()
        except AdmissionRefused as exc:
            await abort(stream)
            await self._refuse(peer_id, exc)
            return
        except (trio.TooSlowError, FrameTooLarge, Exception) as exc:
            await abort(stream)
            await self._refuse(peer_id, _failure(exc))
            return
        self._admit_peer(peer_id)

    async def _admit(self, peer_id: ID) -> None:
        if peer_id in self._admitted:
            return
        decided = self._decided.setdefault(peer_id, trio.Event())
        try:
            with trio.fail_after(self._options.timeout):
                der = await self._exchange(peer_id)
            self._options.credentials.check_peer(der, peer_id.to_base58())
        except AdmissionRefused as exc:
            await self._refuse(peer_id, exc)
        except Exception as exc:
            # A broken exchange (the peer reset it, or said nothing) is no verdict
            # while the peer's own handshake may still decide, with its reason.
            with trio.move_on_after(self._options.timeout):
                await decided.wait()
            if not decided.is_set():
                await self._refuse(peer_id, _failure(exc))
        else:
            self._admit_peer(peer_id)

    async def _exchange(self, peer_id: ID) -> bytes:
        stream = await self._host.new_stream(peer_id, [ADMIT_PROTOCOL])
        try:
            await _write_frame(stream, self._options.credentials.cert_der)
            der = await _read_frame(stream, MAX_CERT_BYTES)
            await stream.close()
        except BaseException:
            await abort(stream)
            raise
        return der

    def _admit_peer(self, peer_id: ID) -> None:
        fresh = peer_id not in self._admitted
        self._refused.pop(peer_id, None)
        _remember(self._admitted, peer_id)
        self._decided.pop(peer_id, trio.Event()).set()
        if fresh:
            log.debug("admitted %s", peer_id)
            self._on_admitted(peer_id)

    async def _refuse(self, peer_id: ID, exc: AdmissionRefused) -> None:
        self._admitted.pop(peer_id, None)
        _remember(self._refused, peer_id)
        self._decided.pop(peer_id, trio.Event()).set()
        self._options.on_refused(exc.reason)
        log.warning("refused peer %s admission to the mesh: %s", peer_id, exc)
        # Shielded: py-libp2p keeps the socket of a connection whose close is
        # cancelled halfway (as the host's shutdown would cancel this task).
        with trio.CancelScope(shield=True), trio.move_on_after(self._options.timeout):
            try:
                await self._host.get_network().close_peer(peer_id)
            except Exception:
                log.debug("closing the connections to %s failed", peer_id, exc_info=True)


def _remember(peers: OrderedDict[ID, None], peer_id: ID) -> None:
    """Add ``peer_id`` as the most recent of ``peers``, forgetting the oldest beyond a bound."""
    peers[peer_id] = None
    peers.move_to_end(peer_id)
    while len(peers) > _REMEMBERED:
        peers.popitem(last=False)


def _failure(exc: BaseException) -> AdmissionRefused:
    """The refusal for a handshake that broke rather than showed a bad certificate."""
    if isinstance(exc, trio.TooSlowError):
        return AdmissionRefused("timeout", "no certificate within the admission timeout")
    if isinstance(exc, FrameTooLarge):
        return AdmissionRefused("malformed", "certificate frame over the limit")
    return AdmissionRefused("no_certificate", f"handshake failed: {exc!r}")
