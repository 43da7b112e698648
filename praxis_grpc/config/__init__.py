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

Import from here; the private modules do one job each: ``_section`` the strict
base, ``_network``, ``_ha`` and ``_agent`` the sections by what they configure,
``_node`` the whole :class:`Config` with the checks that span sections, ``_load``
loading, and under them ``_values`` (value types), ``_yaml`` (reading a file),
``_env`` (overrides) and ``_errors`` (how problems are reported).
"""

from __future__ import annotations

from praxis_grpc.config._agent import (
    AgentConfig,
    CardsConfig,
    RoutingConfig,
    TasksConfig,
    ToolsConfig,
)
from praxis_grpc.config._env import ENV_PREFIX
from praxis_grpc.config._errors import ConfigError
from praxis_grpc.config._ha import (
    ConsensusConfig,
    EtcdConfig,
    EtcdTlsConfig,
    HaConfig,
    RaftConfig,
)
from praxis_grpc.config._load import load_config, validate_config
from praxis_grpc.config._network import (
    ApiAuthConfig,
    ApiConfig,
    ApiTlsConfig,
    ClusterConfig,
    MembershipSection,
    MetricsConfig,
    P2PConfig,
)
from praxis_grpc.config._node import TASK_ENVELOPE_BYTES, Config
from praxis_grpc.config._values import Duration, PositiveDuration, parse_duration
from praxis_grpc.config._yaml import read_mapping

__all__ = [
    "ENV_PREFIX",
    "TASK_ENVELOPE_BYTES",
    "AgentConfig",
    "ApiAuthConfig",
    "ApiConfig",
    "ApiTlsConfig",
    "CardsConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ConsensusConfig",
    "Duration",
    "EtcdConfig",
    "EtcdTlsConfig",
    "HaConfig",
    "MembershipSection",
    "MetricsConfig",
    "P2PConfig",
    "PositiveDuration",
    "RaftConfig",
    "RoutingConfig",
    "TasksConfig",
    "ToolsConfig",
    "load_config",
    "parse_duration",
    "read_mapping",
    "validate_config",
]
