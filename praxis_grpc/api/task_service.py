"""``praxis.v1.TaskService``: validate, call the task engine, convert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import struct_pb2

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.api.auth import Caller, current_caller
from praxis_grpc.api.errors import translate_errors
from praxis_grpc.api.message_size import ENVELOPE_BYTES, fit_page, fit_task
from praxis_grpc.errors import InvalidArgument, NotFound, quote
from praxis_grpc.routing.frontend import TaskFrontend
from praxis_grpc.tasks.model import Task, TaskState
from praxis_grpc.wire import task_to_proto
from praxis_grpc.wire_input import (
    MAX_REASON_LENGTH,
    check_length,
    submission_from_proto,
    task_id_field,
)

Context = grpc.aio.ServicerContext[Any, Any]

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
# A client's ListTasks skips other clients' tasks: at most this many pages
# are read to fill one of its pages (a shorter page still has a next token).
_MAX_PAGES_READ = 8


class TaskService(pb_grpc.TaskServiceServicer):
    """Serves tasks through the node's :class:`TaskFrontend`, wherever they run.

    With ``api.auth``, a task records the token name it was submitted with
    (``submitter``), and a caller with the ``client`` role sees, watches and
    cancels only its own tasks: another's task is NOT_FOUND, as if it did not
    exist (see :mod:`praxis_grpc.api.auth`).

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
        dispatcher: TaskFrontend,
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
        submission = submission_from_proto(
            request, self._max_argument_bytes, submitter=current_caller().name
        )
        task, deduplicated = await self._tasks.submit(
            submission,
            wait=request.wait,
            time_remaining=context.time_remaining(),
            task_id=task_id_field(request.task_id) if request.task_id else None,
        )
        # A deduplicated task may have been submitted with other (equal) arguments.
        arguments = None if deduplicated else request.arguments
        return pb.SubmitTaskResponse(task=self._message(task, arguments), deduplicated=deduplicated)

    @translate_errors
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        return pb.GetTaskResponse(task=self._message(await self._visible(request.task_id)))

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
        caller = current_caller()
        limit = request.page_size or DEFAULT_PAGE_SIZE
        tasks: list[Task] = []
        token = request.page_token
        for _ in range(_MAX_PAGES_READ):
            read, token = await self._tasks.list(
                states=states,
                tool=request.tool,
                limit=limit - len(tasks),
                page_token=token,
                local_only=request.local_only,
            )
            tasks.extend(task for task in read if caller.owns(task.submitter))
            if caller.sees_all_tasks or not token or len(tasks) >= limit:
                break
        page = fit_page(tasks, task_to_proto, self._room)
        if len(page) < len(tasks):  # cut to fit: the next page starts after the last one sent
            token = self._tasks.page_token_after(tasks[len(page) - 1])
        return pb.ListTasksResponse(tasks=page, next_page_token=token)

    @translate_errors
    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        task_id = task_id_field(request.task_id)
        check_length("reason", request.reason, MAX_REASON_LENGTH)
        if not current_caller().sees_all_tasks:
            await self._visible(task_id)  # the submitter never changes: checked once
        task = await self._tasks.cancel(task_id, request.reason)
        return pb.CancelTaskResponse(task=self._message(task))

    @translate_errors
    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        caller = current_caller()
        async for task in self._tasks.watch(task_id_field(request.task_id)):
            _check_visible(caller, task)
            yield pb.WatchTaskResponse(task=self._message(task))

    async def _visible(self, task_id: str) -> Task:
        """The task ``task_id``, if the caller may see it.

        Raises:
            NotFound: no such task, or another client's.
        """
        task = await self._tasks.get(task_id_field(task_id))
        _check_visible(current_caller(), task)
        return task


def _check_visible(caller: Caller, task: Task) -> None:
    if not caller.owns(task.submitter):
        # The message of an unknown task: another client's must not look different.
        raise NotFound(f"task {quote(task.task_id)} not found")


_STATE_VALUES = {state.value for state in TaskState}
