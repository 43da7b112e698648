"""``praxis.v1.TaskService``: validate, call the task engine, convert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import struct_pb2

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.api.convert import duration_seconds, struct_to_dict, task_to_proto
from praxis_grpc.api.errors import translate_errors
from praxis_grpc.api.message_size import ENVELOPE_BYTES, fit_page, fit_task
from praxis_grpc.errors import InvalidArgument
from praxis_grpc.ha.forwarding import FORWARDED_BY
from praxis_grpc.routing.delegation import OWNER_QUERY
from praxis_grpc.routing.dispatcher import TaskDispatcher
from praxis_grpc.tasks.model import Submission, Task, TaskState

Context = grpc.aio.ServicerContext[Any, Any]

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_KEY_LENGTH = 256
# Strings a task stores and returns with every read: bounded, so no request
# stores more than max_argument_bytes of arguments plus a little.
MAX_NAME_LENGTH = 256  # a tag, preferred_agent, origin_agent_id
MAX_TAGS = 64
MAX_REASON_LENGTH = 1024
# Task ids are canonical UUIDs (36 characters); anything much longer is
# refused before it is looked up or quoted.
MAX_TASK_ID_LENGTH = 64


class TaskService(pb_grpc.TaskServiceServicer):
    """Serves tasks through the node's :class:`TaskDispatcher`, wherever they run.

    Every response fits ``max_message_bytes`` (``api.max_message_bytes``):
    a ListTasks page ends early, with a ``next_page_token``, when the next
    task would not fit, and a task that fits no response is sent without
    its arguments and result (see :mod:`praxis_grpc.api.message_size`).

    Args:
        max_argument_bytes: The largest ``arguments`` accepted, in protobuf
            wire bytes (``tasks.max_argument_bytes``).
        max_message_bytes: The largest response (``api.max_message_bytes``).
    """

    def __init__(
        self,
        dispatcher: TaskDispatcher,
        *,
        max_argument_bytes: int,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._tasks = dispatcher
        self._max_argument_bytes = max_argument_bytes
        self._room = max_message_bytes - ENVELOPE_BYTES

    def _message(self, task: Task, arguments: struct_pb2.Struct | None = None) -> types_pb2.Task:
        return fit_task(task_to_proto(task, arguments), self._room)

    @translate_errors
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        submission = submission_from_proto(request, self._max_argument_bytes)
        task, deduplicated = await self._tasks.submit(
            submission,
            wait=request.wait,
            time_remaining=context.time_remaining(),
            task_id=_task_id(request.task_id) if request.task_id else None,
            local_only=request.local_only,
            origin_agent_id=request.origin_agent_id,
            fencing_token=request.fencing_token,
            prior_attempts=request.prior_attempts,
            forwarded=self._tasks.relays and _has_metadata(context, FORWARDED_BY),
        )
        # A deduplicated task may have been submitted with other (equal) arguments.
        arguments = None if deduplicated else request.arguments
        return pb.SubmitTaskResponse(task=self._message(task, arguments), deduplicated=deduplicated)

    @translate_errors
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        return pb.GetTaskResponse(
            task=self._message(await self._tasks.get(_task_id(request.task_id)))
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
        page = fit_page(tasks, task_to_proto, self._room)
        if len(page) < len(tasks):  # cut to fit: the next page starts after the last one sent
            token = self._tasks.page_token_after(tasks[len(page) - 1])
        return pb.ListTasksResponse(tasks=page, next_page_token=token)

    @translate_errors
    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        task_id = _task_id(request.task_id)
        _check_length("reason", request.reason, MAX_REASON_LENGTH)
        task = await self._tasks.cancel(task_id, request.reason)
        return pb.CancelTaskResponse(task=self._message(task))

    @translate_errors
    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        owner_query = _has_metadata(context, OWNER_QUERY)
        async for task in self._tasks.watch(_task_id(request.task_id), owner_query=owner_query):
            yield pb.WatchTaskResponse(task=self._message(task))


_STATE_VALUES = {state.value for state in TaskState}


def submission_from_proto(request: pb.SubmitTaskRequest, max_argument_bytes: int) -> Submission:
    """Validate the request's shape and build the domain submission.

    The size of ``arguments`` is checked first, in protobuf wire bytes (what
    the client sent, cheap to measure), so an oversized request is refused
    before it costs a conversion.

    Raises:
        InvalidArgument: the message names the offending field.
    """
    if not request.tool:
        raise InvalidArgument("tool", "is required")
    size = request.arguments.ByteSize()
    if size > max_argument_bytes:
        raise InvalidArgument(
            "arguments", f"{size} bytes exceeds the limit of {max_argument_bytes} bytes"
        )
    _check_length("idempotency_key", request.idempotency_key, MAX_KEY_LENGTH)
    _check_length("preferred_agent", request.preferred_agent, MAX_NAME_LENGTH)
    _check_length("origin_agent_id", request.origin_agent_id, MAX_NAME_LENGTH)
    timeout = None
    if request.HasField("timeout"):
        timeout = duration_seconds(request.timeout, "timeout")
        if timeout <= 0:
            raise InvalidArgument("timeout", "must be positive")
    if len(request.tags) > MAX_TAGS:
        raise InvalidArgument("tags", f"more than {MAX_TAGS} tags")
    for index, tag in enumerate(request.tags):
        if not tag:
            raise InvalidArgument(f"tags[{index}]", "must not be empty")
        _check_length(f"tags[{index}]", tag, MAX_NAME_LENGTH)
    return Submission(
        tool=request.tool,
        arguments=struct_to_dict(request.arguments),
        idempotency_key=request.idempotency_key,
        timeout=timeout,
        tags=tuple(request.tags),
        preferred_agent=request.preferred_agent,
    )


def _check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(field, f"longer than {limit} characters")


def _has_metadata(context: Context, name: str) -> bool:
    return any(key == name for key, _ in context.invocation_metadata() or ())


def _task_id(value: str) -> str:
    if not value:
        raise InvalidArgument("task_id", "is required")
    if len(value) > MAX_TASK_ID_LENGTH:
        raise InvalidArgument(
            "task_id", f"{len(value)} characters is longer than any task id (a UUID)"
        )
    return value
