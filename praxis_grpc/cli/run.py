"""``praxis node`` (one node in the foreground) and ``praxis up`` (a local mesh)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from praxis_grpc.cli._errors import UsageError
from praxis_grpc.cli.output import print_json, short_id
from praxis_grpc.cli.progress import StartProgress

if TYPE_CHECKING:
    import asyncio

    from praxis_grpc.launcher import LocalMesh
    from praxis_grpc.node import Node
    from praxis_grpc.secure_setup import SecureSetup


def add_run_commands(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    """Add ``node`` and ``up``."""
    node = sub.add_parser("node", help="run a node in the foreground", parents=flags)
    node.add_argument("--config", type=Path, help="YAML config file")
    node.add_argument("--ready-file", type=Path, help="write endpoints as JSON here once serving")
    node.add_argument("--log-level", default=os.environ.get("PRAXIS_LOG_LEVEL", "INFO"))
    node.set_defaults(handler=_cmd_node)

    up = sub.add_parser(
        "up",
        help="start a local mesh of node processes",
        parents=flags,
        description=(
            "Start a local mesh. Without --config the nodes take the roles of configs/ in "
            "turn: orchestrator, agent1, agent2, worker_analytics, worker_filesystem."
        ),
    )
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument(
        "--config", type=Path, help="base config every node starts from (instead of the roles)"
    )
    up.add_argument(
        "--tools-dir",
        type=Path,
        help="contract tools directory (default: the tools/ shipped with praxis)",
    )
    up.add_argument("--dir", type=Path, default=Path(".praxis/up"), help="state directory")
    up.add_argument(
        "--mode",
        choices=["active-active", "active-passive"],
        default="active-active",
        help="HA topology (default active-active)",
    )
    up.add_argument(
        "--backend",
        choices=["raft", "etcd"],
        help="consensus of active-passive (default raft); etcd starts a local 3-member etcd",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS and tokens on every API, a cluster CA for the mesh (files in DIR/secure)",
    )
    up.set_defaults(handler=_cmd_up)


def _cmd_node(args: argparse.Namespace) -> int:
    import asyncio

    from praxis_grpc.config import ConfigError, load_config

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"praxis: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    # Only a valid config pays for the node's modules (most of the start-up).
    from praxis_grpc.heap import limit_heap_retention
    from praxis_grpc.launcher import write_ready_file
    from praxis_grpc.node import Node, StartupError

    limit_heap_retention()

    async def run() -> int:
        node = Node(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await node.start()
        except StartupError as exc:
            print(f"praxis: cannot start node: {exc}", file=sys.stderr)
            await node.aclose(grace=0)
            return 2
        if args.ready_file:
            write_ready_file(
                args.ready_file,
                {
                    "name": config.agent.name,
                    "agent_id": node.agent_id,
                    "pid": os.getpid(),
                    "grpc": node.endpoints.grpc,
                    "metrics": node.endpoints.metrics,
                    "p2p": node.p2p_addrs,
                },
            )
        return await serve_node(node, stop)

    return asyncio.run(run())


async def serve_node(node: Node, stop: asyncio.Event) -> int:
    """Serve with a started ``node`` until ``stop`` is set (0) or the node
    fails (1: it no longer follows the leadership, say; a supervisor restarts
    it); then drain and close it. Returns the exit code."""
    import asyncio

    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(node.wait_failed())
    try:
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        failed.cancel()
    if node.failure:
        print(f"praxis: the node failed: {node.failure}; stopping", file=sys.stderr)
        await node.aclose()
        return 1
    logging.getLogger("praxis").info("shutting down: draining")
    await node.aclose()
    return 0


def _up_settings(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    """Validate ``praxis up`` arguments; return the base config and the backend."""
    from praxis_grpc.config import ConfigError, read_mapping, validate_config

    if args.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    if args.backend and args.mode != "active-passive":
        raise UsageError("--backend needs --mode active-passive")
    if args.mode == "active-passive" and args.nodes < 3:
        raise UsageError("--mode active-passive needs --nodes 3 or more (a quorum of 2 of 3)")
    if args.tools_dir is not None and not args.tools_dir.is_dir():
        raise UsageError(f"--tools-dir: {args.tools_dir} is not a directory")
    base: dict[str, Any] | None = None
    if args.config:
        source = str(args.config)
        try:
            # Each node gets its own ports, data_dir and ha (from --mode); the rest
            # must be valid.
            base = {k: v for k, v in read_mapping(args.config, source).items() if k != "ha"}
            validate_config(base, source)
        except ConfigError as exc:
            raise UsageError(f"--config: invalid configuration:\n{exc}") from None
        if args.tools_dir is not None:
            base.setdefault("tools", {})["contracts_dir"] = str(args.tools_dir.resolve())
    return base, args.backend or ("raft" if args.mode == "active-passive" else "none")


def _mesh(args: argparse.Namespace, progress: StartProgress) -> LocalMesh:
    from praxis_grpc.launcher import LocalMesh
    from praxis_grpc.shipped import TOOLS_DIR, RolesUnavailable, roles

    base, backend = _up_settings(args)
    chosen = []
    if base is None:
        try:
            chosen = roles(args.nodes, tools_dir=args.tools_dir or TOOLS_DIR)
        except RolesUnavailable as exc:
            raise UsageError(str(exc)) from None
    return LocalMesh(
        args.dir,
        args.nodes,
        base,
        mode=args.mode,
        backend=backend,
        node_roles=chosen,
        progress=progress.update,
        security=_security(args),
    )


def _security(args: argparse.Namespace) -> SecureSetup | None:
    """The CA, certificates and tokens of ``praxis up --secure`` (made if absent)."""
    if not args.secure:
        return None
    from praxis_grpc.api.tokens import TokenFileError
    from praxis_grpc.certs import CertError
    from praxis_grpc.secure_setup import SecureSetup

    setup = SecureSetup(args.dir / "secure")
    try:
        setup.prepare()
    except (OSError, CertError, TokenFileError) as exc:
        raise UsageError(f"--secure: {exc}") from None
    return setup


def _cmd_up(args: argparse.Namespace) -> int:
    import time

    from praxis_grpc.launcher import LaunchError

    progress = StartProgress(live=sys.stderr.isatty() and not args.json)
    mesh = _mesh(args, progress)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        with progress:
            mesh.start()
    except LaunchError as exc:
        print(f"praxis: {exc}", file=sys.stderr)
        return 1
    document = mesh.describe()
    if args.json:
        print_json(document)
    else:
        _print_nodes(document)
        if "tokens" in document:
            print(
                f"TLS: --cacert {document['ca_cert']}; tokens (admin, client, reader) in "
                f"{document['tokens']}"
            )
        print(f"mesh ready: {len(mesh.nodes)} node(s); Ctrl-C stops them", flush=True)
    exited: set[str] = set()
    while not stopping:
        for node in mesh.nodes:
            code = node.process.poll()
            if code is not None and node.name not in exited:
                exited.add(node.name)
                print(f"{node.name} exited with code {code}; log: {node.log_path}", file=sys.stderr)
        if len(exited) == len(mesh.nodes):
            return 1
        time.sleep(0.2)
    codes = mesh.stop()
    return 0 if all(code == 0 for name, code in codes.items() if name not in exited) else 1


def _print_nodes(document: dict[str, Any]) -> None:
    rows = [
        (
            node["name"],
            node["grpc"],
            node["metrics"] or "-",
            node["role"] or "?",
            str(node["pid"]),
            short_id(node["agent_id"]),
            ",".join(node["tools"]),
        )
        for node in document["nodes"]
    ]
    header = ("NAME", "GRPC", "METRICS", "ROLE", "PID", "AGENT", "TOOLS")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
