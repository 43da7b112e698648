"""Timing and fan-out of the SWIM membership layer, as one frozen value.

The keys follow hashicorp/memberlist's ``Config`` (``DefaultLANConfig``) with
two changes that make a 1,000-node cluster declare a silent member dead within
about 10 s (memberlist's defaults take ~13 s there): a 0.5 s probe interval and
a 0.25 s probe timeout. Everything that scales with the cluster size N does so
the way memberlist scales it (:func:`suspicion_timeout`,
:func:`retransmit_limit`, :func:`push_pull_interval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

# memberlist's pushPullScaleThreshold: push-pull slows down above this size.
PUSH_PULL_SCALE_THRESHOLD = 32


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Settings of one member; validated on construction (``ValueError`` names the key).

    Attributes:
        probe_interval: seconds between two probes of one member (each period
            probes exactly one member). Scaled up by the local health multiplier.
        probe_timeout: seconds to wait for a direct ack before asking
            ``indirect_checks`` others to probe (must be below ``probe_interval``),
            counted from when the ping goes out: connection setup is not counted.
        connect_timeout: seconds a ping for a member the transport must first
            connect to waits for that connection; then it counts as unanswered.
        indirect_checks: members asked to probe indirectly (ping-req).
        suspicion_mult: a suspect is declared dead after
            ``suspicion_mult * max(1, log10(N)) * probe_interval`` seconds at the
            soonest (with enough independent confirmations).
        suspicion_max_timeout_mult: the timeout without confirmations, as a
            multiple of the soonest one (Lifeguard).
        awareness_max_multiplier: the local health multiplier's ceiling: a node
            that misses acks or must refute probes up to this many times slower.
        retransmit_mult: each broadcast is piggybacked
            ``retransmit_mult * ceil(log10(N + 1))`` times.
        gossip_interval: seconds between gossip rounds (only sent when there is
            something to spread).
        gossip_fanout: members each gossip round sends to.
        gossip_to_the_dead: seconds a dead or left member is still gossiped to
            and kept in the table before it is forgotten.
        push_pull_interval: seconds between full-state syncs with one random
            member (scaled up above 32 members); 0 disables them.
        max_packet_bytes: budget for piggybacked items in one message (at least
            one item is always sent).
        verified_cache_size: signatures remembered as verified.
    """

    probe_interval: float = 0.5
    probe_timeout: float = 0.25
    connect_timeout: float = 2.0
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    awareness_max_multiplier: int = 8
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_fanout: int = 3
    gossip_to_the_dead: float = 30.0
    push_pull_interval: float = 30.0
    max_packet_bytes: int = 1400
    verified_cache_size: int = 65536

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            allow_zero = spec.name in {"indirect_checks", "push_pull_interval"}
            if value < 0 or (value == 0 and not allow_zero):
                raise ValueError(f"membership.{spec.name} must be positive, got {value!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError(
                "membership.probe_timeout must be below membership.probe_interval, got "
                f"{self.probe_timeout!r} >= {self.probe_interval!r}"
            )


def suspicion_timeout(config: MembershipConfig, members: int) -> float:
    """The soonest a suspect may be declared dead in a cluster of ``members``."""
    scale = max(1.0, math.log10(max(1, members)))
    return config.suspicion_mult * scale * config.probe_interval


def retransmit_limit(config: MembershipConfig, members: int) -> int:
    """How many times one broadcast is piggybacked before it is dropped."""
    return config.retransmit_mult * max(1, math.ceil(math.log10(members + 1)))


def push_pull_interval(config: MembershipConfig, members: int) -> float:
    """The push-pull period, slower in clusters above 32 members (as memberlist)."""
    if members <= PUSH_PULL_SCALE_THRESHOLD:
        return config.push_pull_interval
    steps = math.ceil(math.log2(members) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return steps * config.push_pull_interval
