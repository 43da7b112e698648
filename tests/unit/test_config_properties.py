"""Property-based: no file or environment makes config loading fail except with ConfigError.

Loading returns a valid :class:`Config` or raises :class:`ConfigError` (which ``praxis
node`` turns into exit 2); each line of the message starts with the file or the
environment variable, and a problem caused by changing one key names that key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from praxis_grpc.config import ConfigError, load_config
from praxis_grpc.config._errors import MAX_PROBLEMS, key_path

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))
SHIPPED = [yaml.safe_load(path.read_text()) for path in CONFIGS]
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEYS = ["api", "port", "host", "p2p", "tasks", "ha", "bootstrap_nodes", "data_dir", "tags"]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("property") / "c.yaml"


def load(path: Path, data: bytes, environ: dict[str, str] | None = None) -> str | None:
    """Load ``data`` from ``path``; None if valid, else the ConfigError message (checked)."""
    path.write_bytes(data)
    try:
        load_config(path, environ=environ or {})
    except ConfigError as exc:
        message = str(exc)
        lines = message.splitlines()
        assert lines
        sources = (f"{path}: ", "environment PRAXIS_")
        assert all(line.startswith(sources) for line in lines), message
        assert len(lines) <= MAX_PROBLEMS + 1
        assert all(len(line) < 1000 for line in lines), message
        return message
    return None


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["10s", "500ms", "2m", "1h", "127.0.0.1", "::1", "/p2p/x", "true", "1e14"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=4
        ),
    ),
    max_leaves=20,
)
YAML_ALPHABET = [*"[]{}:,-&*!|>'\"#?%@`\n\t ab01.~<=\\", "\x00", "\ufeff", "é", "\x85"]


@PROPERTY
@given(data=st.binary(max_size=400))
def test_any_bytes(config_file: Path, data: bytes) -> None:
    load(config_file, data)


@PROPERTY
@given(text=st.text(alphabet=st.sampled_from(YAML_ALPHABET), max_size=200))
def test_any_yaml_like_text(config_file: Path, text: str) -> None:
    load(config_file, text.encode("utf-8", "surrogatepass"))


@PROPERTY
@given(document=values)
def test_any_yaml_document(config_file: Path, document: Any) -> None:
    load(config_file, yaml.safe_dump(document).encode())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield (*prefix, index)
            yield from _paths(child, (*prefix, index))


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _names_changed_key(config_file: Path, path: tuple[Any, ...], message: str) -> None:
    """Each line of ``message`` names the key at ``path`` or one above it; a check across
    sections (reported at ``<root>``) names in its text a key on or under that path."""
    named = [f"{config_file}: {key_path(path[:n])}" for n in range(1, len(path) + 1)]
    changed = key_path(path)
    for line in message.splitlines():
        if not line.startswith(f"{config_file}: ") or line.startswith(f"{config_file}: ..."):
            continue
        if line.startswith(f"{config_file}: <root>: "):
            mentioned = re.findall(r"[a-z_]+(?:\.[a-z_]+)+", line)
            assert any(
                key == changed or key.startswith(f"{changed}.") or changed.startswith(f"{key}.")
                for key in mentioned
            ), (path, message)
        else:
            assert line.startswith(tuple(named)), (path, message)


@PROPERTY
@given(data=st.data(), base=st.sampled_from(SHIPPED), value=values)
def test_one_changed_key_is_named(
    config_file: Path, data: st.DataObject, base: dict[str, Any], value: Any
) -> None:
    document = yaml.safe_load(yaml.safe_dump(base))
    path = data.draw(st.sampled_from(list(_paths(document))))
    _replace(document, path, value)
    message = load(config_file, yaml.safe_dump(document).encode())
    if message is not None:
        _names_changed_key(config_file, path, message)


def test_a_change_breaking_a_check_across_sections_is_named_in_its_text(
    config_file: Path,
) -> None:
    # Found by the property above: emptying ``api`` of the secure config drops the
    # tokens file that metrics.require_token needs.
    secure = Path(__file__).parents[2] / "configs" / "secure" / "node.yaml"
    document = yaml.safe_load(secure.read_text())
    document["api"] = {}
    message = load(config_file, yaml.safe_dump(document).encode())
    assert message is not None
    assert "<root>: metrics.require_token" in message
    _names_changed_key(config_file, ("api",), message)


ENV_KEYS = [
    "API__PORT",
    "API__HOST",
    "API__MAX_MESSAGE_BYTES",
    "AGENT__NAME",
    "AGENT__TAGS",
    "P2P__ENABLED",
    "P2P__BOOTSTRAP_NODES",
    "TASKS__DEFAULT_TIMEOUT",
    "TASKS__STORE",
    "CARDS__TTL",
    "HA__CONSENSUS__RAFT__PEERS",
    "NOPE__X",
]


@PROPERTY
@given(
    overrides=st.dictionaries(
        st.sampled_from(ENV_KEYS),
        st.one_of(st.text(max_size=40), values.map(json.dumps)),
        max_size=3,
    )
)
def test_any_environment_override(config_file: Path, overrides: dict[str, str]) -> None:
    environ = {f"PRAXIS_{name}": value.replace("\x00", "") for name, value in overrides.items()}
    message = load(config_file, b"", environ)
    if message is not None:
        for line in message.splitlines():
            if "... and" not in line:
                assert line.startswith(tuple(f"environment {name}" for name in environ)), message


TEXTS = [path.read_bytes() for path in CONFIGS]


@PROPERTY
@given(
    base=st.sampled_from(TEXTS),
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.integers(0, 8), st.binary(max_size=8)), max_size=4
    ),
)
def test_shipped_files_with_bytes_cut_and_inserted(
    config_file: Path, base: bytes, edits: list[tuple[float, int, bytes]]
) -> None:
    data = base
    for where, cut, insert in edits:
        at = int(where * len(data))
        data = data[:at] + insert + data[at + cut :]
    load(config_file, data)
