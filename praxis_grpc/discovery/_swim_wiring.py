"""The trimmer and the SWIM service of a :class:`~praxis_grpc.discovery.libp2p.MeshHost`,
built and wired into its host: what keeps the degree bounded and what decides who
is gone. Trio thread only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from praxis_grpc.discovery._admission import StreamHandler
from praxis_grpc.discovery._closing import close_peer
from praxis_grpc.discovery._dialer import Dialer, Trimmer
from praxis_grpc.discovery._host_setup import others
from praxis_grpc.discovery._membership import Membership
from praxis_grpc.discovery._options import HostOptions
from praxis_grpc.discovery._reach import HostReach
from praxis_grpc.discovery._swim import SWIM_PROTOCOL, Libp2pKeys, SwimService
from praxis_grpc.discovery._wire import TRIM_PROTOCOL
from praxis_grpc.discovery.members import MembershipOptions

Gate = Callable[[StreamHandler], StreamHandler]


def new_trimmer(
    host: IHost,
    membership: Membership,
    dialer: Dialer,
    *,
    options: HostOptions,
    reach: HostReach | None,
    gate: Gate,
) -> Trimmer:
    """The trimmer of ``host``'s connections, serving its protocol (through ``gate``);
    bootstrap nodes, rendezvous points and relays are never trimmed."""
    protected = {i.peer_id for i in others(host, options.bootstrap)}
    protected |= {i.peer_id for i in others(host, options.rendezvous_points)}
    if reach is not None:
        protected |= {i.peer_id for i in others(host, reach.relays)}
    trimmer = Trimmer(
        host,
        membership,
        dialer,
        target_peers=options.target_peers,
        max_peers=options.max_peers,
        grace=options.trim_grace,
        timeout=options.stream_timeout,
        protected=reach.protects(frozenset(protected)) if reach else protected,
    )
    host.set_stream_handler(TRIM_PROTOCOL, gate(trimmer.serve_notice))
    return trimmer


def new_swim(
    host: IHost,
    membership: Membership,
    greet: trio.MemorySendChannel[ID],
    *,
    options: HostOptions,
    members: MembershipOptions,
    address: str,
    gate: Gate,
) -> SwimService:
    """The SWIM service of ``host``, serving its protocol (through ``gate``).

    A member that comes back is greeted again (its card was removed); a member
    that died or left has its connections closed, which frees a slot.
    """

    def revived(peer_id: ID) -> None:
        with contextlib.suppress(trio.WouldBlock):
            greet.send_nowait(peer_id)  # its card was removed: exchange again

    async def gone(peer_id: ID) -> None:
        await close_peer(host.get_network(), peer_id, options.ping_timeout)
        membership.mark_lost(peer_id)

    swim = SwimService(
        host,
        membership,
        address=address,
        options=members,
        keys=Libp2pKeys(options.key_pair),
        on_revived=revived,
        on_gone=gone,
        on_rtt=membership.record_rtt,
        open_timeout=options.stream_timeout,
    )
    host.set_stream_handler(SWIM_PROTOCOL, gate(swim.serve))
    return swim
