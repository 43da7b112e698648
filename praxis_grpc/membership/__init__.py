"""SWIM membership with Lifeguard: a pure state machine plus its plug points.

See :class:`Membership` for the driver's contract and ``base`` for the plug
points (transport, signer, verifier, events).
"""

from praxis_grpc.membership.base import MembershipEvents, Signer, Transport, Verifier
from praxis_grpc.membership.claims import Claim, Item, Payload, State, parse_body
from praxis_grpc.membership.config import MembershipConfig
from praxis_grpc.membership.messages import Ack, Gossip, Message, Nack, Ping, PingReq, PushPull
from praxis_grpc.membership.swim import Membership
from praxis_grpc.membership.table import MemberInfo

__all__ = [
    "Ack",
    "Claim",
    "Gossip",
    "Item",
    "MemberInfo",
    "Membership",
    "MembershipConfig",
    "MembershipEvents",
    "Message",
    "Nack",
    "Payload",
    "Ping",
    "PingReq",
    "PushPull",
    "Signer",
    "State",
    "Transport",
    "Verifier",
    "parse_body",
]
