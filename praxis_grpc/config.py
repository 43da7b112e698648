"""Node configuration: pydantic models, YAML loading and environment overrides.

The section and key names are part of the operator contract. Any key can be
overridden from the environment as ``PRAXIS_<SECTION>__<KEY>`` (nested keys
joined by ``__``); values are parsed as JSON when they parse (numbers, booleans,
lists), otherwise taken as strings; string and path keys take the value as written.

Types are strict (``true`` is not a port, ``"8000"`` in a file is not a number);
durations are finite and at most a year; duplicate keys are an error. Whatever the
input, :func:`load_config` returns a valid :class:`Config` or raises
:class:`ConfigError` naming the file or variable and the key.

Relative paths are resolved against the working directory of the node.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from praxis_grpc._config_env import ENV_PREFIX, apply_env_overrides
from praxis_grpc._config_errors import ConfigError, describe
from praxis_grpc._config_values import (
    MAX_BYTES,
    AnnounceMultiaddr,
    ConfigPath,
    Duration,
    Host,
    HostPort,
    IpAddress,
    PeerMultiaddr,
    Port,
    PositiveDuration,
    check_host_port,
    parse_duration,
)
from praxis_grpc._config_yaml import read_mapping
from praxis_grpc.membership.config import MembershipConfig

__all__ = [
    "ENV_PREFIX",
    "Config",
    "ConfigError",
    "Duration",
    "PositiveDuration",
    "load_config",
    "parse_duration",
    "read_mapping",
    "validate_config",
]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Section(BaseModel):
    """Strict: unknown keys, booleans for numbers, numbers for strings are all refused.

    A new key needs a type that bounds it: ``Port``, ``Duration``/``PositiveDuration``
    (finite, at most a year), ``int`` with ``Field(ge=..., le=...)`` (sizes at most
    ``MAX_BYTES``), ``bool``, ``Literal[...]``, ``Host``/``IpAddress``, ``ConfigPath``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgentConfig(_Section):
    """Who this node is."""

    name: str = Field(default="praxis", pattern=_NAME_RE)
    tags: list[str] = Field(default_factory=list)


class ApiTlsConfig(_Section):
    """TLS on the public API (``api.tls``). The files are read when the node
    starts; replacing them takes effect at the next restart."""

    cert: ConfigPath = Field(description="PEM certificate chain of this node")
    key: ConfigPath = Field(description="PEM private key of the certificate")
    client_ca: ConfigPath | None = Field(
        default=None,
        description="PEM CA bundle; when set, every client must present a certificate it signed",
    )


class ApiAuthConfig(_Section):
    """Bearer tokens with roles on the public API (``api.auth``); see SECURITY.md."""

    tokens_file: ConfigPath | None = Field(
        default=None,
        description="YAML list of {name, role, sha256} (praxis tokens add); unset: no auth",
    )
    open_health: bool = Field(default=True, description="health checks need no token")
    open_reflection: bool = Field(default=True, description="server reflection needs no token")


class ApiConfig(_Section):
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
        "beyond it gRPC itself answers RESOURCE_EXHAUSTED",
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


class MetricsConfig(_Section):
    """The Prometheus HTTP endpoint. Port 0 picks a free port."""

    enabled: bool = True
    host: Host = "127.0.0.1"
    port: Port = 9464
    require_token: bool = Field(
        default=False,
        description="/metrics needs 'Authorization: Bearer' with a token of api.auth.tokens_file",
    )


class P2PConfig(_Section):
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


class RaftConfig(_Section):
    """The embedded Raft group (pysyncobj) of ``backend: raft``."""

    address: str = Field(
        default="", description="this member's Raft address host:port (fixed; peers dial it)"
    )
    peers: list[HostPort] = Field(default_factory=list, description="the other voters' addresses")
    secret: str = Field(
        default="",
        description="shared by every member; required: pysyncobj speaks pickle, so "
        "only authenticated peers may talk to it",
    )
    secret_file: ConfigPath | None = Field(default=None, description="read the secret from a file")
    election_timeout: PositiveDuration = Field(
        default=0.3, description="minimum election timeout; the maximum is twice it"
    )
    heartbeat: PositiveDuration = Field(
        default=0.05, description="leader heartbeat (append entries) period"
    )
    commit_timeout: PositiveDuration = 5.0

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_host_port(value) if value else value

    @model_validator(mode="after")
    def _timing(self) -> RaftConfig:
        if self.heartbeat * 3 >= self.election_timeout:
            raise ValueError("heartbeat must be less than a third of election_timeout")
        return self


class EtcdTlsConfig(_Section):
    """TLS to etcd (``https`` client URLs); files read when the member starts."""

    ca: ConfigPath = Field(description="PEM CA of etcd's server certificates")
    cert: ConfigPath | None = Field(
        default=None, description="client certificate (--client-cert-auth)"
    )
    key: ConfigPath | None = Field(default=None, description="key of cert")

    @model_validator(mode="after")
    def _pair(self) -> EtcdTlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class EtcdConfig(_Section):
    """The external etcd v3 cluster of ``backend: etcd``."""

    endpoints: list[str] = Field(default_factory=lambda: ["127.0.0.1:2379"])
    prefix: str = Field(default="/praxis/", description="key prefix of this praxis cluster")
    lease_ttl: int = Field(
        default=2, ge=1, le=3600, description="seconds a dead coordinator keeps its lease"
    )
    commit_timeout: PositiveDuration = 5.0
    tls: EtcdTlsConfig | None = Field(default=None, description="unset: plaintext")
    username: str = Field(default="", description="etcd user (auth enabled); '' for none")
    password: str = Field(default="", repr=False, description="prefer password_file")
    password_file: ConfigPath | None = Field(default=None, description="read the password here")

    @model_validator(mode="after")
    def _user(self) -> EtcdConfig:
        if (self.password or self.password_file) and not self.username:
            raise ValueError("password needs username")
        if self.password and self.password_file:
            raise ValueError("set password or password_file, not both")
        return self

    @field_validator("prefix")
    @classmethod
    def _slashes(cls, value: str) -> str:
        if not value.startswith("/") or not value.endswith("/"):
            raise ValueError("must start and end with '/'")
        return value


class ConsensusConfig(_Section):
    """The consensus backend and its settings."""

    backend: Literal["none", "raft", "etcd"] = "none"
    raft: RaftConfig = Field(default_factory=RaftConfig)
    etcd: EtcdConfig = Field(default_factory=EtcdConfig)

    @model_validator(mode="after")
    def _backend_settings(self) -> ConsensusConfig:
        raft = self.raft
        if self.backend == "raft":
            if not raft.address:
                raise ValueError("raft.address is required with backend raft")
            if not (raft.secret or raft.secret_file):
                raise ValueError(
                    "raft.secret (or raft.secret_file) is required with backend raft: "
                    "pysyncobj exchanges pickled messages"
                )
        if self.backend == "etcd" and not self.etcd.endpoints:
            raise ValueError("etcd.endpoints must not be empty with backend etcd")
        return self


class HaConfig(_Section):
    """HA topology."""

    mode: Literal["active-active", "active-passive"] = "active-active"
    consensus: ConsensusConfig = Field(default_factory=ConsensusConfig)
    record_retention: PositiveDuration = Field(
        default=600.0,
        description="how long a finished task's record stays in the consensus state "
        "(its idempotency key deduplicates across failovers for that long)",
    )
    hold_timeout: Duration = Field(
        default=5.0,
        description="how long a task call waits for a coordinator during an election or "
        "take-over (and resends a relay the old coordinator never answered) before "
        "UNAVAILABLE; bounded by the caller's deadline; 0 answers at once",
    )
    forward_submissions: bool = Field(
        default=True,
        description="a standby forwards SubmitTask to the coordinator; off: UNAVAILABLE "
        "with the coordinator's address in trailing metadata",
    )

    @model_validator(mode="after")
    def _mode_needs_backend(self) -> HaConfig:
        if self.mode == "active-passive" and self.consensus.backend == "none":
            raise ValueError("mode active-passive needs consensus.backend raft or etcd")
        if self.mode == "active-active" and self.consensus.backend != "none":
            raise ValueError(
                f"consensus.backend {self.consensus.backend} elects a coordinator, which "
                "only mode active-passive has; use backend none with active-active"
            )
        return self


class ToolsConfig(_Section):
    """Which tools this node offers."""

    builtins: list[str] = Field(default_factory=lambda: ["calculator", "system_info"])
    contracts_dir: ConfigPath | None = None
    sandbox_root: ConfigPath | None = Field(
        default=None, description="root of file tools; defaults to <data_dir>/sandbox"
    )
    workers: int = Field(
        default=2,
        ge=1,
        le=256,
        description="worker processes that run input-dependent tools (calculator, "
        "text_analyzer, json_formatter, file_merger) at once; started on demand",
    )
    worker_memory_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=256 * 1024 * 1024,
        le=1 << 40,
        description="address-space limit of each worker process; a tool that exceeds it "
        "fails its task (WORKER_OUT_OF_MEMORY)",
    )


class TasksConfig(_Section):
    """The local task engine."""

    store: ConfigPath | None = Field(
        default=None, description="SQLite file; defaults to <data_dir>/tasks.db"
    )
    max_concurrency: int = Field(default=8, ge=1, le=10_000)
    queue_limit: int = Field(default=1000, ge=1, le=1_000_000)
    default_timeout: PositiveDuration = 60.0
    max_timeout: PositiveDuration = 3600.0
    drain_timeout: Duration = 30.0
    max_argument_bytes: int = Field(default=1024 * 1024, ge=1024, le=MAX_BYTES)
    max_result_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=MAX_BYTES,
        description="largest result a task stores, as protobuf Struct bytes; a larger one "
        "fails the task (RESULT_TOO_LARGE). With max_argument_bytes and 64 KiB it must fit "
        "api.max_message_bytes, so every task fits a response",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=100,
        description="times a task may start (on any agent) before a restart or a "
        "re-dispatch ends it FAILED (POISONED) instead of running it again",
    )
    fsync: bool = Field(
        default=False,
        description="fsync every commit (survives power loss); off survives process crashes",
    )

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> TasksConfig:
        if self.default_timeout > self.max_timeout:
            raise ValueError("default_timeout must not exceed max_timeout")
        return self


class RoutingConfig(_Section):
    """How a submitted task is placed on an agent (the node itself included)."""

    strategy: Literal["p2c", "round_robin", "random"] = Field(
        default="p2c",
        description="p2c: the less loaded of two random capable agents; "
        "round_robin and random ignore load (for comparison)",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=16, description="agents tried before a submission is refused"
    )
    call_timeout: PositiveDuration = Field(
        default=10.0, description="limit of one delegation call that does not wait for the result"
    )
    reattach_wait: PositiveDuration = Field(
        default=30.0,
        description="after a restart, how long a delegated task waits for its owner's card "
        "to appear before the owner counts as lost",
    )
    owner_lost_timeout: PositiveDuration = Field(
        default=300.0,
        description="how long a task of a non-idempotent tool waits for its lost owner to "
        "come back before it ends FAILED (OWNER_LOST)",
    )


class CardsConfig(_Section):
    """Card publication: the card on change, a small status when load moves or to refresh.

    ``ttl`` and ``heartbeat`` are for up to 10 nodes; both are multiplied by
    ``max(1, N/10)`` for N known agents, so that the refreshes a node receives
    per second stay flat as the cluster grows. SWIM detects failures, so the
    refresh only renews TTLs: every 6 s it still cost an idle 10-node mesh
    about half its CPU, hence 30 s.
    """

    ttl: PositiveDuration = Field(
        default=150.0,
        description="a remote card neither refreshed nor updated this long is removed",
    )
    heartbeat: PositiveDuration = Field(
        default=30.0, description="the status is republished at least this often (keeps TTLs)"
    )
    sample_interval: PositiveDuration = Field(
        default=0.25, description="how often the local load is checked (no message unless moved)"
    )
    load_threshold: float = Field(
        default=0.1, ge=0.0, le=1.0, description="load change, in capacity, that publishes a status"
    )
    max_slots: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="a peer card advertising more task slots (capacity) than this is "
        "refused; at least tasks.max_concurrency of every node",
    )

    @model_validator(mode="after")
    def _heartbeat_below_ttl(self) -> CardsConfig:
        if self.heartbeat >= self.ttl:
            raise ValueError("heartbeat must be shorter than ttl")
        return self


class MembershipSection(_Section):
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


class ClusterConfig(_Section):
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


# Room a task's other fields and its response take besides arguments and result.
TASK_ENVELOPE_BYTES = 64 * 1024


class Config(_Section):
    """A whole node configuration."""

    data_dir: ConfigPath | None = Field(
        default=None, description="defaults to .praxis/<agent.name>"
    )
    agent: AgentConfig = Field(default_factory=AgentConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    p2p: P2PConfig = Field(default_factory=P2PConfig)
    ha: HaConfig = Field(default_factory=HaConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    cards: CardsConfig = Field(default_factory=CardsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    membership: MembershipSection = Field(default_factory=MembershipSection)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _slots_within_ceiling(self) -> Config:
        if self.tasks.max_concurrency > self.cards.max_slots:
            raise ValueError(
                f"tasks.max_concurrency ({self.tasks.max_concurrency}) must not exceed "
                f"cards.max_slots ({self.cards.max_slots}): peers would refuse this node's card"
            )
        return self

    @model_validator(mode="after")
    def _tls_peers_need_cluster(self) -> Config:
        # Without cluster.*, the peer service shares api.port, and peers call it
        # in plaintext: over api.tls every delegation and forward would fail.
        has_peers = self.p2p.enabled or self.ha.mode == "active-passive"
        if self.api.tls is not None and has_peers and self.cluster.ca_cert is None:
            raise ValueError(
                "api.tls on a node with peers (p2p.enabled or ha.mode active-passive) needs "
                "cluster.ca_cert, cluster.node_cert and cluster.node_key: members then call "
                "each other over mutual TLS on cluster.peer_port (see SECURITY.md)"
            )
        return self

    @model_validator(mode="after")
    def _metrics_tokens(self) -> Config:
        if self.metrics.require_token and self.api.auth.tokens_file is None:
            raise ValueError("metrics.require_token needs api.auth.tokens_file (the tokens)")
        return self

    @model_validator(mode="after")
    def _tasks_fit_messages(self) -> Config:
        tasks, room = self.tasks, self.api.max_message_bytes - TASK_ENVELOPE_BYTES
        if tasks.max_argument_bytes + tasks.max_result_bytes > room:
            raise ValueError(
                f"tasks.max_argument_bytes ({tasks.max_argument_bytes}) + tasks.max_result_bytes "
                f"({tasks.max_result_bytes}) + {TASK_ENVELOPE_BYTES} must not exceed "
                f"api.max_message_bytes ({self.api.max_message_bytes}): a task must fit a response"
            )
        return self

    @model_validator(mode="after")
    def _streams_hold_the_queue(self) -> Config:
        # A delegating peer keeps one WatchTask stream open per task it sent here.
        needed = self.tasks.queue_limit + self.tasks.max_concurrency
        if self.api.max_concurrent_streams < needed:
            raise ValueError(
                f"api.max_concurrent_streams ({self.api.max_concurrent_streams}) must be at "
                f"least tasks.queue_limit + tasks.max_concurrency ({needed}): a delegating "
                "peer watches every task it sent here on one connection"
            )
        return self

    @property
    def resolved_data_dir(self) -> Path:
        """The directory holding this node's state."""
        return self.data_dir or Path(".praxis") / self.agent.name

    @property
    def store_path(self) -> Path:
        """The SQLite task store."""
        return self.tasks.store or self.resolved_data_dir / "tasks.db"

    @property
    def key_file(self) -> Path:
        """The libp2p identity key."""
        return self.p2p.key_file or self.resolved_data_dir / "node.key"

    @property
    def sandbox_root(self) -> Path:
        """The directory file tools are confined to."""
        return self.tools.sandbox_root or self.resolved_data_dir / "sandbox"


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or defaults when ``None``), apply ``PRAXIS_*`` overrides, validate.

    No input makes this raise anything but :class:`ConfigError`.

    Raises:
        ConfigError: unreadable, oversized, non-UTF-8 or invalid YAML file, a duplicate
            key, an unknown key, an invalid value or environment variable; each line of
            the message starts with the file (or ``environment PRAXIS_...``) and the key.
    """
    source = str(path) if path is not None else "<defaults>"
    data = read_mapping(Path(path), source) if path is not None else {}
    overridden = apply_env_overrides(data, os.environ if environ is None else environ, Config)
    return validate_config(data, source, overridden)


def validate_config(
    data: Mapping[str, Any],
    source: str = "<defaults>",
    overridden: Mapping[tuple[str, ...], str] | None = None,
) -> Config:
    """Validate parsed config ``data`` (from ``source``).

    Raises:
        ConfigError: as :func:`load_config`; problems at keys in ``overridden`` (key
            path: variable name) are reported against the variable.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source, overridden or {})) from None
