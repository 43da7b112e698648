"""Helpers for running nodes in containers (Dockerfile, docker-compose.yml,
deploy/k8s): a health probe and the bootstrap address of a seed node.

    python -m praxis_grpc.container health [HOST:PORT]
        exit 0 when the node's gRPC health is SERVING, 1 otherwise (the
        Docker HEALTHCHECK; Kubernetes probes gRPC health natively).
    python -m praxis_grpc.container join SEED_HOST:GRPC_PORT P2P_PORT COMMAND...
        wait (up to --wait seconds) until the seed answers, then run COMMAND
        (in place of this process) with
        ``PRAXIS_P2P__BOOTSTRAP_NODES=["/ip4/<seed ip>/tcp/<P2P_PORT>/p2p/<id>"]``;
        on the seed's own host, COMMAND runs as it is.

Containers cannot know a seed's libp2p peer id in advance (it is the
seed's own key), so an init step asks the seed for it over gRPC.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import grpc

from praxis_grpc.client import PraxisClient


def health(target: str, timeout: float = 3.0) -> bool:
    """True when ``target`` reports SERVING; False when not, or unreachable."""
    try:
        with PraxisClient(target, timeout=timeout) as client:
            return client.health_status() == "SERVING"
    except grpc.RpcError:
        return False


def bootstrap_nodes(seed: str, p2p_port: int, wait: float = 120.0) -> list[str]:
    """The ``p2p.bootstrap_nodes`` of a node joining ``seed`` (``host:grpc_port``,
    its libp2p port ``p2p_port``); empty when this host is the seed.

    Raises:
        TimeoutError: the seed did not answer within ``wait`` seconds.
    """
    host = seed.rsplit(":", 1)[0]
    if host.split(".", 1)[0] == socket.gethostname().split(".", 1)[0]:
        return []
    address = socket.gethostbyname(host)
    deadline = time.monotonic() + wait
    while True:
        try:
            with PraxisClient(seed, timeout=5) as client:
                agent_id = client.get_agent().agent_id
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the seed {seed} did not answer within {wait:g}s") from None
            time.sleep(1)
    return [f"/ip4/{address}/tcp/{p2p_port}/p2p/{agent_id}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m praxis_grpc.container")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("health", help="exit 0 when the node is SERVING")
    probe.add_argument("target", nargs="?", default="127.0.0.1:50051")
    join = commands.add_parser("join", help="run COMMAND bootstrapping from a seed node")
    join.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the seed")
    join.add_argument("seed", help="the seed's host:grpc_port")
    join.add_argument("p2p_port", type=int, help="the seed's libp2p port")
    join.add_argument("run", nargs=argparse.REMAINDER, metavar="COMMAND")
    args = parser.parse_args(argv)
    if args.command == "health":
        return 0 if health(args.target) else 1
    if not args.run:
        parser.error("join needs a COMMAND")
    try:
        nodes = bootstrap_nodes(args.seed, args.p2p_port, args.wait)
    except (OSError, TimeoutError) as exc:
        print(f"join: {exc}", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if nodes:
        env["PRAXIS_P2P__BOOTSTRAP_NODES"] = json.dumps(nodes)
    try:
        os.execvpe(args.run[0], args.run, env)  # noqa: S606 (the container's command)
    except OSError as exc:
        print(f"join: cannot run {args.run[0]}: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
