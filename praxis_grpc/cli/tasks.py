"""``praxis submit``, ``task ...``, ``tasks``, ``cards`` and ``peers``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from praxis_grpc.cli._errors import UsageError
from praxis_grpc.cli.agent import add_via_flag, agent_ids, entry_of
from praxis_grpc.cli.output import (
    enum_name,
    message_dict,
    print_json,
    print_task,
    short_id,
    task_state,
)

_LOCAL_HELP = "only this node's own store (a standby otherwise lists the coordinator's queue)"


def add_task_commands(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    """Add ``submit``, ``task``, ``tasks``, ``cards`` and ``peers``."""
    submit = sub.add_parser("submit", help="submit a task", parents=flags)
    submit.add_argument("tool")
    submit.add_argument("--args", default="{}", help="arguments as a JSON object")
    mode = submit.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="block until the task is terminal")
    mode.add_argument("--watch", action="store_true", help="print every state change")
    submit.add_argument("--timeout", type=float, help="execution timeout in seconds")
    submit.add_argument("--idempotency-key", default="")
    submit.add_argument("--tag", action="append", default=[], help="required agent tag")
    placement = submit.add_mutually_exclusive_group()
    placement.add_argument("--prefer", default="", help="preferred agent id")
    placement.add_argument(
        "--agent",
        metavar="ID",
        help="run only on this agent, id or name (target_agent; through --via if given)",
    )
    add_via_flag(submit)
    submit.set_defaults(handler=_cmd_submit)

    task = sub.add_parser("task", help="inspect and control tasks", parents=flags)
    task_sub = task.add_subparsers(metavar="ACTION")
    for name, helptext in (("get", "show a task"), ("cancel", "cancel a task")):
        cmd = task_sub.add_parser(name, help=helptext, parents=flags)
        cmd.add_argument("task_id")
        cmd.set_defaults(handler=_cmd_task_get if name == "get" else _cmd_task_cancel)
    watch = task_sub.add_parser(
        "watch", help="stream a task's states until terminal", parents=flags
    )
    watch.add_argument("task_id")
    watch.set_defaults(handler=_cmd_task_watch)
    listing = task_sub.add_parser("list", help="list tasks, newest first", parents=flags)
    _listing_arguments(listing)
    _listing_arguments(sub.add_parser("tasks", help="same as 'task list'", parents=flags))

    cards = sub.add_parser("cards", help="list the agent cards a node knows", parents=flags)
    cards.add_argument("--tool", default="")
    cards.set_defaults(handler=_cmd_cards)

    peers = sub.add_parser(
        "peers",
        help="list mesh members (SWIM state) and the libp2p peers a node is connected to",
        parents=flags,
    )
    peers.set_defaults(handler=_cmd_peers)


def _listing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", action="append", default=[], help="e.g. COMPLETED")
    parser.add_argument("--tool", default="")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--local", action="store_true", help=_LOCAL_HELP)
    parser.set_defaults(handler=_cmd_task_list)


def _client(args: argparse.Namespace) -> Any:
    from praxis_grpc.cli.connect import credentials_from
    from praxis_grpc.client import PraxisClient

    return PraxisClient(args.target, credentials=credentials_from(args))


def _cmd_submit(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        raise UsageError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise UsageError('--args must be a JSON object, e.g. \'{"expression": "1+2"}\'')
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    agents = [] if args.agent is None else [args.agent]
    args.target = entry_of(args, agents)
    with _client(args) as client:
        response = client.submit(
            args.tool,
            arguments,
            wait=args.wait,
            idempotency_key=args.idempotency_key,
            timeout=args.timeout,
            tags=args.tag,
            preferred_agent=args.prefer,
            target_agent="".join(agent_ids(client, agents)),
        )
        task = response.task
        if args.watch:
            for state in client.watch_task(task.task_id):
                print_task(state, args.json)
                task = state
        else:
            print_task(task, args.json)
    return _task_exit_code(task) if (args.wait or args.watch) else 0


def _cmd_task_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print_task(client.get_task(args.task_id), args.json)
    return 0


def _cmd_task_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print_task(client.cancel_task(args.task_id), args.json)
    return 0


def _cmd_task_watch(args: argparse.Namespace) -> int:
    task = None
    with _client(args) as client:
        for task in client.watch_task(args.task_id):
            print_task(task, args.json)
    return _task_exit_code(task) if task is not None else 1


def parse_states(names: list[str]) -> list[int]:
    """``--state`` values (``completed``, ``TASK_STATE_FAILED``) as enum numbers."""
    from praxis_grpc._gen.praxis.v1 import types_pb2

    states = []
    for name in names:
        full = "TASK_STATE_" + name.upper().removeprefix("TASK_STATE_")
        if full not in types_pb2.TaskState.keys() or full == "TASK_STATE_UNSPECIFIED":  # noqa: SIM118
            valid = ", ".join(k.removeprefix("TASK_STATE_") for k in types_pb2.TaskState.keys()[1:])
            raise UsageError(f"--state {name!r} is not a task state ({valid})")
        states.append(types_pb2.TaskState.Value(full))
    return states


def _cmd_task_list(args: argparse.Namespace) -> int:
    states = parse_states(args.state)
    if not 1 <= args.limit <= 1000:
        raise UsageError("--limit must be between 1 and 1000")
    with _client(args) as client:
        response = client.list_tasks(
            states=states, tool=args.tool, page_size=args.limit, local_only=args.local
        )
        names = {} if args.json else {c.agent_id: c.name for c in client.list_cards()}
    if args.json:
        print_json([message_dict(t) for t in response.tasks])
        return 0
    print(f"{'TASK ID':36}  {'STATE':10}  {'TOOL':16}  {'OWNER':18}  CREATED")
    for task in response.tasks:
        owner = names.get(task.owner_agent_id) or short_id(task.owner_agent_id)
        print(
            f"{task.task_id:36}  {task_state(task):10}  {task.tool:16}  "
            f"{owner:18}  {task.created_at.ToJsonString()}"
        )
    return 0


def _cmd_cards(args: argparse.Namespace) -> int:
    with _client(args) as client:
        cards = client.list_cards(tool=args.tool)
    if args.json:
        print_json([message_dict(c) for c in cards])
        return 0
    print(f"{'NAME':17}  {'AGENT':14}  {'ROLE':11}  {'LOAD':9}  {'ENDPOINT':21}  TOOLS")
    for card in cards:
        load = f"{card.load.in_flight}/{card.load.capacity}+{card.load.queued}"
        endpoint = card.endpoints[0].address if card.endpoints else "-"
        role = enum_name(card, "role", "AGENT_ROLE_")
        flag = " (draining)" if card.draining else ""
        tools = ",".join(t.name for t in card.tools)
        print(
            f"{card.name:17}  {short_id(card.agent_id):14}  {role:11}  {load:9}  "
            f"{endpoint:21}  {tools}{flag}"
        )
    return 0


def _cmd_peers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        peers, members = client.list_peers_and_members()
    if args.json:
        print_json([message_dict(p) for p in peers])
        return 0
    if members:
        print(f"{'MEMBER':54}  {'STATE':7}  {'INC':>4}  {'FOR s':>6}  LEARNT")
        for member in members:
            state = enum_name(member, "state", "MEMBER_STATE_")
            age = member.state_age.ToNanoseconds() / 1e9
            print(
                f"{member.agent_id:54}  {state:7}  {member.incarnation:>4}  {age:>6.1f}  "
                f"{member.learnt}"
            )
        print()
    print(f"{'AGENT':54}  {'DIRECTION':9}  {'RTT ms':>7}  ADDRESS")
    for peer in peers:
        rtt = f"{peer.ping_rtt.ToNanoseconds() / 1e6:.2f}" if peer.HasField("ping_rtt") else "-"
        direction = enum_name(peer, "direction", "CONNECTION_DIRECTION_")
        address = peer.addresses[0] if peer.addresses else "-"
        print(f"{peer.agent_id:54}  {direction:9}  {rtt:>7}  {address}")
    return 0


def _task_exit_code(task: Any) -> int:
    return 0 if task_state(task) == "COMPLETED" else 1
