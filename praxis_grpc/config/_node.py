"""The whole node configuration: every section, the checks that span sections,
and the paths derived from ``data_dir``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from praxis_grpc.config._agent import (
    AgentConfig,
    CardsConfig,
    RoutingConfig,
    TasksConfig,
    ToolsConfig,
)
from praxis_grpc.config._ha import HaConfig
from praxis_grpc.config._network import (
    ApiConfig,
    ClusterConfig,
    MembershipSection,
    MetricsConfig,
    P2PConfig,
)
from praxis_grpc.config._section import Section
from praxis_grpc.config._values import ConfigPath

# Room a task's other fields and its response take besides arguments and result.
TASK_ENVELOPE_BYTES = 64 * 1024


class Config(Section):
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
