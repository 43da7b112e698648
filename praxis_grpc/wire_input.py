"""What a request may carry: the bounds on the strings a task stores, and the
validated :class:`~praxis_grpc.tasks.model.Submission` built from a
``praxis.v1.SubmitTaskRequest`` or a ``praxis.peer.v1.TaskSpec`` (and back).

Shared by the public servicers (api/) and the peer protocol (peers/); the
conversions of whole messages are in :mod:`praxis_grpc.wire`. Every refusal is
an :class:`~praxis_grpc.errors.InvalidArgument` naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from google.protobuf import duration_pb2, struct_pb2

from praxis_grpc.errors import InvalidArgument
from praxis_grpc.tasks.model import Submission
from praxis_grpc.wire import dict_to_struct, duration, duration_seconds, struct_to_dict

# Strings a task stores and returns with every read: bounded, so no request
# stores more than max_argument_bytes of arguments plus a little.
MAX_KEY_LENGTH = 256
MAX_NAME_LENGTH = 256  # a tag, preferred_agent, target_agent, an agent id
MAX_TAGS = 64
MAX_REASON_LENGTH = 1024
# Task ids are canonical UUIDs (36 characters); anything much longer is
# refused before it is looked up or quoted.
MAX_TASK_ID_LENGTH = 64


class SubmissionMessage(Protocol):
    """The fields of a submission, as ``praxis.v1.SubmitTaskRequest`` and
    ``praxis.peer.v1.TaskSpec`` both carry them."""

    @property
    def tool(self) -> str: ...
    @property
    def arguments(self) -> struct_pb2.Struct: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def timeout(self) -> duration_pb2.Duration: ...
    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def preferred_agent(self) -> str: ...
    @property
    def target_agent(self) -> str: ...
    def HasField(self, field_name: Any) -> bool: ...


def submission_from_proto(
    request: SubmissionMessage, max_argument_bytes: int, *, submitter: str = ""
) -> Submission:
    """Validate a submission's shape and build the domain submission.

    ``submitter`` is never read from a client's request: the public API passes
    the name of the token it authenticated, the peer service the ``submitter``
    of a ``TaskSpec`` an entry node sent.

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
    key, preferred, target = request.idempotency_key, request.preferred_agent, request.target_agent
    if (
        len(key) > MAX_KEY_LENGTH
        or len(preferred) > MAX_NAME_LENGTH
        or len(target) > MAX_NAME_LENGTH
    ):
        check_length("idempotency_key", key, MAX_KEY_LENGTH)
        check_length("preferred_agent", preferred, MAX_NAME_LENGTH)
        check_length("target_agent", target, MAX_NAME_LENGTH)
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
        check_length(f"tags[{index}]", tag, MAX_NAME_LENGTH)
    return Submission(
        tool=request.tool,
        arguments=struct_to_dict(request.arguments),
        idempotency_key=key,
        timeout=timeout,
        tags=tuple(request.tags),
        preferred_agent=preferred,
        submitter=submitter,
        target_agent=target,
    )


def submission_fields(submission: Submission) -> dict[str, Any]:
    """The keyword arguments of a ``SubmitTaskRequest`` or ``TaskSpec`` that
    carry ``submission`` (the inverse of :func:`submission_from_proto`).

    ``submitter`` (a ``TaskSpec`` field only) is included when set: a client
    builds its request from a submission without one."""
    fields: dict[str, Any] = {
        "tool": submission.tool,
        "arguments": dict_to_struct(submission.arguments),
        "idempotency_key": submission.idempotency_key,
        "tags": submission.tags,
        "preferred_agent": submission.preferred_agent,
    }
    if submission.timeout is not None:
        fields["timeout"] = duration(submission.timeout)
    if submission.submitter:
        fields["submitter"] = submission.submitter
    if submission.target_agent:
        fields["target_agent"] = submission.target_agent
    return fields


def check_length(field: str, value: str, limit: int) -> None:
    """Raise InvalidArgument naming ``field`` if ``value`` is longer than ``limit``."""
    if len(value) > limit:
        raise InvalidArgument(field, f"longer than {limit} characters")


def task_id_field(value: str, field: str = "task_id") -> str:
    """A required task id from a request, bounded in length (the engine checks
    it is a canonical UUID).

    Raises:
        InvalidArgument: empty or far longer than a UUID.
    """
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_TASK_ID_LENGTH:
        raise InvalidArgument(field, f"{len(value)} characters is longer than any task id (a UUID)")
    return value
