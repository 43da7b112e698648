"""The one mapping from domain errors to gRPC status codes.

Servicer methods are decorated with :func:`translate_errors`; nothing else in
the code base chooses a status code for a domain error.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from praxis_grpc import errors

RETRY_AFTER_KEY = "retry-after-ms"
COORDINATOR_KEY = "praxis-coordinator"
COORDINATOR_ID_KEY = "praxis-coordinator-id"
# Every status a praxis node chooses carries this trailer (the error's kind),
# so a caller tells "the node answered UNAVAILABLE" from "the call never got
# an answer" (connection refused or reset: gRPC's own UNAVAILABLE).
ERROR_KEY = "praxis-error"
# The longest status message a node sends, in UTF-8 bytes. Messages quote at
# most ~100 characters of a client's value (praxis_grpc.errors.quote); this is
# the last guard, far below the 8 KiB of metadata a default client accepts.
MAX_MESSAGE_BYTES = 1024

_CODES: dict[type[errors.PraxisError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

F = TypeVar("F", bound=Callable[..., Any])


def status_for(exc: errors.PraxisError) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The status code and trailing metadata that represent ``exc``."""
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), grpc.StatusCode.UNKNOWN)
    metadata: tuple[tuple[str, str], ...] = ((ERROR_KEY, code.name.lower()),)
    if isinstance(exc, errors.ResourceExhausted):
        metadata += ((RETRY_AFTER_KEY, str(math.ceil(exc.retry_after * 1000))),)
    elif isinstance(exc, errors.Unavailable) and exc.coordinator:
        metadata += ((COORDINATOR_KEY, exc.coordinator), (COORDINATOR_ID_KEY, exc.coordinator_id))
    return code, metadata


def status_message(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE_BYTES` of UTF-8 (marked with an ellipsis)."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    return encoded[: MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "…"


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: errors.PraxisError) -> None:
    """End the call with the status that represents ``exc`` (raises grpc's AbortError)."""
    code, metadata = status_for(exc)
    await context.abort(code, status_message(exc.message), trailing_metadata=metadata)


def translate_errors(method: F) -> F:
    """Decorate a servicer method (coroutine or async generator) so that
    :class:`~praxis_grpc.errors.PraxisError` becomes the matching gRPC status."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except errors.PraxisError as exc:
                await abort(context, exc)

        return stream  # type: ignore[return-value]

    unary: Callable[..., Awaitable[Any]] = method

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await unary(self, request, context)
        except errors.PraxisError as exc:
            await abort(context, exc)

    return call  # type: ignore[return-value]


_FROM_CODE: dict[grpc.StatusCode, type[errors.PraxisError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
}


def error_from_rpc(exc: grpc.aio.AioRpcError, peer: str) -> errors.PraxisError:
    """The domain error for a failed call to another node, ``peer`` naming it.

    The inverse of :func:`status_for`, so an error raised on the node that owns
    a task reaches the client of the node that delegated it with the same code.
    Codes without a domain meaning become :class:`~praxis_grpc.errors.Unavailable`.
    """
    code = exc.code()
    detail = exc.details() or code.name
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        field, _, message = detail.partition(": ")
        return (
            errors.InvalidArgument(field, message)
            if message
            else errors.InvalidArgument("request", detail)
        )
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(f"{peer}: {detail}", retry_after=retry_after(exc) or 1.0)
    if code is grpc.StatusCode.UNAVAILABLE:
        hints = _trailers(exc)
        return errors.Unavailable(
            f"{peer}: {detail}",
            coordinator=hints.get(COORDINATOR_KEY, ""),
            coordinator_id=hints.get(COORDINATOR_ID_KEY, ""),
        )
    kind = _FROM_CODE.get(code, errors.Unavailable)
    return kind(f"{peer}: {detail}")


def answered(exc: grpc.aio.AioRpcError) -> bool:
    """True if a praxis node chose this status; False if gRPC did (the peer
    could not be reached, or the connection broke before it answered)."""
    return ERROR_KEY in _trailers(exc)


def retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """The ``retry-after-ms`` hint of a RESOURCE_EXHAUSTED error, in seconds."""
    value = _trailers(exc).get(RETRY_AFTER_KEY)
    try:
        return int(value) / 1000 if value is not None else None
    except ValueError:
        return None


def _trailers(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    # grpc.aio yields (key, value) tuples, whatever the stubs say.
    metadata: Any = exc.trailing_metadata() or ()
    return {str(key): str(value) for key, value in metadata}
