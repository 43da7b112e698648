"""``praxis.v1.TaskService``: validate, call the task engine, convert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.api.convert import struct_to_dict, task_to_proto
from praxis_grpc.api.errors import translate_errors
from praxis_grpc.errors import InvalidArgument
from praxis_grpc.ha.forwarding import FORWARDED_BY
from praxis_grpc.routing.delegation import OWNER_QUERY
from praxis_grpc.routing.dispatcher import TaskDispatcher
from praxis_grpc.tasks.model import Submission, TaskState

Context = grpc.aio.ServicerContext[Any, Any]

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_KEY_LENGTH = 256


class TaskService(pb_grpc.TaskServiceServicer):
    """Serves tasks through the node's :class:`TaskDispatcher`, wherever they run."""

    def __init__(self, dispatcher: TaskDispatcher) -> None:
        self._tasks = dispatcher

    @translate_errors
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        submission = submission_from_proto(request)
        task, deduplicated = await self._tasks.submit(
            submission,
            wait=request.wait,
            time_remaining=context.time_remaining(),
            task_id=request.task_id or None,
            local_only=request.local_only,
            origin_agent_id=request.origin_agent_id,
            fencing_token=request.fencing_token,
            prior_attempts=request.prior_attempts,
            forwarded=self._tasks.relays and _has_metadata(context, FORWARDED_BY),
        )
        # A deduplicated task may have been submitted with other (equal) arguments.
        arguments = None if deduplicated else request.arguments
        return pb.SubmitTaskResponse(task=task_to_proto(task, arguments), deduplicated=deduplicated)

    @translate_errors
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        return pb.GetTaskResponse(
            task=task_to_proto(await self._tasks.get(_task_id(request.task_id)))
        )

    @translate_errors
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        states = []
        for index, value in enumerate(request.states):
            if value == types_pb2.TASK_STATE_UNSPECIFIED or value not in _STATE_VALUES:
                raise InvalidArgument(f"states[{index}]", f"{value} is not a task state")
            states.append(TaskState(value))
        tasks, token = await self._tasks.list(
            states=states,
            tool=request.tool,
            limit=request.page_size or DEFAULT_PAGE_SIZE,
            page_token=request.page_token,
            local_only=request.local_only,
        )
        return pb.ListTasksResponse(tasks=[task_to_proto(t) for t in tasks], next_page_token=token)

    @translate_errors
    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        task = await self._tasks.cancel(_task_id(request.task_id), request.reason)
        return pb.CancelTaskResponse(task=task_to_proto(task))

    @translate_errors
    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        owner_query = _has_metadata(context, OWNER_QUERY)
        async for task in self._tasks.watch(_task_id(request.task_id), owner_query=owner_query):
            yield pb.WatchTaskResponse(task=task_to_proto(task))


_STATE_VALUES = {state.value for state in TaskState}


def submission_from_proto(request: pb.SubmitTaskRequest) -> Submission:
    """Validate the request's shape and build the domain submission."""
    if not request.tool:
        raise InvalidArgument("tool", "is required")
    if len(request.idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidArgument("idempotency_key", f"longer than {MAX_KEY_LENGTH} characters")
    timeout = None
    if request.HasField("timeout"):
        timeout = request.timeout.ToNanoseconds() / 1e9
        if timeout <= 0:
            raise InvalidArgument("timeout", "must be positive")
    for index, tag in enumerate(request.tags):
        if not tag:
            raise InvalidArgument(f"tags[{index}]", "must not be empty")
    return Submission(
        tool=request.tool,
        arguments=struct_to_dict(request.arguments),
        idempotency_key=request.idempotency_key,
        timeout=timeout,
        tags=tuple(request.tags),
        preferred_agent=request.preferred_agent,
    )


def _has_metadata(context: Context, name: str) -> bool:
    return any(key == name for key, _ in context.invocation_metadata() or ())


def _task_id(value: str) -> str:
    if not value:
        raise InvalidArgument("task_id", "is required")
    return value
