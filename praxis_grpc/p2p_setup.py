"""A node's side of the mesh, built from its config: its membership
credentials (``cluster.*``), the libp2p discovery (``p2p.*``, with SWIM as
its failure detector, ``membership.*``) and the card gossip over it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from praxis_grpc.card_certs import CardCertificates
from praxis_grpc.card_checks import CardRules
from praxis_grpc.certs import CertError
from praxis_grpc.cluster import ClusterCredentials
from praxis_grpc.config import Config
from praxis_grpc.directory import CardDirectory
from praxis_grpc.discovery.base import Discovery
from praxis_grpc.discovery.members import MembershipOptions
from praxis_grpc.gossip import CardGossip
from praxis_grpc.identity import Identity
from praxis_grpc.metrics import Metrics
from praxis_grpc.node_parts import StartupError
from praxis_grpc.revocation import NOTHING_REVOKED, Revocations
from praxis_grpc.roster import MemberRoster

__all__ = ["cluster_credentials", "libp2p_discovery", "start_gossip"]

log = logging.getLogger(__name__)


def cluster_credentials(cfg: Config, agent_id: str) -> ClusterCredentials | None:
    """This node's membership credentials (``cluster.*``); None for an open mesh
    (logged as a warning: anyone who reaches the p2p port joins).

    Raises:
        StartupError: a file is unreadable, or the certificate is not signed by
            the CA or does not name ``agent_id`` (the message names the key).
    """
    cluster = cfg.cluster
    if cluster.ca_cert is None or cluster.node_cert is None or cluster.node_key is None:
        if cfg.p2p.enabled:
            log.warning(
                "cluster is not set: the mesh is open, anyone who reaches p2p %s:%s can join "
                "it, read cards and take tasks (see SECURITY.md)",
                cfg.p2p.host,
                cfg.p2p.port,
            )
        return None
    try:
        revoked = NOTHING_REVOKED if cluster.revoked is None else Revocations.load(cluster.revoked)
        return ClusterCredentials.load(
            cluster.ca_cert, cluster.node_cert, cluster.node_key, peer_id=agent_id, revoked=revoked
        )
    except CertError as exc:
        raise StartupError(str(exc)) from None


async def start_gossip(
    cfg: Config,
    *,
    directory: CardDirectory,
    identity: Identity,
    discovery: Discovery | None,
    metrics: Metrics,
    incarnation: int,
    credentials: ClusterCredentials | None = None,
) -> tuple[Discovery | None, CardGossip | None, list[str]]:
    """Card gossip over ``discovery`` (or libp2p when ``p2p.enabled``):
    (discovery, gossip, listen addresses); all empty without discovery.

    Raises:
        StartupError: the libp2p host cannot start.
    """
    p2p = cfg.p2p
    if discovery is None and p2p.enabled:
        discovery = libp2p_discovery(
            cfg, identity, directory, metrics, incarnation, credentials=credentials
        )
    if discovery is None:
        return None, None, []
    gossip = CardGossip(
        directory=directory,
        identity=identity,
        discovery=discovery,
        metrics=metrics,
        disconnect_grace=p2p.disconnect_grace,
        max_card_bytes=p2p.max_card_bytes,
        load_threshold=cfg.cards.load_threshold,
        card_interval=cfg.cards.heartbeat,  # each refresh carries the card: it repairs a missed one
        rules=CardRules(ttl=cfg.cards.ttl, max_slots=cfg.cards.max_slots),
        certificates=CardCertificates(credentials) if credentials is not None else None,
    )
    try:
        return discovery, gossip, await gossip.start()
    except Exception as exc:
        raise StartupError(
            f"p2p: cannot start the libp2p host on {p2p.host}:{p2p.port}: {exc}"
        ) from exc


def libp2p_discovery(
    cfg: Config,
    identity: Identity,
    directory: CardDirectory,
    metrics: Metrics,
    incarnation: int,
    *,
    credentials: ClusterCredentials | None = None,
    on_addrs: Callable[[list[str]], None] | None = None,
    on_reachability: Callable[[str], None] | None = None,
) -> Discovery:
    """The libp2p discovery of ``p2p.*`` (not started), with SWIM as its
    failure detector feeding the directory (``membership.*``), admitting
    only holders of a cluster certificate when ``credentials`` are given;
    ``on_addrs`` gets its advertised addresses whenever relaying changes them."""
    from praxis_grpc.discovery._admission import AdmissionOptions
    from praxis_grpc.discovery.bridge import Libp2pDiscovery
    from praxis_grpc.discovery.libp2p import HostOptions
    from praxis_grpc.reach import reach_options

    p2p = cfg.p2p
    roster = MemberRoster(
        directory=directory, metrics=metrics, forget_after=cfg.membership.gossip_to_the_dead
    )
    return Libp2pDiscovery(
        HostOptions(
            key_pair=identity.key_pair,
            listen_host=p2p.host,
            listen_port=p2p.port,
            bootstrap=tuple(p2p.bootstrap_nodes),
            enable_mdns=p2p.enable_mdns,
            enable_dht=p2p.enable_dht,
            rendezvous=p2p.rendezvous,
            rendezvous_points=tuple(p2p.rendezvous_points),
            heartbeat_interval=min(cfg.cards.heartbeat, 1.0),
            max_card_bytes=p2p.max_card_bytes,
            target_peers=p2p.target_peers,
            max_peers=p2p.max_peers,
            trim_grace=p2p.trim_grace,
            admission=None
            if credentials is None
            else AdmissionOptions(
                credentials,
                timeout=cfg.cluster.admission_timeout,
                on_refused=lambda reason: metrics.admission_rejected_total.labels(reason).inc(),
            ),
            on_gossip_repair=lambda kind: metrics.gossip_repairs_total.labels(kind).inc(),
        ),
        membership=MembershipOptions(cfg.membership.protocol(), incarnation, roster),
        reach=reach_options(
            cfg, metrics.peer_calls_refused_total.labels("libp2p", "per_peer_limit").inc
        ),
        on_addrs=on_addrs,
        on_reachability=on_reachability,
        on_holepunch=lambda outcome: metrics.p2p_holepunch_total.labels(outcome).inc(),
    )
