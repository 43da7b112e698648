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
        ("cards:\n  heartbeat: 200s\n", r"cards: .*heartbeat must be shorter than ttl"),
        ("- just\n- a list\n", r"top level must be a mapping"),
        ("api: [\n", r"c\.yaml: line 2, column 1: invalid YAML: while parsing a flow node, "),
        ("api:\x00\n", r"c\.yaml: offset 4: invalid YAML: unacceptable character #x0000: special"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PRAXIS_API__PORT": "many"}, r"environment PRAXIS_API__PORT: api\.port: "),
        ({"PRAXIS_API__PORT": "true"}, r"environment PRAXIS_API__PORT: api\.port: .*integer"),
        ({"PRAXIS_AGENT__TAGS": '["a", '}, r"environment PRAXIS_AGENT__TAGS: not a JSON list"),
        ({"PRAXIS_AGENT__TAGS": '"a"'}, r"environment PRAXIS_AGENT__TAGS: expected a JSON list"),
        ({"PRAXIS_AGENT__TAGS": "[" * 100_000}, r"environment PRAXIS_AGENT__TAGS: not a JSON"),
        (
            {"PRAXIS_P2P__BOOTSTRAP_NODES": '["/ip4/1.2.3.4/tcp/1/p2p/nope"]'},
            r"environment PRAXIS_P2P__BOOTSTRAP_NODES: p2p\.bootstrap_nodes\[0\]: .*multiaddr",
        ),
        ({"PRAXIS_TASKS__DRAIN_TIMEOUT": "1e999"}, r"PRAXIS_TASKS__DRAIN_TIMEOUT: .*finite"),
        ({"PRAXIS_API__": "1"}, r"environment PRAXIS_API__: malformed name"),
    ],
)
def test_bad_env_value_names_the_variable(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, environ=environ)


def test_env_strings_stay_strings() -> None:
    config = load_config(
        None,
        environ={
            "PRAXIS_AGENT__NAME": "123",
            "PRAXIS_HA__CONSENSUS__RAFT__SECRET": "4711",
            "PRAXIS_API__HOST": '"0.0.0.0"',
            "PRAXIS_P2P__ENABLED": "false",
            "PRAXIS_TASKS__STORE": "/var/lib/praxis/tasks.db",
        },
    )
    assert config.agent.name == "123"
    assert config.ha.consensus.raft.secret == "4711"
    assert config.api.host == "0.0.0.0"
    assert config.p2p.enabled is False
    assert config.store_path == Path("/var/lib/praxis/tasks.db")


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


PEER = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


# The config reproductions of issue 9: each exited 1 with a traceback, was accepted
# though wrong, or was refused without naming the key.
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x01\x02\xff\xfe\x89PNG", r"c\.yaml: not UTF-8 text \(byte b'\\xff' at offset 3\)"),
        (b"api:\n  host: caf\xe9\n", r"c\.yaml: not UTF-8 text"),
        (
            b"a: " + b"[" * 20_000 + b"]" * 20_000,
            r"c\.yaml: line 1, column 35: invalid YAML: nested deeper than 32 levels",
        ),
        (
            b"p2p:\n  bootstrap_nodes: [/ip4/10.0.0.1/tcp/4001/p2p/" + PEER.encode() + b"]\n"
            b"  rendezvous_points: [/ip4/10.0.0.1/tcp/4001/p2p/notapeerid]\n",
            r"c\.yaml: p2p\.rendezvous_points\[0\]: '/ip4/10.0.0.1/tcp/4001/p2p/notapeerid' "
            r"is not a multiaddr ending in /p2p/<peer id> \(Invalid CID: notapeerid\)",
        ),
        (
            b"p2p:\n  bootstrap_nodes:\n    - /ip4/10.0.0.1/tcp/4001/p2p/" + PEER.encode() + b"\n"
            b"    - /ip9/10.0.0.1/p2p/" + PEER.encode() + b"\n",
            r"c\.yaml: p2p\.bootstrap_nodes\[1\]: .* \(unknown protocol: ip9\)",
        ),
        (b"p2p:\n  host: not-an-ip\n", r"c\.yaml: p2p\.host: 'not-an-ip' is not an IP address"),
        (b"api:\n  max_message_bytes: 1.0e+14\n", r"c\.yaml: api\.max_message_bytes: .*integer"),
        (
            b"api:\n  max_message_bytes: 100000000000000\n",
            r"c\.yaml: api\.max_message_bytes: Input should be less than or equal to 2147483647",
        ),
        (b"api:\n  port: true\n", r"c\.yaml: api\.port: Input should be a valid integer"),
        (
            b"tasks:\n  default_timeout: .inf\n  max_timeout: .inf\n",
            r"c\.yaml: tasks\.default_timeout: must be finite and at most a year, got inf",
        ),
        (b"cards:\n  ttl: .inf\n", r"c\.yaml: cards\.ttl: must be finite"),
        (
            b"api:\n  port: 7000\nmetrics:\n  port: 0\napi:\n  host: 0.0.0.0\n",
            r"c\.yaml: line 5: api: duplicate key \(first at line 1\)",
        ),
        (b'data_dir: "/tmp/a\\0b"\n', r"c\.yaml: data_dir: '/tmp/a\\x00b' contains a NUL"),
    ],
)
def test_issue_9_reproductions_are_refused_naming_the_key(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p2p:\n  enabled: 1\n", r"p2p\.enabled: Input should be a valid boolean \(got 1\)"),
        ("api:\n  port: 8000.0\n", r"api\.port: Input should be a valid integer"),
        ("api:\n  port: '8000'\n", r"api\.port: Input should be a valid integer"),
        ("agent:\n  name: 5\n", r"agent\.name: Input should be a valid string"),
        ("data_dir: 17\n", r"c\.yaml: data_dir: expected a path, got 17"),
        ("api:\n  host: 'bad host'\n", r"api\.host: 'bad host' is not an IP address or host name"),
        ("tasks:\n  drain_timeout: 400d\n", r"tasks\.drain_timeout: expected a duration"),
        ("tasks:\n  drain_timeout: 9999h\n", r"tasks\.drain_timeout: must be finite and at most"),
        (
            "tasks:\n  drain_timeout: " + "9" * 5000 + "\n",
            r"line 2: tasks\.drain_timeout: cannot read this value \(Exceeds",
        ),
        ("tasks:\n  drain_timeout: 1" + ":0" * 300 + "\n", r"drain_timeout: must be at most"),
        ("api:\n  host: 2001-02-30\n", r"line 2: api\.host: cannot read this value \(day is"),
        ("tasks: {store: x, store: y}\n", r"line 1: tasks\.store: duplicate key \(first at line 1"),
        ("agent:\n  tags: [a, {b: 1, b: 2}]\n", r"line 2: agent\.tags\[1\]\.b: duplicate key"),
        ("a: &a [*a]\n", r"line 1, column 8: invalid YAML: found a recursive alias"),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, c in zip("abcd", "bcde", strict=True)
            ),
            r"more than 100000 nodes",
        ),
        (
            "a: &a " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n",
            r"nested deeper than 32 levels",
        ),
        (
            "ha:\n  consensus:\n    raft:\n      peers: ['h:1', 'h:70000']\n",
            r"ha\.consensus\.raft\.peers\[1\]: 'h:70000' is not host:port",
        ),
        (
            "api: !!python/object:os.system {}\n",
            r"line 1, column 6: invalid YAML: could not determine a constructor for the tag",
        ),
    ],
)
def test_strict_and_bounded(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})


def test_oversized_file_and_directory_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: larger than 1048576 bytes"):
        load_config(big, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, environ={})


def test_anchors_merge_keys_and_documented_formats_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    text = f"""\ufeff
api:
  <<: &listen {{host: localhost, port: 0}}
  advertise_host: node-1.example.org
metrics:
  <<: *listen
  port: 9000
p2p:
  host: "::"
  bootstrap_nodes:
    - /dns4/seed.example.org/tcp/4001/p2p/{PEER}
    - /ip6/::1/tcp/4001/p2p/{PEER}
routing: {{call_timeout: 2.5, reattach_wait: 10s, owner_lost_timeout: 5m}}
tasks: {{default_timeout: 500ms, max_timeout: 1h, drain_timeout: 0}}
cards: {{ttl: 3, heartbeat: 1.5}}
"""
    path.write_text(text)
    config = load_config(path, environ={})
    assert (config.metrics.host, config.metrics.port) == ("localhost", 9000)
    assert config.api.advertise_host == "node-1.example.org"
    assert config.p2p.bootstrap_nodes[1].startswith("/ip6/::1/")
    assert (config.routing.call_timeout, config.routing.reattach_wait) == (2.5, 10.0)
    assert config.routing.owner_lost_timeout == 300.0
    assert config.tasks.default_timeout == 0.5
    assert config.cards.ttl == 3.0


def test_streams_per_connection_hold_a_full_queue() -> None:
    with pytest.raises(ConfigError, match=r"api.max_concurrent_streams \(1000\) must be at least"):
        load_config(
            None,
            environ={
                "PRAXIS_API__MAX_CONCURRENT_STREAMS": "1000",
                "PRAXIS_TASKS__QUEUE_LIMIT": "1000",
            },
        )
    assert (
        load_config(
            None, environ={"PRAXIS_API__MAX_CONCURRENT_STREAMS": "1008"}
        ).api.max_concurrent_streams
        == 1008
    )


RELAY = "/ip4/10.200.0.1/tcp/4001/p2p/" + "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p2p:\n  relays: [/ip4/10.0.0.1/tcp/1]\n", r"p2p\.relays\[0\]: .*ending in /p2p/"),
        ("p2p:\n  relays: /ip4/10.0.0.1/tcp/1\n", r"p2p\.relays: .*list"),
        ("p2p:\n  relay_service: 1\n", r"p2p\.relay_service: .*boolean"),
        ("p2p:\n  hole_punching: yes please\n", r"p2p\.hole_punching: .*boolean"),
        ("p2p:\n  relay_max_reservations: 0\n", r"p2p\.relay_max_reservations: .*greater"),
        ("p2p:\n  relay_max_circuit_bytes: 10\n", r"p2p\.relay_max_circuit_bytes: .*greater"),
        ("p2p:\n  relay_reservation_ttl: 2s\n", r"p2p: .*relay_reservation_ttl must be at least"),
        ("p2p:\n  relay_max_circuit_duration: soon\n", r"relay_max_circuit_duration: .*duration"),
        ("p2p:\n  announce_addrs: [/ip4/1.2.3.4/udp/1]\n", r"p2p\.announce_addrs\[0\]: .*tcp"),
        ("p2p:\n  announce_addrs: [nonsense]\n", r"p2p\.announce_addrs\[0\]: .*not an address"),
        (
            "p2p:\n  enabled: false\n  relays: [" + RELAY + "]\n",
            r"p2p: .*relays needs enabled: true",
        ),
    ],
)
def test_nat_traversal_keys_are_checked_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})


def test_nat_traversal_keys_load_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "p2p:\n  relays: [" + RELAY + "]\n  relay_service: true\n  hole_punching: true\n"
        "  relay_reservation_ttl: 2m\n"
    )
    config = load_config(
        path, environ={"PRAXIS_P2P__ANNOUNCE_ADDRS": '["/dns4/node.example/tcp/4001"]'}
    )
    assert config.p2p.relays == [RELAY]
    assert config.p2p.relay_service
    assert config.p2p.hole_punching  # accepted (was refused until DCUtR was made safe)
    assert config.p2p.relay_reservation_ttl == 120.0
    assert config.p2p.announce_addrs == ["/dns4/node.example/tcp/4001"]
    defaults = load_config(None, environ={}).p2p
    assert (defaults.relays, defaults.relay_service, defaults.hole_punching) == ([], False, False)
    assert defaults.announce_addrs == []
