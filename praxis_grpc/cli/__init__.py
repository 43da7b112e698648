"""The ``praxis`` command line.

Exit codes: 0 success, 1 the node answered with an error (or a task ended
unsuccessfully with ``--wait``; ``praxis node``: the node failed and stopped,
so a supervisor should restart it), 2 bad usage or configuration, 130
interrupted.

The global flags (``--target``, ``--json``, and ``--cacert``, ``--cert``,
``--key``, ``--token`` for a node with ``api.tls`` / ``api.auth``) go before or after the
subcommand: ``praxis --json up`` and ``praxis up --json`` are the same.
``--via ADDR --agent ID`` (``agent``, ``status``, ``submit``) reaches an
agent through any member, e.g. one behind NAT.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from praxis_grpc.cli._errors import UsageError
from praxis_grpc.cli.agent import add_agent_command
from praxis_grpc.cli.certs import add_certs_commands
from praxis_grpc.cli.connect import add_credential_flags
from praxis_grpc.cli.run import add_run_commands, serve_node
from praxis_grpc.cli.status import add_status_command
from praxis_grpc.cli.tasks import add_task_commands
from praxis_grpc.cli.tokens import add_tokens_commands

__all__ = ["DEFAULT_TARGET", "UsageError", "build_parser", "main", "serve_node"]

DEFAULT_TARGET = "127.0.0.1:50051"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``praxis``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"praxis: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        import grpc

        if isinstance(exc, grpc.RpcError):
            from praxis_grpc.client import describe_rpc_error

            print(f"praxis: {describe_rpc_error(exc, args.target)}", file=sys.stderr)
            return 1
        raise


def global_flags(with_defaults: bool) -> argparse.ArgumentParser:
    """The flags every subcommand accepts.

    The top-level parser sets their defaults; a subcommand's copy has none
    (``SUPPRESS``), so a flag given before the subcommand is not reset by it.
    """
    parser = argparse.ArgumentParser(add_help=False)
    target = os.environ.get("PRAXIS_TARGET", DEFAULT_TARGET)
    parser.add_argument(
        "-t",
        "--target",
        default=target if with_defaults else argparse.SUPPRESS,
        help=f"node to talk to, host:port (env PRAXIS_TARGET; default {target})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if with_defaults else argparse.SUPPRESS,
        help="print JSON (snake_case, as grpcurl prints) instead of text",
    )
    add_credential_flags(parser, with_defaults)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="praxis", description="praxis-grpc agent mesh", parents=[global_flags(True)]
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    flags = [global_flags(False)]
    add_run_commands(sub, flags)
    add_task_commands(sub, flags)
    add_status_command(sub, flags)
    add_agent_command(sub, flags)
    add_certs_commands(sub, flags)
    add_tokens_commands(sub, flags)
    return parser
