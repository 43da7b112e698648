"""The one mapping from domain errors to gRPC status codes, and back.

Servicer methods are decorated with :func:`translate_errors`; nothing else in
the code base chooses a status code for a domain error. Every status a node
chooses carries, in gRPC's rich status (``grpc-status-details-bin``), a
``google.rpc.ErrorInfo`` (reason, domain ``praxis.dev``, metadata) that
generated clients in any language read, a ``google.rpc.RetryInfo`` when a
retry may succeed, and plain trailers (``praxis-error``, ``retry-after-ms``,
``praxis-coordinator``) for grpcurl users. :func:`error_from_rpc` turns a
peer's status back into the domain error from those details alone.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from praxis_grpc import errors
from praxis_grpc.consensus.base import ConsensusError, NotLeader
from praxis_grpc.tasks.store import StoreUnavailable

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
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)


def domain_error(exc: BaseException) -> errors.PraxisError | None:
    """The domain error a client sees for ``exc``, or ``None`` if it has none
    (a bug: the call ends UNKNOWN).

    Infrastructure failures that reach a servicer are retryable
    :class:`~praxis_grpc.errors.Unavailable` errors with a retry hint: a
    consensus failure (no quorum, commit timeout) is ``CONSENSUS_UNAVAILABLE``,
    a deposed coordinator ``NOT_COORDINATOR`` (naming the leader it knows),
    a failure of the local store (:class:`StoreUnavailable`, ``sqlite3.Error``,
    ``OSError``) ``STORE_UNAVAILABLE``.
    """
    if isinstance(exc, errors.PraxisError):
        return exc
    retry = errors.INFRASTRUCTURE_RETRY_AFTER
    if isinstance(exc, NotLeader):
        leader = exc.leadership
        return errors.Unavailable(
            "this node is no longer the coordinator"
            + (f"; the coordinator is {leader.leader_address}" if leader.known else ""),
            coordinator=leader.leader_address,
            coordinator_id=leader.leader_id,
            reason=errors.NOT_COORDINATOR,
            retry_after=retry,
        )
    if isinstance(exc, ConsensusError):
        return errors.Unavailable(
            f"consensus failed ({errors.clip(str(exc))}); retry with the same task id"
            " or idempotency key",
            reason=errors.CONSENSUS_UNAVAILABLE,
            retry_after=retry,
        )
    if isinstance(exc, StoreUnavailable | sqlite3.Error | OSError):
        return errors.Unavailable(
            f"the node's task store failed ({errors.clip(str(exc) or type(exc).__name__)});"
            " retry, here or at another node",
            reason=errors.STORE_UNAVAILABLE,
            retry_after=retry,
        )
    return None


def status_for(exc: errors.PraxisError) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The status code and the plain trailing metadata that represent ``exc``
    (the rich status details are added by :func:`abort`)."""
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), grpc.StatusCode.UNKNOWN)
    metadata: tuple[tuple[str, str], ...] = ((ERROR_KEY, code.name.lower()),)
    if isinstance(exc, errors.ResourceExhausted):
        metadata += ((RETRY_AFTER_KEY, str(math.ceil(exc.retry_after * 1000))),)
    elif isinstance(exc, errors.Unavailable) and exc.coordinator:
        metadata += ((COORDINATOR_KEY, exc.coordinator), (COORDINATOR_ID_KEY, exc.coordinator_id))
    return code, metadata


def rich_status(exc: errors.PraxisError, code: grpc.StatusCode, message: str) -> status_pb2.Status:
    """The ``google.rpc.Status`` of ``exc``: an ``ErrorInfo`` detail (reason,
    :data:`~praxis_grpc.errors.ERROR_DOMAIN`, metadata) and, when a retry may
    succeed, a ``RetryInfo``."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(
            reason=exc.reason, domain=errors.ERROR_DOMAIN, metadata=exc.metadata()
        )
    )
    if exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(math.ceil(exc.retry_after * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def status_message(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE_BYTES` of UTF-8 (marked with an ellipsis)."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    return encoded[: MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "…"


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: errors.PraxisError) -> None:
    """End the call with the status that represents ``exc`` (raises grpc's AbortError)."""
    code, metadata = status_for(exc)
    message = status_message(exc.message)
    rich = rpc_status.to_status(rich_status(exc, code, message))
    await context.abort(code, message, trailing_metadata=metadata + rich.trailing_metadata)


def translate_errors(method: F) -> F:
    """Decorate a servicer method (coroutine or async generator) so that
    :class:`~praxis_grpc.errors.PraxisError`, and every infrastructure failure
    :func:`domain_error` knows, becomes the matching gRPC status."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except Exception as exc:
                await _abort_or_raise(context, exc)

        return stream  # type: ignore[return-value]

    unary: Callable[..., Awaitable[Any]] = method

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await unary(self, request, context)
        except Exception as exc:
            await _abort_or_raise(context, exc)

    return call  # type: ignore[return-value]


async def _abort_or_raise(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    error = domain_error(exc)
    if error is None:
        raise exc
    if error is not exc:
        log.warning("%s became %s: %r", type(exc).__name__, error.reason, exc)
    await abort(context, error)


_FROM_CODE: dict[grpc.StatusCode, type[errors.PraxisError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
}


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The praxis ``ErrorInfo`` detail of a failed call, or ``None`` if no
    praxis node chose the status (gRPC did, or another server)."""
    status = _rich_status(exc)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == errors.ERROR_DOMAIN:
            return info
    return None


def error_from_rpc(exc: grpc.aio.AioRpcError, peer: str) -> errors.PraxisError:
    """The domain error for a failed call to another node, ``peer`` naming it.

    The inverse of :func:`abort`: the reason and metadata come from the
    ``ErrorInfo`` detail, so an error raised on the node that owns a task
    reaches the client of the node that delegated it with the same code,
    reason and hints. A status no praxis node chose (the call failed in
    gRPC) becomes the error of its code with a generic reason; codes
    without a domain meaning become :class:`~praxis_grpc.errors.Unavailable`.
    """
    return _from_status(exc.code(), exc.details() or exc.code().name, error_info(exc), peer)


def error_from_status(status: status_pb2.Status, peer: str) -> errors.PraxisError:
    """:func:`error_from_rpc` for a ``google.rpc.Status`` received as data
    (a failed call on a multiplexed peer stream)."""
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    info = next((i for i in _infos(status) if i.domain == errors.ERROR_DOMAIN), None)
    return _from_status(code, status.message or code.name, info, peer)


def status_of(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` a servicer would end with for ``exc`` (see
    :func:`translate_errors`; UNKNOWN, with no details, for a bug)."""
    error = domain_error(exc)
    if error is None:
        log.error("unexpected error in a peer call", exc_info=exc)
        return status_pb2.Status(
            code=grpc.StatusCode.UNKNOWN.value[0], message=f"unexpected error: {exc!r}"
        )
    code, _ = status_for(error)
    return rich_status(error, code, status_message(error.message))


_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _infos(status: status_pb2.Status) -> list[error_details_pb2.ErrorInfo]:
    found = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            found.append(info)
    return found


def _from_status(
    code: grpc.StatusCode, detail: str, info: error_details_pb2.ErrorInfo | None, peer: str
) -> errors.PraxisError:
    kind = _FROM_CODE.get(code, errors.Unavailable)
    if info is None:
        if kind is errors.InvalidArgument:
            return errors.InvalidArgument("request", f"{peer}: {detail}")
        if kind is errors.ResourceExhausted:
            return errors.ResourceExhausted(f"{peer}: {detail}", retry_after=1.0)
        return kind(f"{peer}: {detail}")
    # An invalid argument names the caller's field: its message is kept as is.
    message = detail if kind is errors.InvalidArgument else f"{peer}: {detail}"
    return errors.restore(kind, message, info.reason, info.metadata)


def answered(exc: grpc.aio.AioRpcError) -> bool:
    """True if a praxis node chose this status; False if gRPC did (the peer
    could not be reached, or the connection broke before it answered)."""
    return error_info(exc) is not None


def retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """The ``RetryInfo`` delay of a failed call, in seconds, if it has one."""
    status = _rich_status(exc)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return None


def _rich_status(exc: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    try:
        # An AioRpcError has the methods of grpc.Call that from_call reads.
        status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, exc))
    except ValueError:  # details that do not match the status: not a praxis node's
        return None
    return status
