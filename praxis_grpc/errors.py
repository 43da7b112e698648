"""Domain errors: what went wrong, in the domain's words.

Components raise these; the gRPC layer converts them to status codes in exactly
one place (:mod:`praxis_grpc.api.errors`) and the CLI prints their message.
No gRPC types appear here so pure logic stays importable without a server.
"""

from __future__ import annotations


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
