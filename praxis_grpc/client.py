"""A small typed client over the generated stubs, used by the CLI and tests.

Blocking (``grpc`` sync API). Errors surface as :class:`grpc.RpcError`; use
:func:`describe_rpc_error` for a one-line message fit for humans.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
from praxis_grpc.credentials import ClientCredentials
from praxis_grpc.wire import dict_to_struct, duration


class PraxisClient:
    """Calls one node. Close it (or use ``with``) to release the channel.

    ``credentials`` (TLS files, bearer token) default to a plaintext,
    anonymous client.
    """

    def __init__(
        self,
        target: str,
        timeout: float | None = 30.0,
        credentials: ClientCredentials | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = (credentials or ClientCredentials()).channel(target)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self.cards_stub = card_service_pb2_grpc.CardServiceStub(self._channel)
        self.agent = agent_service_pb2_grpc.AgentServiceStub(self._channel)
        self.health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> PraxisClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def submit(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        wait: bool = False,
        idempotency_key: str = "",
        timeout: float | None = None,
        tags: Sequence[str] = (),
        preferred_agent: str = "",
        rpc_timeout: float | None = None,
        target_agent: str = "",
    ) -> task_service_pb2.SubmitTaskResponse:
        """Submit a task; with ``wait`` block until it is terminal. With
        ``target_agent`` it runs on that agent only (whichever member this
        client talks to)."""
        request = task_service_pb2.SubmitTaskRequest(
            tool=tool,
            arguments=dict_to_struct(arguments or {}),
            idempotency_key=idempotency_key,
            tags=list(tags),
            preferred_agent=preferred_agent,
            wait=wait,
            target_agent=target_agent,
        )
        if timeout is not None:
            request.timeout.CopyFrom(duration(timeout))
        deadline = rpc_timeout if rpc_timeout is not None else (None if wait else self.timeout)
        response: task_service_pb2.SubmitTaskResponse = self.tasks.SubmitTask(
            request, timeout=deadline
        )
        return response

    def get_task(self, task_id: str) -> types_pb2.Task:
        """One task."""
        response = self.tasks.GetTask(
            task_service_pb2.GetTaskRequest(task_id=task_id), timeout=self.timeout
        )
        return response.task

    def list_tasks(
        self,
        states: Sequence[int] = (),
        tool: str = "",
        page_size: int = 0,
        page_token: str = "",
        local_only: bool = False,
    ) -> task_service_pb2.ListTasksResponse:
        """One page of tasks (``local_only``: this node's own store, see the proto)."""
        response: task_service_pb2.ListTasksResponse = self.tasks.ListTasks(
            task_service_pb2.ListTasksRequest(
                states=list(states),  # type: ignore[arg-type]
                tool=tool,
                page_size=page_size,
                page_token=page_token,
                local_only=local_only,
            ),
            timeout=self.timeout,
        )
        return response

    def cancel_task(self, task_id: str, reason: str = "") -> types_pb2.Task:
        """Cancel a task."""
        response = self.tasks.CancelTask(
            task_service_pb2.CancelTaskRequest(task_id=task_id, reason=reason),
            timeout=self.timeout,
        )
        return response.task

    def watch_task(self, task_id: str) -> Iterator[types_pb2.Task]:
        """Every state of the task until it is terminal.

        A stream the server ends without choosing a status (it closes
        connections after ``api.max_connection_age``) is opened again, as long
        as the previous one delivered something (so a node that is gone ends
        the watch); states already seen are not repeated.
        """
        request = task_service_pb2.WatchTaskRequest(task_id=task_id)
        seen: tuple[int, int, int, int] | None = None
        while True:
            received = False
            try:
                for response in self.tasks.WatchTask(request):
                    received = True
                    task = response.task
                    mark = (
                        task.state,
                        task.attempt,
                        task.updated_at.seconds,
                        task.updated_at.nanos,
                    )
                    if mark != seen:
                        seen = mark
                        yield task
                return
            except grpc.RpcError as exc:
                if not (received and _closed_by_server(exc)):
                    raise

    def list_cards(self, tool: str = "", tags: Sequence[str] = ()) -> list[types_pb2.AgentCard]:
        """Known cards."""
        response = self.cards_stub.ListCards(
            card_service_pb2.ListCardsRequest(tool=tool, tags=list(tags)), timeout=self.timeout
        )
        return list(response.cards)

    def get_agent(self, agent_id: str = "") -> agent_service_pb2.Agent:
        """The node's self-description, or with ``agent_id`` that member's
        (asked by this node over the peer protocol)."""
        response = self.agent.GetAgent(
            agent_service_pb2.GetAgentRequest(agent_id=agent_id), timeout=self.timeout
        )
        return response.agent

    def list_peers(self) -> list[agent_service_pb2.Peer]:
        """Connected mesh peers."""
        return self.list_peers_and_members()[0]

    def list_peers_and_members(
        self,
    ) -> tuple[list[agent_service_pb2.Peer], list[agent_service_pb2.Member]]:
        """Connected mesh peers, and every member the failure detector knows."""
        response = self.agent.ListPeers(agent_service_pb2.ListPeersRequest(), timeout=self.timeout)
        return list(response.peers), list(response.members)

    def drain(self, resume: bool = False) -> agent_service_pb2.Agent:
        """Enter (or leave) drain mode."""
        response = self.agent.Drain(
            agent_service_pb2.DrainRequest(resume=resume), timeout=self.timeout
        )
        return response.agent

    def health_status(self, service: str = "") -> str:
        """The health status name (SERVING, NOT_SERVING, ...) of ``service``."""
        response = self.health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def describe_rpc_error(exc: grpc.RpcError, target: str) -> str:
    """A one-line description of a failed call."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if _closed_by_server(exc):  # no node answered: gRPC chose the status
        return f"cannot reach a praxis node at {target} ({details})"
    name = code.name if code is not None else "ERROR"
    message = f"{name}: {details}"
    if isinstance(exc, grpc.Call):
        trailers = dict(exc.trailing_metadata() or ())
        if "retry-after-ms" in trailers:
            message += f" (retry after {trailers['retry-after-ms']} ms)"
    return message


def _closed_by_server(exc: grpc.RpcError) -> bool:
    """UNAVAILABLE that no praxis node chose: the connection went away."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    trailers: Any = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    return code is grpc.StatusCode.UNAVAILABLE and ERROR_KEY not in dict(trailers or ())
