"""Domain errors: what went wrong, in the domain's words.

Components raise these; the gRPC layer converts them to status codes in exactly
one place (:mod:`praxis_grpc.api.errors`) and the CLI prints their message.
No gRPC types appear here so pure logic stays importable without a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# How many characters of a client-supplied value an error message may quote.
MAX_QUOTED: Final = 100


def clip(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote(value: str, limit: int = MAX_QUOTED) -> str:
    """A client-supplied value for an error message: ``repr`` of at most
    ``limit`` characters of it, so no request can make a message (and the
    status trailer that carries it) large.

    >>> quote("x" * 1000, 5)
    "'xxxx…'"
    """
    return repr(clip(value, limit))


def quote_all(values: Iterable[str], limit: int = MAX_QUOTED) -> str:
    """Several client-supplied values (such as tags) as a list, each quoted,
    showing about ``limit`` characters of them in all."""
    items = list(values)
    shown: list[str] = []
    budget = limit
    for item in items:
        if budget <= 0:
            break
        shown.append(quote(item, max(budget, 8)))
        budget -= len(item) + 2
    more = len(items) - len(shown)
    return "[" + ", ".join(shown) + (f", … {more} more" if more else "") + "]"


class PraxisError(Exception):
    """Base class of every error a client may see."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(PraxisError):
    """A request field is malformed; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(PraxisError):
    """The named task, tool or agent does not exist."""


class AlreadyExists(PraxisError):
    """An idempotency key was reused for a different request."""


class ResourceExhausted(PraxisError):
    """A queue or limit is full; retrying after ``retry_after`` seconds may succeed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FailedPrecondition(PraxisError):
    """The node cannot do this in its current state (draining, no capable agent)."""


class Unavailable(PraxisError):
    """The service is temporarily unavailable; retry, possibly elsewhere.

    ``coordinator``/``coordinator_id`` name the active-passive coordinator to
    retry at, when known.
    """

    def __init__(self, message: str, coordinator: str = "", coordinator_id: str = "") -> None:
        super().__init__(message)
        self.coordinator = coordinator
        self.coordinator_id = coordinator_id


class DeadlineExceeded(PraxisError):
    """The caller's deadline passed before the operation finished."""


class ToolError(Exception):
    """A tool failed while executing a task; the message is shown to the client.

    Raised by tool implementations. The engine records the task as FAILED with
    reason ``reason`` and this message; it is never converted to a gRPC error.
    """

    def __init__(self, message: str, reason: str = "TOOL_ERROR") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
