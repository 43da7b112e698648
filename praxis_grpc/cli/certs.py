"""``praxis certs``: create the cluster CA and issue node and client certificates."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from praxis_grpc.cli._errors import UsageError
from praxis_grpc.cli.output import print_json


def add_certs_commands(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    """Add ``certs init`` and ``certs issue``."""
    certs = sub.add_parser("certs", help="create the cluster CA and issue certificates")
    certs_sub = certs.add_subparsers(metavar="ACTION")
    init = certs_sub.add_parser("init", help="create a CA (ca.crt, ca.key) in --dir", parents=flags)
    init.add_argument("--dir", type=Path, required=True, help="directory for ca.crt and ca.key")
    init.add_argument("--name", default="praxis cluster CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    init.set_defaults(handler=_cmd_init)
    issue = certs_sub.add_parser(
        "issue",
        help="issue NAME.crt and NAME.key signed by the CA in --dir",
        parents=flags,
    )
    issue.add_argument("name", help="certificate name (file name and common name)")
    issue.add_argument("--dir", type=Path, required=True, help="the CA's directory")
    issue.add_argument("--out", type=Path, help="where to write (default: --dir)")
    issue.add_argument(
        "--host",
        action="append",
        help="DNS name or IP clients dial (repeat; default localhost and 127.0.0.1)",
    )
    who = issue.add_mutually_exclusive_group()
    who.add_argument(
        "--peer-id",
        help="the node's libp2p peer id (node certificates: named in a URI SAN and in the "
        "DNS SAN members check when they dial it)",
    )
    who.add_argument(
        "--node-key",
        type=Path,
        help="the node's key file (<data_dir>/node.key; created if absent): its peer id is named",
    )
    issue.add_argument("--days", type=int, default=365, help="validity (default 365)")
    issue.set_defaults(handler=_cmd_issue)


def _cmd_init(args: argparse.Namespace) -> int:
    from praxis_grpc.certs import CertError, init_ca

    if args.days < 1:
        raise UsageError("--days must be at least 1")
    try:
        cert = init_ca(args.dir, args.name, args.days)
    except (CertError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    _report(args, {"ca_cert": str(cert), "ca_key": str(args.dir / "ca.key")})
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    from praxis_grpc.certs import DEFAULT_HOSTS, CertError, issue
    from praxis_grpc.identity import IdentityError, load_or_create_identity

    if args.days < 1:
        raise UsageError("--days must be at least 1")
    peer_id: str | None = args.peer_id
    try:
        if args.node_key is not None:
            peer_id = load_or_create_identity(args.node_key).agent_id
        issued = issue(
            args.dir,
            args.name,
            args.out or args.dir,
            hosts=args.host or DEFAULT_HOSTS,
            peer_id=peer_id,
            days=args.days,
        )
    except (CertError, IdentityError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    document = {"cert": str(issued.cert), "key": str(issued.key), "ca_cert": str(issued.ca_cert)}
    if peer_id is not None:
        document["peer_id"] = peer_id
    _report(args, document)
    return 0


def _report(args: argparse.Namespace, document: dict[str, str]) -> None:
    if args.json:
        print_json(document)
        return
    for key, value in document.items():
        print(f"{key}: {value}")
