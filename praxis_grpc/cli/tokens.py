"""``praxis tokens add``: create an API token (``api.auth.tokens_file``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from praxis_grpc.cli._errors import UsageError
from praxis_grpc.cli.output import print_json


def add_tokens_commands(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    """Add ``tokens add``."""
    tokens = sub.add_parser("tokens", help="create API tokens for api.auth")
    tokens_sub = tokens.add_subparsers(metavar="ACTION")
    add = tokens_sub.add_parser(
        "add",
        help="create a token, append its SHA-256 to --file, print the token once",
        parents=flags,
    )
    add.add_argument("name", help="who holds it: recorded as the submitter of its tasks")
    add.add_argument("--role", required=True, choices=("reader", "client", "admin"))
    add.add_argument(
        "--file", type=Path, required=True, help="the tokens file (created with mode 0600)"
    )
    add.set_defaults(handler=_cmd_add)


def _cmd_add(args: argparse.Namespace) -> int:
    from praxis_grpc.api.tokens import Role, TokenFileError, add_token

    try:
        token = add_token(args.file, args.name, Role.parse(args.role))
    except (TokenFileError, ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print_json({"name": args.name, "role": args.role, "token": token})
    else:
        print(token)
        print(
            f"token {args.name!r} ({args.role}) added to {args.file}; it is shown only now",
            file=sys.stderr,
        )
    return 0
