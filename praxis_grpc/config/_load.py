"""Loading a node configuration: the file, then ``PRAXIS_*`` overrides, then validation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from praxis_grpc.config._env import apply_env_overrides
from praxis_grpc.config._errors import ConfigError, describe
from praxis_grpc.config._node import Config
from praxis_grpc.config._yaml import read_mapping


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
