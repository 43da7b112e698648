"""Task responses that fit the node's message limit (``api.max_message_bytes``).

gRPC refuses to send a larger message itself (``RESOURCE_EXHAUSTED: Sent
message larger than max``, with no ``praxis-error``), which would make a
large task, or a page of them, unreadable. So a page holds as many tasks as
fit, and a task that fits no response is sent without its arguments and
result. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.tasks.model import Reason, TaskError
from praxis_grpc.wire import omitted_error

__all__ = ["ENVELOPE_BYTES", "fit_page", "fit_task"]

# What a response adds around its task messages: field tags and lengths, the
# next_page_token (about 100 bytes), the deduplicated flag.
ENVELOPE_BYTES: Final = 1024

T = TypeVar("T")


def fit_task(message: types_pb2.Task, limit: int) -> types_pb2.Task:
    """``message`` if it takes at most ``limit`` bytes as a field of its
    response; otherwise the same message, changed in place, without arguments
    and result, its error saying so (reason ``STORED_VALUE_TOO_LARGE``, then
    the task's own error)."""
    size = message.ByteSize()
    if _entry_bytes(size) <= limit:
        return message
    own = (
        TaskError(message.error.reason, message.error.message)
        if message.HasField("error")
        else None
    )
    error = omitted_error(
        Reason.STORED_VALUE_TOO_LARGE,
        f"arguments and result left out: the task takes {size} bytes, more than the "
        f"{limit} bytes a response of this node carries for it (api.max_message_bytes)",
        own,
    )
    message.ClearField("arguments")
    message.ClearField("result")
    message.error.CopyFrom(types_pb2.TaskError(reason=error.reason, message=error.message))
    return message


def fit_page(
    tasks: Sequence[T], convert: Callable[[T], types_pb2.Task], limit: int
) -> list[types_pb2.Task]:
    """The messages of the longest prefix of ``tasks`` that fits ``limit``
    bytes as a repeated field; tasks after it are not converted.

    A page of at least one task is never empty: its first task is shrunk
    with :func:`fit_task` if it fits no response on its own, and so is any
    later task that would be alone on its page.
    """
    page: list[types_pb2.Task] = []
    used = 0
    for task in tasks:
        message = convert(task)
        size = _entry_bytes(message.ByteSize())
        if size > limit:
            if page:  # it starts the next page, shrunk there
                break
            message = fit_task(message, limit)
            size = _entry_bytes(message.ByteSize())
        if used + size > limit:
            break
        page.append(message)
        used += size
    return page


def _entry_bytes(size: int) -> int:
    """A length-delimited field of ``size`` bytes: tag, length, payload."""
    return 1 + max(1, (size.bit_length() + 6) // 7) + size
