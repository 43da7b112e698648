"""``praxis.peer.v1.PeerService``: validate, call the node's
:class:`~praxis_grpc.peers.base.PeerHandler`, convert.

Served on the node's gRPC port but not listed by server reflection (it is
internal: see ``protos/praxis/peer/v1/peer_service.proto``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import struct_pb2

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as pb
from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.api.errors import translate_errors
from praxis_grpc.api.message_size import ENVELOPE_BYTES, fit_page, fit_task
from praxis_grpc.errors import InvalidArgument
from praxis_grpc.peers.base import Dispatch, PeerHandler, TaskQuery
from praxis_grpc.peers.session_service import SessionCalls
from praxis_grpc.tasks.model import Task, TaskState
from praxis_grpc.tasks.store import Cursor
from praxis_grpc.wire import task_to_proto
from praxis_grpc.wire_input import (
    MAX_NAME_LENGTH,
    MAX_REASON_LENGTH,
    check_length,
    submission_from_proto,
    task_id_field,
)

__all__ = ["PEER_SERVICE_NAME", "PeerService", "add_to_server"]

PEER_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PeerService"].full_name
MAX_PAGE_SIZE = 1000
_STATES = {state.value: state for state in TaskState}
_MAX_PRIOR_ATTEMPTS = 1_000

Context = grpc.aio.ServicerContext[Any, Any]


class PeerService(pb_grpc.PeerServiceServicer):
    """Serves other nodes' calls through ``handler``.

    Args:
        max_argument_bytes: The largest ``arguments`` accepted (``tasks.max_argument_bytes``).
        max_message_bytes: The largest response (``api.max_message_bytes``).
        max_session_calls: Calls in flight per ``Session`` stream; more are
            refused (RESOURCE_EXHAUSTED), so one peer's stream holds bounded memory.
        describe: This node as its ``AgentService.GetAgent`` describes it
            (:func:`praxis_grpc.api.agent_service.describe_node`): the answer
            to ``Describe``.
    """

    def __init__(
        self,
        handler: PeerHandler,
        *,
        max_argument_bytes: int,
        max_message_bytes: int,
        describe: Callable[[], Agent],
        max_session_calls: int = 1024,
    ) -> None:
        self._handler = handler
        self._describe = describe
        self._max_session_calls = max_session_calls
        self._max_argument_bytes = max_argument_bytes
        self._room = max_message_bytes - ENVELOPE_BYTES

    def _task(self, task: Task, arguments: struct_pb2.Struct | None = None) -> types_pb2.Task:
        return fit_task(task_to_proto(task, arguments), self._room)

    @translate_errors
    async def Dispatch(self, request: pb.DispatchRequest, context: Context) -> pb.DispatchResponse:
        return await self.dispatch(request)

    async def dispatch(self, request: pb.DispatchRequest) -> pb.DispatchResponse:
        """Validate ``request`` in full, then hand it to the handler (and its fence)."""
        task_id = task_id_field(request.task_id)
        submission = submission_from_proto(
            request.spec, self._max_argument_bytes, submitter=request.spec.submitter
        )
        if not request.origin_agent_id:
            raise InvalidArgument("origin_agent_id", "is required")
        check_length("origin_agent_id", request.origin_agent_id, MAX_NAME_LENGTH)
        if request.prior_attempts > _MAX_PRIOR_ATTEMPTS:
            raise InvalidArgument("prior_attempts", f"more than {_MAX_PRIOR_ATTEMPTS}")
        task, deduplicated = await self._handler.dispatch(
            Dispatch(
                task_id=task_id,
                submission=submission,
                origin_agent_id=request.origin_agent_id,
                fencing_token=request.fencing_token,
                prior_attempts=request.prior_attempts,
                wait=request.wait,
            )
        )
        # A deduplicated task may have been dispatched with other (equal) arguments.
        arguments = None if deduplicated else request.spec.arguments
        return pb.DispatchResponse(task=self._task(task, arguments), deduplicated=deduplicated)

    @translate_errors
    async def Follow(
        self, request: pb.FollowRequest, context: Context
    ) -> AsyncIterator[pb.FollowResponse]:
        async for message in self.follow(request):
            yield message

    async def follow(self, request: pb.FollowRequest) -> AsyncIterator[pb.FollowResponse]:
        """The owner's states of the task ``request`` names."""
        async for task in self._handler.follow(task_id_field(request.task_id)):
            yield pb.FollowResponse(task=self._task(task))

    async def Session(
        self, request_iterator: AsyncIterator[pb.SessionRequest], context: Context
    ) -> AsyncIterator[pb.SessionResponse]:
        session = SessionCalls(self, self._max_session_calls, self._room)
        async for response in session.run(request_iterator):
            yield response

    @translate_errors
    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.CancelResponse:
        return await self.cancel(request)

    async def cancel(self, request: pb.CancelRequest) -> pb.CancelResponse:
        """Validate ``request``, then cancel the task at the handler."""
        task_id = task_id_field(request.task_id)
        check_length("reason", request.reason, MAX_REASON_LENGTH)
        task = await self._handler.cancel(task_id, request.reason)
        return pb.CancelResponse(task=self._task(task))

    @translate_errors
    async def Describe(self, request: pb.DescribeRequest, context: Context) -> pb.DescribeResponse:
        return await self.describe(request)

    async def describe(self, request: pb.DescribeRequest) -> pb.DescribeResponse:
        """This node, as its public ``GetAgent`` describes it."""
        return pb.DescribeResponse(agent=self._describe())

    @translate_errors
    async def RelaySubmit(
        self, request: pb.RelaySubmitRequest, context: Context
    ) -> pb.RelaySubmitResponse:
        _relayed_by(request.relayed_by)
        task_id = task_id_field(request.task_id)
        submission = submission_from_proto(
            request.spec, self._max_argument_bytes, submitter=request.spec.submitter
        )
        task, deduplicated = await self._handler.relay_submit(
            submission, task_id=task_id, wait=request.wait, time_remaining=context.time_remaining()
        )
        return pb.RelaySubmitResponse(task=self._task(task), deduplicated=deduplicated)

    @translate_errors
    async def RelayGet(self, request: pb.RelayGetRequest, context: Context) -> pb.RelayGetResponse:
        _relayed_by(request.relayed_by)
        task = await self._handler.relay_get(task_id_field(request.task_id))
        return pb.RelayGetResponse(task=self._task(task))

    @translate_errors
    async def RelayList(
        self, request: pb.RelayListRequest, context: Context
    ) -> pb.RelayListResponse:
        _relayed_by(request.relayed_by)
        if not 1 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        states = []
        for index, value in enumerate(request.states):
            if value not in _STATES:
                raise InvalidArgument(f"states[{index}]", f"{value} is not a task state")
            states.append(_STATES[value])
        tasks, token = await self._handler.relay_list(
            TaskQuery(
                states=states,
                tool=request.tool,
                limit=request.page_size,
                page_token=request.page_token,
            )
        )
        page = fit_page(tasks, task_to_proto, self._room)
        if len(page) < len(tasks):
            # Cut to fit: the standby's client continues after the last one sent.
            token = Cursor.at(tasks[len(page) - 1]).encode()
        return pb.RelayListResponse(tasks=page, next_page_token=token)

    @translate_errors
    async def RelayCancel(
        self, request: pb.RelayCancelRequest, context: Context
    ) -> pb.RelayCancelResponse:
        _relayed_by(request.relayed_by)
        task_id = task_id_field(request.task_id)
        check_length("reason", request.reason, MAX_REASON_LENGTH)
        task = await self._handler.relay_cancel(task_id, request.reason)
        return pb.RelayCancelResponse(task=self._task(task))

    @translate_errors
    async def RelayWatch(
        self, request: pb.RelayWatchRequest, context: Context
    ) -> AsyncIterator[pb.RelayWatchResponse]:
        _relayed_by(request.relayed_by)
        async for task in self._handler.relay_watch(task_id_field(request.task_id)):
            yield pb.RelayWatchResponse(task=self._task(task))


def _relayed_by(agent_id: str) -> None:
    if not agent_id:
        raise InvalidArgument("relayed_by", "is required")
    check_length("relayed_by", agent_id, MAX_NAME_LENGTH)


def add_to_server(service: PeerService, server: grpc.aio.Server) -> None:
    """Serve ``service`` on ``server`` (not listed by reflection)."""
    pb_grpc.add_PeerServiceServicer_to_server(service, server)
