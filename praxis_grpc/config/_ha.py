"""The ``ha`` section: the topology, and the consensus group (raft or etcd) that
elects the coordinator of ``mode: active-passive``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from praxis_grpc.config._section import Section
from praxis_grpc.config._values import (
    ConfigPath,
    Duration,
    HostPort,
    PositiveDuration,
    check_host_port,
)


class RaftConfig(Section):
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


class EtcdTlsConfig(Section):
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


class EtcdConfig(Section):
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


class ConsensusConfig(Section):
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


class HaConfig(Section):
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
