"""Config loading: YAML, environment overrides, error messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from praxis_grpc.config import Config, ConfigError, load_config, parse_duration

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    config = load_config(path, environ={})
    assert config.agent.name


def test_env_overrides_nested_keys_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("api:\n  port: 7000\n")
    config = load_config(
        path,
        environ={
            "PRAXIS_API__PORT": "8001",
            "PRAXIS_AGENT__TAGS": '["a", "b"]',
            "PRAXIS_TASKS__DEFAULT_TIMEOUT": "500ms",
            "UNRELATED": "x",
        },
    )
    assert config.api.port == 8001
    assert config.agent.tags == ["a", "b"]
    assert config.tasks.default_timeout == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api:\n  port: 70000\n", r"c\.yaml: api\.port: .*less than or equal to 65535"),
        ("api:\n  prot: 1\n", r"c\.yaml: api\.prot: unknown key"),
        ("tasks:\n  default_timeout: soon\n", r"tasks\.default_timeout: .*duration"),
        ("tasks:\n  default_timeout: 2h\n", r"tasks: .*default_timeout must not exceed"),
        ("cards:\n  heartbeat: 20s\n", r"cards: .*heartbeat must be shorter than ttl"),
        ("- just\n- a list\n", r"top level must be a mapping"),
        ("api: [\n", r"invalid YAML"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"environment PRAXIS_API__PORT: api\.port"):
        load_config(None, environ={"PRAXIS_API__PORT": "many"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Path("/nonexistent/praxis.yaml"), environ={})


def test_defaults_derive_paths_from_data_dir() -> None:
    config = load_config(None, environ={"PRAXIS_AGENT__NAME": "n1"})
    assert config.store_path == Path(".praxis/n1/tasks.db")
    assert config.key_file == Path(".praxis/n1/node.key")


@pytest.mark.parametrize(
    ("value", "seconds"), [(3, 3.0), ("250ms", 0.25), ("2m", 120.0), ("1.5s", 1.5), ("1h", 3600.0)]
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "1d", True, None, "-1s"])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("ha", "message"),
    [
        ({"mode": "active-passive"}, "needs consensus.backend raft or etcd"),
        (
            {"mode": "active-passive", "consensus": {"backend": "raft", "raft": {"secret": "s"}}},
            "raft.address is required",
        ),
        (
            {
                "mode": "active-passive",
                "consensus": {"backend": "raft", "raft": {"address": "h:1"}},
            },
            "raft.secret (or raft.secret_file) is required",
        ),
        ({"consensus": {"backend": "etcd"}}, "only mode active-passive has"),
        (
            {"mode": "active-passive", "consensus": {"backend": "etcd", "etcd": {"prefix": "x"}}},
            "must start and end with '/'",
        ),
        (
            {
                "mode": "active-passive",
                "consensus": {
                    "backend": "raft",
                    "raft": {"address": "h:1", "secret": "s", "peers": ["nope"]},
                },
            },
            "'nope' is not host:port",
        ),
    ],
)
def test_bad_ha_settings_are_refused_naming_the_key(ha: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Config.model_validate({"ha": ha})
    assert message in str(info.value)


def test_task_limits_must_fit_a_message() -> None:
    config = load_config(None, environ={})
    assert config.tasks.max_result_bytes == 1024 * 1024
    assert (
        config.tasks.max_argument_bytes + config.tasks.max_result_bytes
        < config.api.max_message_bytes
    )
    with pytest.raises(ConfigError, match=r"tasks.max_result_bytes \(3145728\)"):
        load_config(None, environ={"PRAXIS_TASKS__MAX_RESULT_BYTES": str(3 * 1024 * 1024)})
    small = load_config(
        None,
        environ={
            "PRAXIS_API__MAX_MESSAGE_BYTES": str(256 * 1024),
            "PRAXIS_TASKS__MAX_ARGUMENT_BYTES": str(64 * 1024),
            "PRAXIS_TASKS__MAX_RESULT_BYTES": str(64 * 1024),
        },
    )
    assert small.tasks.max_result_bytes == 64 * 1024
