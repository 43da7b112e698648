"""What ``praxis status`` shows: a view of the mesh and how it is drawn.

Pure: :class:`MeshView` is filled by the poller in ``status.py`` from
``GetAgent``, health, ``WatchCards``/``ListCards``, ``ListTasks`` and
``WatchTask``; :func:`render` draws it with rich and :func:`view_document`
gives the ``--json`` form. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from praxis_grpc._gen.praxis.v1 import agent_service_pb2, types_pb2
from praxis_grpc.cli.output import enum_name, message_dict, short_id, task_state

_TERMINAL = frozenset(
    {
        types_pb2.TASK_STATE_COMPLETED,
        types_pb2.TASK_STATE_FAILED,
        types_pb2.TASK_STATE_CANCELED,
        types_pb2.TASK_STATE_REJECTED,
    }
)
_STATE_STYLE = {
    "COMPLETED": "green",
    "FAILED": "red",
    "REJECTED": "red",
    "CANCELED": "yellow",
    "WORKING": "cyan",
    "SUBMITTED": "blue",
}


def is_terminal(task: types_pb2.Task) -> bool:
    """Whether ``task`` can change no more."""
    return task.state in _TERMINAL


@dataclass
class NodeView:
    """One node the user named: its answer to GetAgent and health, or the error."""

    target: str
    agent: agent_service_pb2.Agent | None = None
    health: str = ""
    error: str = ""
    agent_id: str = ""
    """The agent shown, as ``target`` describes it; empty for ``target`` itself."""

    @property
    def address(self) -> str:
        """Where the node was asked: ``target``, or ``via target`` for another agent."""
        return f"via {self.target}" if self.agent_id else self.target


@dataclass
class MeshView:
    """Everything the status view shows, as last seen."""

    nodes: list[NodeView]
    cards: dict[str, types_pb2.AgentCard] = field(default_factory=dict)
    tasks: list[types_pb2.Task] = field(default_factory=list)
    failures: list[types_pb2.Task] = field(default_factory=list)
    refreshed: datetime | None = None

    def track(self, task: types_pb2.Task) -> None:
        """A newer state of a listed task (from WatchTask)."""
        for listing in (self.tasks, self.failures):
            for index, known in enumerate(listing):
                if known.task_id == task.task_id:
                    listing[index] = task

    def name_of(self, agent_id: str) -> str:
        """The card name of ``agent_id`` (its short id when no card is known)."""
        card = self.cards.get(agent_id)
        return card.name if card is not None else short_id(agent_id)

    def leader(self) -> str:
        """The coordinator as the first reachable node sees it, or why there is none."""
        for node in self.nodes:
            if node.agent is None:
                continue
            agent = node.agent
            if agent.ha_mode != types_pb2.HA_MODE_ACTIVE_PASSIVE:
                return "none (active-active: every node routes)"
            if not agent.leader_agent_id:
                return f"none elected (term {agent.term})"
            return f"{self.name_of(agent.leader_agent_id)} (term {agent.term})"
        return "unknown (no node answered)"


def render(view: MeshView, interval: float | None = None) -> Any:
    """The view as a rich renderable (``interval``: the watch's refresh period)."""
    from rich.console import Group
    from rich.text import Text

    stamp = view.refreshed.astimezone().strftime("%H:%M:%S") if view.refreshed else "-"
    title = f"praxis status · leader {view.leader()} · {stamp}"
    if interval is not None:
        title += f" · every {interval:g}s · Ctrl-C quits"
    return Group(
        Text(title, style="bold"),
        _nodes_table(view),
        *_node_details(view),
        _members_table(view),
        _tasks_table("recent tasks", view, view.tasks),
        _tasks_table("recent failures", view, view.failures),
    )


def _table(title: str, *columns: str) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, expand=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def _nodes_table(view: MeshView) -> Any:
    table = _table(
        "nodes", "NODE", "ADDRESS", "HEALTH", "ROLE", "REACH", "TERM", "RUNNING", "QUEUED"
    )
    for node in view.nodes:
        if node.agent is None:
            table.add_row("?", node.address, f"[red]{node.error or 'no answer yet'}[/]")
            continue
        agent = node.agent
        health = node.health + (" (draining)" if agent.draining else "")
        table.add_row(
            agent.name,
            node.address,
            f"[green]{health}[/]" if node.health == "SERVING" else f"[red]{health}[/]",
            enum_name(agent, "role", "AGENT_ROLE_"),
            reachability(agent),
            str(agent.term),
            f"{agent.load.in_flight}/{agent.load.capacity}",
            f"{agent.load.queued}/{agent.load.queue_limit}",
        )
    return table


def _node_details(view: MeshView) -> list[Any]:
    from rich.text import Text

    lines = []
    for node in view.nodes:
        if node.agent is None:
            continue
        agent = node.agent
        ha = enum_name(agent, "ha_mode", "HA_MODE_")
        backend = enum_name(agent, "consensus_backend", "CONSENSUS_BACKEND_")
        lines.append(
            Text(
                f"  {agent.name}: agent {agent.agent_id} · version {agent.praxis_version} · "
                f"incarnation {agent.incarnation} · up {timedelta(seconds=agent.uptime.seconds)} · "
                f"{ha} ({backend})",
                overflow="fold",
            )
        )
    return lines


def _members_table(view: MeshView) -> Any:
    table = _table(
        f"members ({len(view.cards)})", "NAME", "AGENT", "ROLE", "REACH", "LOAD", "TOOLS"
    )
    for card in sorted(view.cards.values(), key=lambda c: c.name):
        load = card.load
        role = enum_name(card, "role", "AGENT_ROLE_")
        table.add_row(
            card.name + (" (draining)" if card.draining else ""),
            short_id(card.agent_id),
            role,
            reachability(card) + (" relay" if card.relay_service else ""),
            f"{load.in_flight}/{load.capacity} +{load.queued}",
            ",".join(tool.name for tool in card.tools),
        )
    return table


def reachability(message: agent_service_pb2.Agent | types_pb2.AgentCard) -> str:
    """Whether peers can dial the node: "public", "private" (behind NAT, reached
    through a relay) or "unknown" (not checked)."""
    name = enum_name(message, "reachability", "REACHABILITY_")
    return "unknown" if name == "unspecified" else name


def _tasks_table(title: str, view: MeshView, tasks: list[types_pb2.Task]) -> Any:
    table = _table(title, "TASK ID", "STATE", "TOOL", "OWNER", "UPDATED", "DETAIL")
    if not tasks:
        table.add_row("none", "", "", "", "", "")
    for task in tasks:
        state = task_state(task)
        detail = f"{task.error.reason}: {task.error.message}" if task.HasField("error") else ""
        updated = task.updated_at.ToDatetime(tzinfo=UTC).astimezone().strftime("%H:%M:%S")
        table.add_row(
            task.task_id,
            f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]",
            task.tool,
            view.name_of(task.owner_agent_id) if task.owner_agent_id else "-",
            updated,
            detail[:60],
        )
    return table


def view_document(view: MeshView) -> dict[str, Any]:
    """The ``praxis --json status`` document (snake_case, as grpcurl prints)."""
    nodes: list[dict[str, Any]] = []
    for node in view.nodes:
        entry: dict[str, Any] = {"target": node.target}
        if node.agent_id:
            entry["agent_id"] = node.agent_id
        if node.agent is not None:
            entry.update(health=node.health, agent=message_dict(node.agent))
        else:
            entry["error"] = node.error
        nodes.append(entry)
    return {
        "nodes": nodes,
        "leader": view.leader(),
        "members": [message_dict(c) for c in sorted(view.cards.values(), key=lambda c: c.name)],
        "tasks": [message_dict(t) for t in view.tasks],
        "failures": [message_dict(t) for t in view.failures],
    }
