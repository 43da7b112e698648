"""The ``praxis`` command line.

Exit codes: 0 success, 1 the node answered with an error (or a task ended
unsuccessfully with ``--wait``; ``praxis node``: the node failed and stopped,
so a supervisor should restart it), 2 bad usage or configuration, 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from praxis_grpc._gen.praxis.v1 import agent_service_pb2
    from praxis_grpc.node import Node

DEFAULT_TARGET = "127.0.0.1:50051"


class UsageError(Exception):
    """Bad command-line input; exit 2."""


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="praxis", description="praxis-grpc agent mesh")
    parser.add_argument(
        "-t",
        "--target",
        default=os.environ.get("PRAXIS_TARGET", DEFAULT_TARGET),
        help="node to talk to, host:port (env PRAXIS_TARGET; default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(metavar="COMMAND")

    node = sub.add_parser("node", help="run a node in the foreground")
    node.add_argument("--config", type=Path, help="YAML config file")
    node.add_argument("--ready-file", type=Path, help="write endpoints as JSON here once serving")
    node.add_argument("--log-level", default=os.environ.get("PRAXIS_LOG_LEVEL", "INFO"))
    node.set_defaults(handler=_cmd_node)

    up = sub.add_parser("up", help="start a local mesh of node processes")
    up.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    up.add_argument("--config", type=Path, help="base config every node starts from")
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
    up.set_defaults(handler=_cmd_up)

    submit = sub.add_parser("submit", help="submit a task")
    submit.add_argument("tool")
    submit.add_argument("--args", default="{}", help="arguments as a JSON object")
    mode = submit.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="block until the task is terminal")
    mode.add_argument("--watch", action="store_true", help="print every state change")
    submit.add_argument("--timeout", type=float, help="execution timeout in seconds")
    submit.add_argument("--idempotency-key", default="")
    submit.add_argument("--tag", action="append", default=[], help="required agent tag")
    submit.add_argument("--prefer", default="", help="preferred agent id")
    submit.set_defaults(handler=_cmd_submit)

    _add_task_commands(sub)

    cards = sub.add_parser("cards", help="list the agent cards a node knows")
    cards.add_argument("--tool", default="")
    cards.set_defaults(handler=_cmd_cards)

    peers = sub.add_parser(
        "peers", help="list mesh members (SWIM state) and the libp2p peers a node is connected to"
    )
    peers.set_defaults(handler=_cmd_peers)

    status = sub.add_parser("status", help="show a node's identity, health and load")
    status.set_defaults(handler=_cmd_status)
    return parser


def _add_task_commands(sub: Any) -> None:
    task = sub.add_parser("task", help="inspect and control tasks")
    task_sub = task.add_subparsers(metavar="ACTION")
    for name, helptext in (("get", "show a task"), ("cancel", "cancel a task")):
        cmd = task_sub.add_parser(name, help=helptext)
        cmd.add_argument("task_id")
        cmd.set_defaults(handler=_cmd_task_get if name == "get" else _cmd_task_cancel)
    watch = task_sub.add_parser("watch", help="stream a task's states until terminal")
    watch.add_argument("task_id")
    watch.set_defaults(handler=_cmd_task_watch)
    listing = task_sub.add_parser("list", help="list tasks, newest first")
    listing.add_argument("--state", action="append", default=[], help="e.g. COMPLETED")
    listing.add_argument("--tool", default="")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--local", action="store_true", help=_LOCAL_HELP)
    listing.set_defaults(handler=_cmd_task_list)
    tasks_alias = sub.add_parser("tasks", help="same as 'task list'")
    tasks_alias.add_argument("--state", action="append", default=[])
    tasks_alias.add_argument("--tool", default="")
    tasks_alias.add_argument("--limit", type=int, default=20)
    tasks_alias.add_argument("--local", action="store_true", help=_LOCAL_HELP)
    tasks_alias.set_defaults(handler=_cmd_task_list)


_LOCAL_HELP = "only this node's own store (a standby otherwise lists the coordinator's queue)"


def _cmd_node(args: argparse.Namespace) -> int:
    import asyncio

    from praxis_grpc.config import ConfigError, load_config
    from praxis_grpc.heap import limit_heap_retention
    from praxis_grpc.launcher import write_ready_file
    from praxis_grpc.node import Node, StartupError

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"praxis: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
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
    return base, args.backend or ("raft" if args.mode == "active-passive" else "none")


def _cmd_up(args: argparse.Namespace) -> int:
    import time

    from praxis_grpc.launcher import LaunchError, LocalMesh

    base, backend = _up_settings(args)
    mesh = LocalMesh(args.dir, args.nodes, base, mode=args.mode, backend=backend)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        mesh.start()
    except LaunchError as exc:
        print(f"praxis: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(mesh.describe()), flush=True)
    else:
        roles = mesh.roles()
        for node in mesh.nodes:
            print(
                f"{node.name}  grpc={node.grpc}  metrics={node.metrics}  "
                f"agent={node.info.get('agent_id')}  pid={node.pid}  role={roles[node.name]}"
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


def _client(args: argparse.Namespace) -> Any:
    from praxis_grpc.client import PraxisClient

    return PraxisClient(args.target)


def _cmd_submit(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        raise UsageError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise UsageError('--args must be a JSON object, e.g. \'{"expression": "1+2"}\'')
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    with _client(args) as client:
        response = client.submit(
            args.tool,
            arguments,
            wait=args.wait,
            idempotency_key=args.idempotency_key,
            timeout=args.timeout,
            tags=args.tag,
            preferred_agent=args.prefer,
        )
        task = response.task
        if args.watch:
            for state in client.watch_task(task.task_id):
                _print_task(state, args.json)
                task = state
        else:
            _print_task(task, args.json)
    return _task_exit_code(task) if (args.wait or args.watch) else 0


def _cmd_task_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_task(client.get_task(args.task_id), args.json)
    return 0


def _cmd_task_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_task(client.cancel_task(args.task_id), args.json)
    return 0


def _cmd_task_watch(args: argparse.Namespace) -> int:
    task = None
    with _client(args) as client:
        for task in client.watch_task(args.task_id):
            _print_task(task, args.json)
    return _task_exit_code(task) if task is not None else 1


def _cmd_task_list(args: argparse.Namespace) -> int:
    from praxis_grpc._gen.praxis.v1 import types_pb2

    states = []
    for name in args.state:
        full = "TASK_STATE_" + name.upper().removeprefix("TASK_STATE_")
        if full not in types_pb2.TaskState.keys() or full == "TASK_STATE_UNSPECIFIED":  # noqa: SIM118
            valid = ", ".join(k.removeprefix("TASK_STATE_") for k in types_pb2.TaskState.keys()[1:])
            raise UsageError(f"--state {name!r} is not a task state ({valid})")
        states.append(types_pb2.TaskState.Value(full))
    if not 1 <= args.limit <= 1000:
        raise UsageError("--limit must be between 1 and 1000")
    with _client(args) as client:
        response = client.list_tasks(
            states=states, tool=args.tool, page_size=args.limit, local_only=args.local
        )
        names = {} if args.json else {c.agent_id: c.name for c in client.list_cards()}
    if args.json:
        print(json.dumps([_as_dict(t) for t in response.tasks]))
        return 0
    print(f"{'TASK ID':36}  {'STATE':10}  {'TOOL':16}  {'OWNER':18}  CREATED")
    for task in response.tasks:
        owner = names.get(task.owner_agent_id) or _short(task.owner_agent_id)
        print(
            f"{task.task_id:36}  {_state(task):10}  {task.tool:16}  "
            f"{owner:18}  {task.created_at.ToJsonString()}"
        )
    return 0


def _cmd_cards(args: argparse.Namespace) -> int:
    with _client(args) as client:
        cards = client.list_cards(tool=args.tool)
    if args.json:
        print(json.dumps([_as_dict(c) for c in cards]))
        return 0
    print(f"{'NAME':14}  {'AGENT':14}  {'ROLE':11}  {'LOAD':9}  {'ENDPOINT':21}  TOOLS")
    for card in cards:
        load = f"{card.load.in_flight}/{card.load.capacity}+{card.load.queued}"
        endpoint = card.endpoints[0].address if card.endpoints else "-"
        role = _enum_name(card.DESCRIPTOR.fields_by_name["role"], card.role, "AGENT_ROLE_")
        flag = " (draining)" if card.draining else ""
        tools = ",".join(t.name for t in card.tools)
        print(
            f"{card.name:14}  {_short(card.agent_id):14}  {role:11}  {load:9}  "
            f"{endpoint:21}  {tools}{flag}"
        )
    return 0


def _cmd_peers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        peers, members = client.list_peers_and_members()
    if args.json:
        print(json.dumps([_as_dict(p) for p in peers]))
        return 0
    _print_members(members)
    print(f"{'AGENT':54}  {'DIRECTION':9}  {'RTT ms':>7}  ADDRESS")
    for peer in peers:
        rtt = f"{peer.ping_rtt.ToNanoseconds() / 1e6:.2f}" if peer.HasField("ping_rtt") else "-"
        direction = _enum_name(
            peer.DESCRIPTOR.fields_by_name["direction"], peer.direction, "CONNECTION_DIRECTION_"
        )
        address = peer.addresses[0] if peer.addresses else "-"
        print(f"{peer.agent_id:54}  {direction:9}  {rtt:>7}  {address}")
    return 0


def _print_members(members: list[agent_service_pb2.Member]) -> None:
    """One line per mesh member: its SWIM state and how this node learnt it."""
    if not members:
        return
    print(f"{'MEMBER':54}  {'STATE':7}  {'INC':>4}  {'FOR s':>6}  LEARNT")
    for member in members:
        state = _enum_name(member.DESCRIPTOR.fields_by_name["state"], member.state, "MEMBER_STATE_")
        age = member.state_age.ToNanoseconds() / 1e9
        print(
            f"{member.agent_id:54}  {state:7}  {member.incarnation:>4}  {age:>6.1f}  "
            f"{member.learnt}"
        )
    print()


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        agent = client.get_agent()
        health = client.health_status()
        cards = client.list_cards()
    if args.json:
        print(json.dumps({"agent": _as_dict(agent), "health": health, "cards": len(cards)}))
        return 0
    role = _enum_name(agent.DESCRIPTOR.fields_by_name["role"], agent.role, "AGENT_ROLE_")
    print(f"agent      {agent.name} ({agent.agent_id})")
    print(f"version    {agent.praxis_version}  incarnation {agent.incarnation}")
    print(f"health     {health}{'  (draining)' if agent.draining else ''}")
    print(f"role       {role}  ha {_ha_mode(agent)}")
    print(
        f"load       {agent.load.in_flight}/{agent.load.capacity} running, "
        f"{agent.load.queued}/{agent.load.queue_limit} queued"
    )
    print(f"uptime     {agent.uptime.ToTimedelta()}")
    for endpoint in agent.endpoints:
        kind = _enum_name(
            endpoint.DESCRIPTOR.fields_by_name["transport"], endpoint.transport, "TRANSPORT_"
        )
        print(f"endpoint   {kind:7} {endpoint.address}")
    print(f"cards      {len(cards)} known")
    return 0


def _ha_mode(agent: Any) -> str:
    return _enum_name(agent.DESCRIPTOR.fields_by_name["ha_mode"], agent.ha_mode, "HA_MODE_")


def _enum_name(field: Any, value: int, prefix: str) -> str:
    name: str = field.enum_type.values_by_number[value].name
    return name.removeprefix(prefix).lower().replace("_", "-")


def _state(task: Any) -> str:
    return _enum_name(task.DESCRIPTOR.fields_by_name["state"], task.state, "TASK_STATE_").upper()


def _short(agent_id: str) -> str:
    return agent_id[:6] + "…" + agent_id[-6:] if len(agent_id) > 14 else agent_id


def _as_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


def _print_task(task: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_as_dict(task)), flush=True)
        return
    line = f"{task.task_id}  {_state(task)}  {task.tool}"
    if task.HasField("result"):
        line += f"  result={json.dumps(_as_dict(task.result))}"
    if task.HasField("error"):
        line += f"  error={task.error.reason}: {task.error.message}"
    print(line, flush=True)


def _task_exit_code(task: Any) -> int:
    return 0 if _state(task) == "COMPLETED" else 1
