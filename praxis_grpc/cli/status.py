"""``praxis status``: one snapshot of the node(s), the members, the leader and
recent tasks, or with ``--watch`` a live view of them until Ctrl-C.

The view is fed by ``GetAgent`` and health of every node named (with
``--agent ID``, ``GetAgent`` of that agent through ``--via`` or ``--target``:
its health is then what it reports, SERVING unless draining), a
``WatchCards`` stream (the members as the first node knows them),
``ListTasks`` (recent tasks and failures) and a ``WatchTask`` stream per
unfinished recent task. It is redrawn once per ``--interval``, never faster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praxis_grpc._gen.praxis.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    card_service_pb2,
    card_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    types_pb2,
)
from praxis_grpc.api.errors import ERROR_KEY
from praxis_grpc.cli._errors import UsageError
from praxis_grpc.cli.agent import add_via_flag, agent_ids, entry_of
from praxis_grpc.cli.connect import credentials_from
from praxis_grpc.cli.output import print_json
from praxis_grpc.cli.status_view import MeshView, NodeView, is_terminal, render, view_document
from praxis_grpc.credentials import ClientCredentials

MIN_INTERVAL = 0.2
#: At most this many WatchTask streams at once.
MAX_TASK_WATCHES = 8
_FAILED = [types_pb2.TASK_STATE_FAILED, types_pb2.TASK_STATE_REJECTED]


def add_status_command(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    """Add ``status``."""
    status = sub.add_parser(
        "status",
        help="show nodes, members, leader and recent tasks (--watch: live)",
        parents=flags,
    )
    status.add_argument(
        "nodes", nargs="*", metavar="TARGET", help="nodes to show, host:port (default --target)"
    )
    status.add_argument("-w", "--watch", action="store_true", help="live view until Ctrl-C")
    status.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help=f"seconds between redraws with --watch (default 1, at least {MIN_INTERVAL:g})",
    )
    status.add_argument("--tasks", type=int, default=8, help="recent tasks shown (default 8)")
    status.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="ID",
        help="show this agent (id or name) instead, through --via (repeatable; no TARGETs)",
    )
    add_via_flag(status)
    status.set_defaults(handler=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    if args.interval < MIN_INTERVAL:
        raise UsageError(f"--interval must be at least {MIN_INTERVAL:g} seconds")
    if not 1 <= args.tasks <= 100:
        raise UsageError("--tasks must be between 1 and 100")
    if args.agent and args.nodes:
        raise UsageError("--agent shows agents through one member: give no TARGET with it")
    targets = args.nodes or [entry_of(args, args.agent)] * max(len(args.agent), 1)
    if args.agent:
        from praxis_grpc.client import PraxisClient

        with PraxisClient(targets[0], credentials=credentials_from(args)) as client:
            args.agent = agent_ids(client, args.agent)
    if args.watch:
        return asyncio.run(_watch_until_interrupted(targets, args))
    view = asyncio.run(snapshot(targets, args.tasks, credentials_from(args), agent_ids=args.agent))
    if all(node.agent is None for node in view.nodes):
        for node in view.nodes:
            print(f"praxis: {node.error}", file=sys.stderr)
        return 1
    if args.json:
        print_json(view_document(view))
    else:
        from rich.console import Console

        Console(width=None if _is_terminal() else 160).print(render(view))
    return 0 if all(node.agent is not None for node in view.nodes) else 1


def _is_terminal() -> bool:
    return sys.stdout.isatty()


async def _watch_until_interrupted(targets: list[str], args: argparse.Namespace) -> int:
    from rich.console import Console

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    console = None if args.json else Console(width=None if _is_terminal() else 160)
    await watch(
        targets,
        console,
        args.interval,
        stop,
        recent=args.tasks,
        poller=MeshPoller(
            targets, args.tasks, credentials=credentials_from(args), agent_ids=args.agent
        ),
    )
    return 0


async def snapshot(
    targets: Sequence[str],
    recent: int = 8,
    credentials: ClientCredentials | None = None,
    agent_ids: Sequence[str] = (),
) -> MeshView:
    """One view of ``targets`` (members from ListCards); see :class:`MeshPoller`."""
    async with MeshPoller(targets, recent, credentials=credentials, agent_ids=agent_ids) as poller:
        await poller.refresh(list_cards=True)
        return poller.view


async def watch(
    targets: Sequence[str],
    console: Any,
    interval: float,
    stop: asyncio.Event,
    *,
    recent: int = 8,
    poller: MeshPoller | None = None,
) -> None:
    """Redraw the view on ``console`` (rich) every ``interval`` s until ``stop``.

    On a console that is not a terminal each refresh prints the view again
    (a frame); without a console each refresh prints one JSON document (a line).
    ``poller`` lets a caller look at the view it draws (tests).
    """
    from rich.live import Live

    poller = poller or MeshPoller(targets, recent)
    async with poller, asyncio.TaskGroup() as group:
        poller.start_streams(group)
        live = None
        if console is not None and console.is_terminal:
            live = Live(render(poller.view, interval), console=console, auto_refresh=False)
            live.start()
        try:
            while not stop.is_set():
                await poller.refresh()
                if live is not None:
                    live.update(render(poller.view, interval), refresh=True)
                elif console is not None:
                    console.print(render(poller.view, interval))
                    console.file.flush()
                else:
                    print_json(view_document(poller.view))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            if live is not None:
                live.stop()
            poller.stop_streams()


class MeshPoller:
    """Fills a :class:`MeshView` from the nodes; an async context manager
    owning one channel per node.

    With ``agent_ids`` (one per target) node ``i`` is agent ``agent_ids[i]``
    as ``targets[i]`` describes it (the agent may be behind NAT).
    """

    def __init__(
        self,
        targets: Sequence[str],
        recent: int = 8,
        call_timeout: float = 2.0,
        credentials: ClientCredentials | None = None,
        agent_ids: Sequence[str] = (),
    ) -> None:
        if not targets:
            raise ValueError("at least one target")
        if agent_ids and len(agent_ids) != len(targets):
            raise ValueError("one agent id per target")
        ids = list(agent_ids) or [""] * len(targets)
        self.view = MeshView(
            [
                NodeView(target, agent_id=agent_id)
                for target, agent_id in zip(targets, ids, strict=True)
            ]
        )
        self._recent = recent
        self._timeout = call_timeout
        presented = credentials or ClientCredentials()
        self._channels = [presented.aio_channel(target) for target in targets]
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._cards_live = False

    async def __aenter__(self) -> MeshPoller:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_streams()
        for channel in self._channels:
            await channel.close(grace=None)

    def start_streams(self, group: asyncio.TaskGroup) -> None:
        """Watch the cards (and, from each refresh on, unfinished tasks) in ``group``."""
        self._group = group
        self._streams["cards"] = group.create_task(self._watch_cards())

    def stop_streams(self) -> None:
        """Cancel every stream :meth:`start_streams` and refreshes started."""
        for stream in self._streams.values():
            stream.cancel()
        self._streams.clear()
        self._group = None

    async def refresh(self, list_cards: bool = False) -> None:
        """Ask every node for its agent and health; list recent tasks and failures
        at the first node that answers (and the cards, with ``list_cards``)."""
        await asyncio.gather(*(self._ask(node, ch) for node, ch in self._refreshable()))
        channel = next(
            (ch for node, ch in self._refreshable() if node.agent is not None),
            None,
        )
        if channel is not None:
            await self._list(channel, list_cards or not self._cards_live)
        self.view.refreshed = datetime.now(UTC)
        self._follow_unfinished()

    def _refreshable(self) -> list[tuple[NodeView, grpc.aio.Channel]]:
        return list(zip(self.view.nodes, self._channels, strict=True))

    async def _ask(self, node: NodeView, channel: grpc.aio.Channel) -> None:
        try:
            agents = agent_service_pb2_grpc.AgentServiceStub(channel)
            response = await agents.GetAgent(
                agent_service_pb2.GetAgentRequest(agent_id=node.agent_id), timeout=self._timeout
            )
            if node.agent_id:  # another agent: it answered, so it serves unless draining
                status = health_pb2.HealthCheckResponse.NOT_SERVING
                if not response.agent.draining:
                    status = health_pb2.HealthCheckResponse.SERVING
            else:
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=self._timeout
                )
                status = health.status
        except grpc.RpcError as exc:
            node.agent, node.error = None, _describe(exc, node.target)
            return
        node.agent, node.error = response.agent, ""
        node.health = health_pb2.HealthCheckResponse.ServingStatus.Name(status)

    async def _list(self, channel: grpc.aio.Channel, list_cards: bool) -> None:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        try:
            recent = await tasks.ListTasks(
                task_service_pb2.ListTasksRequest(page_size=self._recent), timeout=self._timeout
            )
            failed = await tasks.ListTasks(
                task_service_pb2.ListTasksRequest(states=_FAILED, page_size=5),
                timeout=self._timeout,
            )
            if list_cards:
                cards = await card_service_pb2_grpc.CardServiceStub(channel).ListCards(
                    card_service_pb2.ListCardsRequest(), timeout=self._timeout
                )
                self.view.cards = {card.agent_id: card for card in cards.cards}
        except grpc.RpcError:
            return  # the nodes table shows what is wrong; keep the last listing
        self.view.tasks, self.view.failures = list(recent.tasks), list(failed.tasks)

    def _follow_unfinished(self) -> None:
        if self._group is None:
            return
        for task in self.view.tasks:
            watching = sum(1 for key in self._streams if key != "cards")
            if is_terminal(task) or task.task_id in self._streams:
                continue
            if watching >= MAX_TASK_WATCHES:
                break
            self._streams[task.task_id] = self._group.create_task(self._watch_task(task.task_id))

    async def _watch_task(self, task_id: str) -> None:
        stub = task_service_pb2_grpc.TaskServiceStub(self._channels[0])
        try:
            request = task_service_pb2.WatchTaskRequest(task_id=task_id)
            async for response in stub.WatchTask(request):
                self.view.track(response.task)
        except grpc.RpcError:
            pass  # the next refresh lists the task again
        finally:
            self._streams.pop(task_id, None)

    async def _watch_cards(self) -> None:
        stub = card_service_pb2_grpc.CardServiceStub(self._channels[0])
        while True:
            snapshot: dict[str, types_pb2.AgentCard] = {}
            try:
                async for event in stub.WatchCards(card_service_pb2.WatchCardsRequest()):
                    if event.type == card_service_pb2.CARD_EVENT_TYPE_SYNCED:
                        self.view.cards, snapshot, self._cards_live = snapshot, {}, True
                        continue
                    cards = snapshot if not self._cards_live else self.view.cards
                    if event.type == card_service_pb2.CARD_EVENT_TYPE_REMOVED:
                        cards.pop(event.card.agent_id, None)
                    else:
                        cards[event.card.agent_id] = event.card
            except grpc.RpcError:
                pass
            self._cards_live = False  # refreshes list the cards until the watch is back
            await asyncio.sleep(1.0)


def _describe(exc: grpc.RpcError, target: str) -> str:
    if not isinstance(exc, grpc.aio.AioRpcError):
        return str(exc)[:200]
    trailers: Any = exc.trailing_metadata() or ()
    answered = any(key == ERROR_KEY for key, _ in trailers)
    if exc.code() == grpc.StatusCode.UNAVAILABLE and not answered:
        return f"cannot reach a praxis node at {target} ({exc.details()})"[:200]
    return f"{exc.code().name}: {exc.details()}"[:200]
