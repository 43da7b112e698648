"""Sections of how the node is reached and reaches others: ``api``, ``metrics``, ``p2p``,
``membership`` (SWIM) and ``cluster`` (admission and mutual TLS between peers)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from praxis_grpc.config._section import Section
from praxis_grpc.config._values import (
    MAX_BYTES,
    AnnounceMultiaddr,
    ConfigPath,
    Duration,
    Host,
    IpAddress,
    PeerMultiaddr,
    Port,
    PositiveDuration,
)
from praxis_grpc.membership.config import MembershipConfig


class ApiTlsConfig(Section):
    """TLS on the public API (``api.tls``). The files are read when the node
    starts; replacing them takes effect at the next restart."""

    cert: ConfigPath = Field(description="PEM certificate chain of this node")
    key: ConfigPath = Field(description="PEM private key of the certificate")
    client_ca: ConfigPath | None = Field(
        default=None,
        description="PEM CA bundle; when set, every client must present a certificate it signed",
    )


class ApiAuthConfig(Section):
    """Bearer tokens with roles on the public API (``api.auth``); see SECURITY.md."""

    tokens_file: ConfigPath | None = Field(
        default=None,
        description="YAML list of {name, role, sha256} (praxis tokens add); unset: no auth",
    )
    open_health: bool = Field(default=True, description="health checks need no token")
    open_reflection: bool = Field(default=True, description="server reflection needs no token")


class ApiConfig(Section):
    """The gRPC server. Port 0 picks a free port."""

    host: Host = "127.0.0.1"
    port: Port = 50051
    advertise_host: Host | None = Field(
        default=None, description="host put in the card; defaults to host"
    )
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=MAX_BYTES)
    # Connection limits: what one client (or many) can hold on the server.
    max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="open client connections at once; further ones are closed on accept",
    )
    max_concurrent_rpcs: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="calls in progress at once over all connections, streams included; "
        "beyond it the next call is answered RESOURCE_EXHAUSTED before its handler runs "
        "(api/call_limit.py)",
    )
    max_concurrent_streams: int = Field(
        default=2048,
        ge=1,
        le=1_000_000,
        description="calls in progress at once on one connection (HTTP/2 "
        "MAX_CONCURRENT_STREAMS); a peer keeps one WatchTask per task it delegated here, so "
        "keep it above tasks.queue_limit + tasks.max_concurrency",
    )
    max_connection_idle: PositiveDuration = Field(
        default=300.0, description="a connection without calls for this long is closed (GOAWAY)"
    )
    max_connection_age: PositiveDuration = Field(
        default=1800.0,
        description="every connection is asked to go away (GOAWAY) after this long; "
        "clients reconnect for new calls",
    )
    max_connection_age_grace: Duration = Field(
        default=300.0,
        description="calls still running on a connection that was asked to go away end "
        "UNAVAILABLE after this long (streams are re-opened by their clients)",
    )
    keepalive_time: PositiveDuration = Field(
        default=60.0, description="the server pings every connection this often"
    )
    keepalive_timeout: PositiveDuration = Field(
        default=20.0,
        description="a connection that does not acknowledge a ping within this is closed",
    )
    tls: ApiTlsConfig | None = Field(default=None, description="unset: plaintext")
    auth: ApiAuthConfig = Field(default_factory=ApiAuthConfig)


class MetricsConfig(Section):
    """The Prometheus HTTP endpoint. Port 0 picks a free port."""

    enabled: bool = True
    host: Host = "127.0.0.1"
    port: Port = 9464
    require_token: bool = Field(
        default=False,
        description="/metrics needs 'Authorization: Bearer' with a token of api.auth.tokens_file",
    )


class P2PConfig(Section):
    """The libp2p host: identity, listening address and discovery methods."""

    enabled: bool = True
    host: IpAddress = "127.0.0.1"
    port: Port = 0
    secure: Literal["noise"] = Field(
        default="noise", description="transport security; only Noise is offered"
    )
    rendezvous: str = Field(default="praxis-agents", description="namespace; '' turns it off")
    rendezvous_points: list[PeerMultiaddr] = Field(
        default_factory=list,
        description="multiaddrs of rendezvous servers; empty: serve rendezvous here",
    )
    enable_mdns: bool = False
    enable_dht: bool = False
    bootstrap_nodes: list[PeerMultiaddr] = Field(default_factory=list)
    key_file: ConfigPath | None = Field(
        default=None, description="libp2p private key; defaults to <data_dir>/node.key"
    )
    max_card_bytes: int = Field(default=64 * 1024, ge=1024, le=4 * 1024 * 1024)
    disconnect_grace: Duration = Field(
        default=1.0, description="how long a disconnected peer's card is kept"
    )
    target_peers: int = Field(
        default=8, ge=1, le=1000, description="discovery stops dialing at this many connections"
    )
    max_peers: int = Field(
        default=12, ge=1, le=1000, description="above this, connections are trimmed to target_peers"
    )
    trim_grace: Duration = Field(
        default=5.0, description="a connection younger than this is never trimmed"
    )
    relays: list[PeerMultiaddr] = Field(
        default_factory=list,
        description="circuit relay v2 nodes to reserve a slot on (a node behind NAT): "
        "its /p2p-circuit addresses are advertised and tasks reach it over libp2p",
    )
    relay_service: bool = Field(
        default=False, description="serve circuit relay v2 (hop) to other nodes"
    )
    relay_max_reservations: int = Field(
        default=128, ge=1, le=100_000, description="relay service: reservations held at once"
    )
    relay_reservation_ttl: PositiveDuration = Field(
        default=3600.0, description="relay service: how long a reservation lasts unrenewed"
    )
    relay_max_circuits: int = Field(
        default=64, ge=1, le=100_000, description="relay service: circuits open per peer"
    )
    relay_max_circuit_duration: PositiveDuration = Field(
        default=3600.0, description="relay service: a circuit is closed after this long"
    )
    relay_max_circuit_bytes: int = Field(
        default=1024**3,
        ge=64 * 1024,
        le=2**62,
        description="relay service: a circuit is closed after relaying this many bytes",
    )
    reachability: Literal["auto", "public", "private"] = Field(
        default="auto",
        description="auto: peers dial this node back to find whether it is public or private "
        "(behind NAT: it then reserves on p2p.relays, or without them on members whose cards "
        "offer the relay service); public/private: taken as given, nothing asked",
    )
    hole_punching: bool = Field(
        default=False,
        description="upgrade relayed connections to direct ones (DCUtR) where the NATs "
        "allow it; the relayed connection is kept either way",
    )
    announce_addrs: list[AnnounceMultiaddr] = Field(
        default_factory=list,
        description="addresses advertised instead of the listen address "
        "(port-forwarded or containerised nodes), e.g. /ip4/203.0.113.7/tcp/4001",
    )

    @model_validator(mode="after")
    def _target_within_max(self) -> P2PConfig:
        if self.target_peers > self.max_peers:
            raise ValueError("target_peers must not exceed max_peers")
        for key in ("relays", "relay_service", "hole_punching", "announce_addrs"):
            if getattr(self, key) and not self.enabled:
                raise ValueError(f"{key} needs enabled: true (it is a libp2p feature)")
        if self.relay_reservation_ttl < 10:
            raise ValueError("relay_reservation_ttl must be at least 10s (it is renewed early)")
        return self


class MembershipSection(Section):
    """SWIM failure detection (see :class:`~praxis_grpc.membership.MembershipConfig`).

    A member that misses a probe and the indirect probes is suspected; unless it
    refutes, it is dead after ``suspicion_mult * max(1, log10 N) * probe_interval``
    seconds (up to ``suspicion_max_timeout_mult`` times that without confirmations).
    """

    probe_interval: PositiveDuration = Field(default=0.5, description="one member probed per")
    probe_timeout: PositiveDuration = Field(
        default=0.25, description="direct ack wait before indirect probes; below probe_interval"
    )
    connect_timeout: PositiveDuration = Field(
        default=2.0, description="a probe's connection setup, not counted in probe_timeout"
    )
    indirect_checks: int = Field(default=3, ge=0, le=16, description="members asked to probe")
    suspicion_mult: int = Field(default=4, ge=1, le=100)
    suspicion_max_timeout_mult: int = Field(default=6, ge=1, le=100)
    awareness_max_multiplier: int = Field(default=8, ge=1, le=100)
    retransmit_mult: int = Field(default=4, ge=1, le=100)
    gossip_interval: PositiveDuration = 0.2
    gossip_fanout: int = Field(default=3, ge=1, le=100)
    gossip_to_the_dead: PositiveDuration = Field(
        default=30.0, description="dead and left members are remembered this long"
    )
    push_pull_interval: Duration = Field(default=30.0, description="full sync period; 0: off")
    max_packet_bytes: int = Field(default=1400, ge=512, le=1024 * 1024)
    verified_cache_size: int = Field(default=65536, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> MembershipSection:
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("probe_timeout must be below probe_interval")
        return self

    def protocol(self) -> MembershipConfig:
        """These settings as the state machine's config."""
        return MembershipConfig(**self.model_dump())


class ClusterConfig(Section):
    """Admission to the mesh and authenticated peers (see SECURITY.md, "The mesh").

    All three paths set: only nodes with a certificate from ``ca_cert`` naming
    their libp2p peer id are admitted to the mesh, and the peer service is
    served on its own mutual-TLS port. None set: an open mesh (insecure).
    """

    ca_cert: ConfigPath | None = Field(default=None, description="the cluster CA certificate")
    node_cert: ConfigPath | None = Field(
        default=None, description="this node's certificate (praxis certs issue --node-key)"
    )
    node_key: ConfigPath | None = Field(default=None, description="its private key")
    peer_port: Port = Field(
        default=0, description="mutual-TLS port of the peer service, on api.host; 0 picks one"
    )
    admission_timeout: PositiveDuration = Field(
        default=5.0, description="a connected peer not admitted within this is disconnected"
    )
    revoked: ConfigPath | None = Field(
        default=None,
        description="deny-list: revoked peer ids and certificate serials (serial=HEX), "
        "one a line, read at start; refused by admission, card checks and the peer listener",
    )
    max_calls_per_peer: int = Field(
        default=2048,
        ge=1,
        le=1_000_000,
        description="peer-service calls and streams in progress at once from one peer, on "
        "the peer listener (with cluster set) and over libp2p; more are refused "
        "RESOURCE_EXHAUSTED. Above tasks.max_concurrency + tasks.queue_limit: a peer "
        "follows each task it delegated here",
    )

    @model_validator(mode="after")
    def _all_or_none(self) -> ClusterConfig:
        given = [self.ca_cert, self.node_cert, self.node_key]
        if any(p is not None for p in given) and not all(p is not None for p in given):
            raise ValueError("ca_cert, node_cert and node_key are set together or not at all")
        return self

    @property
    def enabled(self) -> bool:
        """Whether admission (and mutual TLS between peers) is on."""
        return self.ca_cert is not None
