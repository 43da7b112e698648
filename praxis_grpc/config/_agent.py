"""Sections of what this agent is and does: ``agent`` (its name), ``tools``, ``tasks``
(the local engine), ``routing`` (placement of submitted tasks) and ``cards`` (publication)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from praxis_grpc.config._section import Section
from praxis_grpc.config._values import MAX_BYTES, ConfigPath, Duration, PositiveDuration

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class AgentConfig(Section):
    """Who this node is."""

    name: str = Field(default="praxis", pattern=_NAME_RE)
    tags: list[str] = Field(default_factory=list)


class ToolsConfig(Section):
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


class TasksConfig(Section):
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


class RoutingConfig(Section):
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


class CardsConfig(Section):
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
