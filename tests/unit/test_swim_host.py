"""SWIM on real libp2p hosts over loopback: keys, joining, forged claims, leaving.

The state machine's rules (forged claims ignored, refutation, suspicion) are
tested on a virtual clock in ``test_swim.py``; these tests check the adaptor:
libp2p keys sign and verify, frames are attributed to the Noise-authenticated
peer, and a graceful stop is announced as LEFT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_uvarint

from praxis_grpc.discovery._swim import SWIM_PROTOCOL, Libp2pKeys
from praxis_grpc.discovery.libp2p import HostOptions, MeshHost
from praxis_grpc.discovery.members import MembershipOptions
from praxis_grpc.membership import Claim, Gossip, MembershipConfig, Payload, State
from praxis_grpc.membership.codec import encode_message
from tests.unit.test_libp2p_host import Recorder, until

TIMING = MembershipConfig()


@dataclass
class Members:
    """MemberEvents that remember every change."""

    changes: list[tuple[str, State]] = field(default_factory=list)
    states: dict[str, State] = field(default_factory=dict)

    def on_member(self, member: str, state: State, incarnation: int) -> None:
        self.changes.append((member, state))
        self.states[member] = state

    def on_probe(self, outcome: str) -> None:
        return None

    def on_message(self, kind: str, direction: str) -> None:
        return None


@dataclass
class SwimNode:
    host: MeshHost
    members: Members
    key: Any
    addr: str
    scope: trio.CancelScope

    @property
    def peer_id(self) -> str:
        return self.addr.rsplit("/p2p/", 1)[1]


async def start(nursery: trio.Nursery, *bootstrap: SwimNode) -> SwimNode:
    key = create_new_key_pair()
    options = HostOptions(key_pair=key, bootstrap=tuple(n.addr for n in bootstrap))
    members = Members()
    host = MeshHost(options, Recorder(), MembershipOptions(TIMING, 1, members))
    scope = trio.CancelScope()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await host.run(task_status=task_status)

    addrs = await nursery.start(run)
    return SwimNode(host, members, key, addrs[0], scope)


def all_alive(*nodes: SwimNode) -> bool:
    return all(
        n.members.states.get(o.peer_id) is State.ALIVE for n in nodes for o in nodes if o is not n
    )


def test_libp2p_keys_verify_only_what_the_peer_id_signed() -> None:
    mine, other = create_new_key_pair(), create_new_key_pair()
    me = ID.from_pubkey(mine.public_key).to_base58()
    them = ID.from_pubkey(other.public_key).to_base58()
    keys = Libp2pKeys(mine)
    signature = keys.sign(b"claim")
    assert keys.verify(me, b"claim", signature)
    assert not keys.verify(me, b"other claim", signature)
    assert not keys.verify(them, b"claim", signature)  # signed by us, not by them
    assert not keys.verify("not-a-peer-id", b"claim", signature)
    assert not keys.verify(me, b"claim", b"short")


def test_a_death_claim_forged_over_the_wire_is_ignored_and_a_stop_is_announced_as_left() -> None:
    async def main() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                a = await start(nursery)
                b = await start(nursery, a)
                c = await start(nursery, a)
                await until(lambda: all_alive(a, b, c), "all three alive everywhere", 30)

                # a tells b that c is dead, signed by a's key but in c's name
                # (as if c had left) and in b's name (as if b had accused c).
                forger = Libp2pKeys(a.key)
                forged = [
                    Claim(State.LEFT, c.peer_id, 10**6, c.peer_id),
                    Claim(State.DEAD, c.peer_id, 10**6, b.peer_id),
                ]
                forged = [
                    Claim(
                        x.kind, x.member, x.incarnation, x.accuser, signature=forger.sign(x.body())
                    )
                    for x in forged
                ]
                marker = Payload(a.peer_id, "marker", 1, b"after the forgery")
                marker = Payload(
                    marker.origin, "marker", 1, marker.data, forger.sign(marker.body())
                )
                raw = a.host._host
                assert raw is not None
                stream = await raw.new_stream(ID.from_base58(b.peer_id), [SWIM_PROTOCOL])
                for message in (Gossip(tuple(forged)), Gossip((marker,))):
                    frame = encode_message(message)
                    await stream.write(encode_uvarint(len(frame)) + frame)
                swim = b.host._swim
                assert swim is not None
                await until(
                    lambda: swim._membership.payload(a.peer_id, "marker") is not None,
                    "b took the signed frame that followed the forgery",
                )
                assert swim._membership.state_of(c.peer_id) is State.ALIVE
                assert (c.peer_id, State.DEAD) not in b.members.changes
                assert (c.peer_id, State.LEFT) not in b.members.changes
                await stream.close()

                c.scope.cancel()  # a graceful stop: c announces that it leaves
                await until(
                    lambda: all(n.members.states.get(c.peer_id) is State.LEFT for n in (a, b)),
                    "a and b hear that c left",
                )
                assert all((c.peer_id, State.DEAD) not in n.members.changes for n in (a, b))
                nursery.cancel_scope.cancel()

    trio.run(main)
