"""How the CLI reaches a node: the global TLS and token flags as client credentials."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from praxis_grpc.cli._errors import UsageError
from praxis_grpc.credentials import ClientCredentials

__all__ = ["add_credential_flags", "credentials_from"]


def add_credential_flags(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    """``--cacert``, ``--cert``, ``--key``, ``--token`` (see :func:`global_flags`)."""

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument(
        "--cacert",
        type=Path,
        default=default(_env_path("PRAXIS_CACERT")),
        help="PEM CA of the node's certificate: talk TLS (env PRAXIS_CACERT)",
    )
    parser.add_argument(
        "--cert", type=Path, default=default(None), help="PEM client certificate (mutual TLS)"
    )
    parser.add_argument("--key", type=Path, default=default(None), help="PEM key of --cert")
    parser.add_argument(
        "--token",
        default=default(os.environ.get("PRAXIS_TOKEN", "")),
        help="bearer token for api.auth (prefer env PRAXIS_TOKEN: a flag shows in ps)",
    )


def credentials_from(args: argparse.Namespace) -> ClientCredentials:
    """The credentials the flags name.

    Raises:
        UsageError: ``--cert`` without ``--key`` or the reverse.
    """
    try:
        return ClientCredentials(
            cacert=getattr(args, "cacert", None),
            cert=getattr(args, "cert", None),
            key=getattr(args, "key", None),
            token=getattr(args, "token", ""),
        )
    except ValueError:
        raise UsageError("--cert and --key go together") from None


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None
