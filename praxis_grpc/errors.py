"""Domain errors: what went wrong, in the domain's words.

Components raise these; the gRPC layer converts them to status codes in exactly
one place (:mod:`praxis_grpc.api.errors`) and the CLI prints their message.
No gRPC types appear here so pure logic stays importable without a server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import ClassVar, Final

# The ``domain`` of the ``google.rpc.ErrorInfo`` detail of every error a
# praxis node sends: a reason is unique within it.
ERROR_DOMAIN: Final = "praxis.dev"
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
    """Base class of every error a client may see.

    Attributes:
        message: What went wrong, for people (the gRPC status message).
        reason: Why, for programs: a stable UPPER_SNAKE_CASE name that clients
            may branch on (the ``reason`` of the ``google.rpc.ErrorInfo``
            detail; every reason is listed in the README's error table).
        retry_after: Seconds after which a retry may succeed; ``None`` when
            retrying the same call will not help.
    """

    default_reason: ClassVar[str] = "ERROR"

    def __init__(self, message: str, *, reason: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.retry_after = retry_after

    def metadata(self) -> dict[str, str]:
        """Facts a program acts on (a field name, the coordinator, the retry
        delay), the ``metadata`` of the ``ErrorInfo`` detail."""
        if self.retry_after is None:
            return {}
        return {"retry_after_ms": str(math.ceil(self.retry_after * 1000))}


class InvalidArgument(PraxisError):
    """A request field is malformed; ``field`` is its dotted path."""

    default_reason = "FIELD_INVALID"

    def __init__(self, field: str, message: str, *, reason: str = "") -> None:
        super().__init__(f"{field}: {message}", reason=reason)
        self.field = field

    def metadata(self) -> dict[str, str]:
        return {"field": self.field, **super().metadata()}


class NotFound(PraxisError):
    """The named task, tool or agent does not exist."""

    default_reason = "NOT_FOUND"


class AlreadyExists(PraxisError):
    """An idempotency key was reused for a different request."""

    default_reason = "ALREADY_EXISTS"


class ResourceExhausted(PraxisError):
    """A queue or limit is full; retrying after ``retry_after`` seconds may succeed."""

    default_reason = "OVERLOADED"
    retry_after: float

    def __init__(self, message: str, retry_after: float, *, reason: str = "") -> None:
        super().__init__(message, reason=reason, retry_after=retry_after)


class FailedPrecondition(PraxisError):
    """The node cannot do this in its current state (draining, no capable agent)."""

    default_reason = "FAILED_PRECONDITION"


class Unavailable(PraxisError):
    """The service is temporarily unavailable; retry, possibly elsewhere.

    ``coordinator``/``coordinator_id`` name the active-passive coordinator to
    retry at, when known.
    """

    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        coordinator: str = "",
        coordinator_id: str = "",
        *,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, retry_after=retry_after)
        self.coordinator = coordinator
        self.coordinator_id = coordinator_id

    def metadata(self) -> dict[str, str]:
        found = super().metadata()
        if self.coordinator:
            found.update(coordinator=self.coordinator, coordinator_id=self.coordinator_id)
        return found


class DeadlineExceeded(PraxisError):
    """The caller's deadline passed before the operation finished."""

    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(PraxisError):
    """The call carries no credential the node accepts (``api.auth``). The
    message never repeats the credential."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(PraxisError):
    """The caller's role does not allow the call; the message names the role needed."""

    default_reason = "PERMISSION_DENIED"


# Reasons of infrastructure failures, which every caller may retry.
CONSENSUS_UNAVAILABLE: Final = "CONSENSUS_UNAVAILABLE"
NOT_COORDINATOR: Final = "NOT_COORDINATOR"
STORE_UNAVAILABLE: Final = "STORE_UNAVAILABLE"
# How long a client should wait before retrying after an infrastructure failure.
INFRASTRUCTURE_RETRY_AFTER: Final = 1.0


def restore(
    kind: type[PraxisError], message: str, reason: str, metadata: Mapping[str, str]
) -> PraxisError:
    """The error of class ``kind`` that :meth:`PraxisError.metadata` and
    ``reason`` describe, with ``message`` as it is (another node's error,
    rebuilt from its structured details; the inverse of ``metadata``)."""
    retry_after = _milliseconds(metadata.get("retry_after_ms"))
    error: PraxisError
    if kind is InvalidArgument:
        error = InvalidArgument(metadata.get("field", "request"), "", reason=reason)
    elif kind is ResourceExhausted:
        error = ResourceExhausted(message, retry_after or 1.0, reason=reason)
    elif kind is Unavailable:
        error = Unavailable(
            message,
            metadata.get("coordinator", ""),
            metadata.get("coordinator_id", ""),
            reason=reason,
            retry_after=retry_after,
        )
    else:
        error = kind(message, reason=reason, retry_after=retry_after)
    error.message = message
    error.args = (message,)
    return error


def _milliseconds(value: str | None) -> float | None:
    try:
        return int(value) / 1000 if value is not None else None
    except ValueError:
        return None


class ToolError(Exception):
    """A tool failed while executing a task; the message is shown to the client.

    Raised by tool implementations. The engine records the task as FAILED with
    reason ``reason`` and this message; it is never converted to a gRPC error.
    """

    def __init__(self, message: str, reason: str = "TOOL_ERROR") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
