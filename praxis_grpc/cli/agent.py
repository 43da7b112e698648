"""``praxis agent``, and ``--via``/``--agent``: reach one agent through any member.

An agent behind NAT has no gRPC endpoint a client can dial; every member
reaches it over the peer protocol. ``--via ADDR`` names the member to talk
to (instead of ``--target``) and ``--agent ID`` the agent meant (an agent id,
or a name the member's cards give exactly one agent): its description
(``GetAgent`` with ``agent_id``) or, with ``praxis submit``, the only agent
the task may run on (``target_agent``).
"""

from __future__ import annotations

import argparse
from typing import Any

from praxis_grpc.cli._errors import UsageError
from praxis_grpc.cli.output import enum_name, message_dict, print_json
from praxis_grpc.cli.status_view import reachability

__all__ = ["add_agent_command", "add_via_flag", "agent_ids", "entry_of"]


def add_agent_command(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    """Add ``agent``."""
    agent = sub.add_parser(
        "agent",
        help="describe a node, or with --agent any member's agent (through --via)",
        parents=flags,
    )
    agent.add_argument(
        "--agent", metavar="ID", help="agent id or name to describe (default: the node itself)"
    )
    add_via_flag(agent)
    agent.set_defaults(handler=_cmd_agent)


def add_via_flag(parser: argparse.ArgumentParser) -> None:
    """``--via ADDR``: talk to that member instead of ``--target`` (needs ``--agent``)."""
    parser.add_argument(
        "--via",
        default="",
        metavar="ADDR",
        help="member to go through, host:port (instead of --target); needs --agent",
    )


def entry_of(args: argparse.Namespace, agents: list[str]) -> str:
    """The node to connect to: ``--via`` if given, else ``--target``.

    Raises:
        UsageError: ``--via`` without an agent to reach through it, or an
            empty ``--agent``.
    """
    if any(not agent for agent in agents):
        raise UsageError("--agent must name an agent id (see 'praxis cards')")
    if args.via and not agents:
        raise UsageError("--via needs --agent: the agent to reach through that member")
    if args.via and ":" not in args.via:
        raise UsageError(f"--via {args.via!r} is not host:port")
    target: str = args.via or args.target
    return target


def agent_ids(client: Any, agents: list[str]) -> list[str]:
    """``--agent`` values as agent ids: an id is kept, a name the cards at
    ``client``'s node give exactly one agent becomes its id, anything else
    is kept (the node answers NOT_FOUND naming the field).

    Raises:
        UsageError: a name more than one agent has.
    """
    cards = client.list_cards() if agents else []
    known = {card.agent_id for card in cards}
    resolved = []
    for agent in agents:
        named = sorted(card.agent_id for card in cards if card.name == agent)
        if agent in known or not named:
            resolved.append(agent)
        elif len(named) == 1:
            resolved.append(named[0])
        else:
            raise UsageError(
                f"--agent {agent!r} names {len(named)} agents: give an id ({', '.join(named)})"
            )
    return resolved


def _cmd_agent(args: argparse.Namespace) -> int:
    from praxis_grpc.cli.connect import credentials_from
    from praxis_grpc.client import PraxisClient

    agents = [] if args.agent is None else [args.agent]
    entry = entry_of(args, agents)
    args.target = entry  # errors name the node talked to
    with PraxisClient(entry, credentials=credentials_from(args)) as client:
        agent = client.get_agent("".join(agent_ids(client, agents)))
    if args.json:
        print_json(message_dict(agent))
        return 0
    role = enum_name(agent, "role", "AGENT_ROLE_")
    reach = reachability(agent)
    load = agent.load
    print(f"{agent.name}  {agent.agent_id}  {role}  reachability={reach}")
    print(
        f"running {load.in_flight}/{load.capacity}  queued {load.queued}/{load.queue_limit}"
        + ("  draining" if agent.draining else "")
    )
    for endpoint in agent.endpoints:
        print(f"{enum_name(endpoint, 'transport', 'TRANSPORT_')}  {endpoint.address}")
    return 0
