"""GossipSub configured for a small mesh that gossips every node's card each second."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from libp2p.abc import IHost, INetStream
from libp2p.host.exceptions import StreamFailure
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.exceptions import StreamError
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

if TYPE_CHECKING:
    from praxis_grpc.discovery._admission import Admission

log = logging.getLogger("praxis_grpc.discovery")

DEGREE = 6
DEGREE_LOW = 4
DEGREE_HIGH = 12
CONTROL_RATE_LIMIT = 1000.0
"""IHAVE per peer and topic, and IWANT per peer, accepted per second."""

MessageSink = Callable[[rpc_pb2.Message], None]
RepairSink = Callable[[str], None]
"""Called with ``subscriptions_kept`` or ``stream_retried``; must not block."""


class CardPubsub(Pubsub):
    """A signing Pubsub for one topic that hands each new message to ``on_message``.

    py-libp2p puts a subscription's messages in a 32-slot channel and drops
    (with a warning) whatever does not fit. The messages of one inbound RPC
    are pushed without a checkpoint in between, so no reader task can drain
    the channel during a burst (of 50 cards relayed together, 17 were lost).
    Here each message goes synchronously to ``on_message`` (which must not
    block) instead. Messages over ``max_bytes`` fail validation, so they are neither
    delivered nor forwarded. Only subscriptions to ``topic`` are accepted.

    With ``admission``, pubsub talks to members only: it opens its stream to a
    peer (the only way the router sends anything to it, so an unadmitted
    subscriber is never in a mesh or sent a message) and reads a peer's
    stream only once the peer is admitted, and a message forwarded by a peer
    that is not admitted fails validation.

    A peer's subscriptions outlive the failure of a stale stream to it while
    its current stream to us is open (see :meth:`_handle_dead_peer`). Each such
    repair, and each retry of a failed opening of our stream to a peer, is
    reported to ``on_repair``.
    """

    def __init__(
        self,
        host: IHost,
        router: GossipSub,
        topic: str,
        max_bytes: int,
        on_message: MessageSink,
        *,
        admission: Admission | None = None,
        on_repair: RepairSink | None = None,
    ) -> None:
        super().__init__(host, router, strict_signing=True, allowed_topics={topic})
        self._topic = topic
        self._max_bytes = max_bytes
        self._on_message = on_message
        self._admission = admission
        self._on_repair = on_repair or (lambda _kind: None)
        self._reading: dict[ID, set[INetStream]] = {}
        """Each peer's streams to us whose messages are being read."""
        self.set_topic_validator(topic, self._fits, is_async_validator=False)

    async def _handle_new_peer(self, peer_id: ID) -> None:
        if self._admission is None or await self._admission.wait(peer_id):
            try:
                await super()._handle_new_peer(peer_id)
            except (StreamFailure, StreamError) as exc:
                # py-libp2p 0.8.1 retries opening the pubsub stream while the
                # peer stays connected, but only after a SwarmException or
                # StreamClosed; a failed protocol negotiation (StreamFailure,
                # e.g. a handshake read that timed out on a connection that
                # just came back from a partition) ended the registration for
                # good, so nothing was ever sent to that peer again on that
                # connection: its messages piled up in gossipsub's pending
                # queue and its cards never arrived. Likewise a hello whose
                # write found the stream reset (StreamReset: its connection
                # closed after the negotiation) or broken (StreamError).
                self._on_repair("stream_retried")
                raise SwarmException(f"pubsub stream to {peer_id}: {exc}") from exc

    async def stream_handler(self, stream: INetStream) -> None:
        admission = self._admission
        if admission is None or await admission.wait(stream.muxed_conn.peer_id):
            await super().stream_handler(stream)
        else:
            await stream.reset()

    async def continuously_read_stream(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        streams = self._reading.setdefault(peer_id, set())
        streams.add(stream)
        try:
            await super().continuously_read_stream(stream)
        finally:
            streams.discard(stream)
            if not streams and self._reading.get(peer_id) is streams:
                del self._reading[peer_id]

    def _handle_dead_peer(self, peer_id: ID) -> None:
        """Unregister ``peer_id``, keeping its subscriptions if its stream to us is open.

        py-libp2p 0.8.1 forgets a peer's subscriptions whenever any pubsub
        stream of that peer fails, including a stale one on a connection that
        closed while a newer connection is up (after a partition heals, the
        peer dials again before the old connection is torn down, and the
        stream on the old one fails at its next write). The peer announced its
        subscriptions once, in the hello on its current stream to us, and does
        not repeat them, so this node never sent it anything again (a peer
        that is not subscribed is never in the mesh) and queued every message
        for it in gossipsub's pending queue ("pending message queue ...
        exceeded limit"). What it announced on a stream that is still open
        holds, so it is kept.
        """
        topics = [topic for topic, peers in self.peer_topics.items() if peer_id in peers]
        super()._handle_dead_peer(peer_id)
        if not topics or not any(_is_open(s) for s in self._reading.get(peer_id, ())):
            return
        if self.is_peer_blacklisted(peer_id) or not self._peer_is_connected(peer_id):
            return
        log.info("a stale pubsub stream of %s failed; keeping its subscriptions", peer_id)
        self._on_repair("subscriptions_kept")
        for topic in topics:
            self.handle_subscription(peer_id, rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic))

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        """Write ``rpc_msg`` without the signed peer record py-libp2p attaches to every RPC.

        The receiver verifies that record (an Ed25519 signature, in pure-Python
        glue) on every RPC it reads, twice for one carrying control messages:
        a fifth of an idle node's libp2p thread in a 10-node mesh. The hello,
        the first RPC on each stream (written directly, not through here),
        still carries it, so every peer learns our signed addresses once per stream.
        """
        if rpc_msg.HasField("senderRecord"):
            rpc_msg.ClearField("senderRecord")
        return await super().write_msg(stream, rpc_msg)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        if self._topic in publish_message.topicIDs and self._topic in self.topic_ids:
            self._on_message(publish_message)

    def _fits(self, forwarder: ID, message: rpc_pb2.Message) -> bool:
        admission = self._admission
        if admission is not None and forwarder != self.my_id and not admission.admitted(forwarder):
            log.warning("gossip forwarded by %s, not an admitted member; dropped", forwarder)
            return False
        if len(message.data) <= self._max_bytes:
            return True
        log.warning(
            "gossiped card from %s (via %s) is over max_card_bytes; dropped",
            ID(message.from_id),
            forwarder,
        )
        return False


def _is_open(stream: INetStream) -> bool:
    if stream.muxed_conn.is_closed:
        return False
    return not (isinstance(stream, NetStream) and stream.is_closed)


def new_pubsub(
    host: IHost,
    topic: str,
    heartbeat_interval: float,
    max_bytes: int,
    on_message: MessageSink,
    *,
    admission: Admission | None = None,
    on_repair: RepairSink | None = None,
) -> tuple[CardPubsub, GossipSub]:
    """A :class:`CardPubsub` over GossipSub tuned for small meshes.

    py-libp2p 0.8.1 turns on three "GossipSub 2.0" defenses that break a small
    mesh, so they are off here:

    - ``spam_protection_enabled`` drops every message past
      ``max_messages_per_topic_per_second`` (10) per *forwarding* peer and
      topic in a sliding second, and penalizes that peer. A mesh neighbour
      forwards the heartbeats of every node behind it, so in a 30-node mesh
      with one card per node per second each neighbour relays up to 29 msgs/s
      and two thirds of the heartbeats vanish (our own publishes count too).
      Size and topic stay bounded (``max_bytes``, ``allowed_topics``).
    - ``adaptive_gossip_enabled`` rescores "network health" every 30 s and,
      when it looks poor (few peers, as in any small mesh), sets the
      heartbeat to 30-60 s, which would stall mesh repair.
    - ``eclipse_protection_enabled`` grafts and prunes mesh peers for IP
      diversity; every node of a single-host mesh (or a test on 127.0.0.1)
      shares one IP, so it churns the mesh for nothing.

    The IHAVE/IWANT control-message limits (10/s) stay on but are raised to
    :data:`CONTROL_RATE_LIMIT`.
    """
    router = GossipSub(
        # Not /meshsub/1.2.0: py-libp2p 0.8.1 answers every message with an
        # IDONTWANT to each mesh peer, whatever its size, which doubled the
        # CPU of a 6-node mesh gossiping 1.5 KB cards (0.89 vs 0.44 cores).
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=DEGREE,
        degree_low=DEGREE_LOW,
        degree_high=DEGREE_HIGH,
        # Typed int in 0.8.1, but only ever passed to trio.sleep.
        heartbeat_interval=heartbeat_interval,  # type: ignore[arg-type]
        heartbeat_initial_delay=min(0.1, heartbeat_interval),
        spam_protection_enabled=False,
        adaptive_gossip_enabled=False,
        eclipse_protection_enabled=False,
    )
    router.max_ihave_messages_per_second = CONTROL_RATE_LIMIT
    router.max_iwant_requests_per_second = CONTROL_RATE_LIMIT
    pubsub = CardPubsub(
        host, router, topic, max_bytes, on_message, admission=admission, on_repair=on_repair
    )
    return pubsub, router
