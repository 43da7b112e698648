"""The plug points of the membership layer: transport, signatures, events.

The state machine (:class:`~praxis_grpc.membership.swim.Membership`) owns no
network, clock or key. It is driven by explicit timestamps and calls these
interfaces synchronously from whatever thread drives it; none may call back
into the state machine re-entrantly.
"""

from __future__ import annotations

from typing import Protocol

from praxis_grpc.membership.claims import Payload, State
from praxis_grpc.membership.messages import Message


class Transport(Protocol):
    """Delivers messages to other members, best effort."""

    def send(self, to: str, message: Message) -> None:
        """Hand ``message`` for member ``to`` to the network and return at once.

        Must not block and must not raise for an unreachable member: delivery
        may fail silently (the protocol copes with loss). A transport that
        learns the peer refused or reset the connection reports it with
        :meth:`Membership.connection_refused`, later, not from inside ``send``.
        """
        ...

    def ready(self, to: str) -> bool:
        """True when a message for ``to`` would go out now, with no connection to set up first.

        When False, the transport calls :meth:`Membership.connected` once the
        connection is open (a ping's timeout starts then, not before); it may
        never call it (the ping then counts as unanswered after ``connect_timeout``).
        A transport with nothing to set up (datagrams) always returns True.
        """
        ...


class Signer(Protocol):
    """Signs with the local member's key."""

    def sign(self, data: bytes) -> bytes:
        """A signature over ``data`` that :class:`Verifier` checks against our id."""
        ...


class Verifier(Protocol):
    """Checks that a member signed some bytes (pure, no I/O)."""

    def verify(self, signer: str, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` over ``data`` was made by member ``signer``.

        Must return False (not raise) for an unknown signer or a bad signature.
        With libp2p ids the public key is part of the id, so no lookup is needed.
        """
        ...


class MembershipEvents(Protocol):
    """What the application hears; called synchronously, must not block."""

    def on_member(self, member: str, state: State, incarnation: int, address: str) -> None:
        """``member`` changed state (joined, became suspect, died, left, came back)."""
        ...

    def on_payload(self, payload: Payload) -> None:
        """A newer version of ``(payload.origin, payload.key)``; each version once."""
        ...
