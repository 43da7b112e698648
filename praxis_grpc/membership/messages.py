"""The messages members exchange; each may piggyback signed items.

A message itself is not signed: the transport authenticates the sender (the
Noise channel in production), and everything a message can change (a claim
about a member, an app payload) travels as a separately signed item. Acks and
nacks only steer one probe; a forged one can delay a verdict, never cause one.
"""

from __future__ import annotations

from dataclasses import dataclass

from praxis_grpc.membership.claims import Item


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? ``target`` is who the sender meant (a stale address is ignored)."""

    seq: int
    target: str
    items: tuple[Item, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to ping ``seq`` (relayed unchanged by an indirect prober)."""

    seq: int
    items: tuple[Item, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping ``target`` for me and relay its ack for ``seq``."""

    seq: int
    target: str


@dataclass(frozen=True, slots=True)
class Nack:
    """I asked ``target`` for you (ping-req ``seq``) and heard nothing (Lifeguard)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Gossip:
    """Items spread on the gossip timer when no probe carries them fast enough."""

    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class PushPull:
    """The sender's full state (every member's latest claim and every payload).

    The receiver merges it and, unless ``reply`` is set, answers with its own.
    Large: a transport may prefer a stream for it.
    """

    items: tuple[Item, ...]
    reply: bool = False


Message = Ping | Ack | PingReq | Nack | Gossip | PushPull
