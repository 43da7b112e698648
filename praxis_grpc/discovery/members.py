"""Mesh membership as the asyncio side of a node sees it: an add-on to discovery.

A discovery that runs a failure detector (SWIM on libp2p, see
``discovery/_swim.py``) also takes :class:`MembershipOptions` and serves
:class:`MemberSource`; the node learns from :class:`MemberEvents` which
members died or left and removes their cards. Discovery without a failure
detector has none of this (its "disconnected" events decide instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from praxis_grpc.membership import MembershipConfig, State


class MemberEvents(Protocol):
    """What the failure detector reports."""

    def on_member(self, member: str, state: State, incarnation: int) -> None:
        """``member`` changed state. Called on the node's event loop; must not block."""
        ...

    def on_probe(self, outcome: str) -> None:
        """One probe of ours ended ("ack", "indirect_ack", "suspect").

        Called from the discovery thread: must be thread-safe and must not block.
        """
        ...

    def on_message(self, kind: str, direction: str) -> None:
        """A membership message of ``kind`` was "sent", "received" or "dropped".

        Called from the discovery thread: must be thread-safe and must not block.
        """
        ...


@dataclass(frozen=True)
class MembershipOptions:
    """What a discovery needs to run the failure detector for this node.

    Attributes:
        config: the protocol's timing (``membership`` config section).
        incarnation: where our incarnation starts; above any earlier life's.
        events: where member changes and counts go.
    """

    config: MembershipConfig
    incarnation: int
    events: MemberEvents


@dataclass(frozen=True)
class MemberStatus:
    """One member as this node sees it.

    Attributes:
        member: its agent id (libp2p peer id).
        state: alive, suspect, dead or left.
        incarnation: the incarnation that state is claimed at.
        address: the multiaddr it announced.
        age: seconds since this node adopted that state.
        learnt: how: "self", "gossip", "push-pull", "probe", "connection refused",
            "suspicion timeout" (see ``membership.table``).
    """

    member: str
    state: State
    incarnation: int
    address: str
    age: float
    learnt: str


@runtime_checkable
class MemberSource(Protocol):
    """A discovery that knows the members (optional add-on to ``Discovery``)."""

    async def members(self) -> list[MemberStatus]:
        """Every member remembered (dead and left ones for a while), ourselves included."""
        ...
