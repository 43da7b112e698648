"""Server interceptors, applied to every RPC including health and reflection:
request metrics, and the refusal of requests that cannot be decoded."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from praxis_grpc import errors
from praxis_grpc.api.errors import abort
from praxis_grpc.metrics import Metrics

Context = grpc.aio.ServicerContext[Any, Any]
# Wraps a handler's behaviour; the second argument says whether the behaviour
# takes a stream of requests.
BehaviorWrapper = Callable[[Callable[..., Any], bool], Any]

log = logging.getLogger(__name__)


class _HandlerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Replaces each method's handler by a wrapped one, built once per method."""

    def __init__(self) -> None:
        # method -> (registered handler, wrapped handler); handlers are per method.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        # grpc's type stubs describe sync handlers; aio handlers hold coroutines.
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, handler_call_details.method)
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, full_method: str) -> Any:
        raise NotImplementedError


class OnePass(_HandlerInterceptor):
    """Handler interceptors run as one: ``OnePass(a, b, c)`` wraps each
    method's handler exactly as ``interceptors=[a, b, c]`` would (``a``
    outermost: it sees what ``b`` and ``c`` refuse), once per method, but
    grpc runs one interceptor per call instead of three (each costs it a
    coroutine, a continuation and a lookup per call)."""

    def __init__(self, *parts: _HandlerInterceptor) -> None:
        super().__init__()
        self._parts = parts

    def _wrap(self, handler: Any, full_method: str) -> Any:
        for part in reversed(self._parts):
            handler = part._wrap(handler, full_method)
        return handler


def _rebuilt(handler: Any, wrap: BehaviorWrapper, request_deserializer: Any | None = None) -> Any:
    """``handler`` with its behaviour wrapped (and, if given, its deserializer replaced)."""
    deserializer = request_deserializer or handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, False),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, True),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap(handler.stream_stream, True),
        request_deserializer=deserializer,
        response_serializer=serializer,
    )


class MetricsInterceptor(_HandlerInterceptor):
    """Counts requests by service, method and final status code, and times them."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def _wrap(self, handler: Any, full_method: str) -> Any:
        service, _, method = full_method.lstrip("/").rpartition("/")
        observe = _Observer(self._metrics, service or "unknown", method)
        return _rebuilt(handler, lambda behavior, _: observe.stream(behavior))


@dataclass(frozen=True)
class SizeLimit:
    """The largest request of one method, checked on the raw bytes before
    they are decoded (decoding a large message costs memory and CPU even when
    validation then refuses it).

    Attributes:
        max_bytes: Largest serialized request accepted.
        field: The field named in the refusal (the one that can be large).
        rule: What the limit is made of, for the message.
    """

    max_bytes: int
    field: str
    rule: str


class RequestDecodingInterceptor(_HandlerInterceptor):
    """Answers a request that cannot be decoded (invalid UTF-8 in a string,
    a truncated message, a bad wire type, nesting past protobuf's limit) with
    INVALID_ARGUMENT ``request: cannot be decoded as <message type>`` and a
    ``praxis-error`` trailer, instead of grpc's UNKNOWN and a traceback; and a
    request above its method's :class:`SizeLimit` (full method name ->
    limit) with INVALID_ARGUMENT naming the limit's field, without decoding it.

    Such requests are logged as a warning at most once per ``log_interval``
    seconds, with the count of those not logged. Install it after (inside)
    :class:`MetricsInterceptor`, so refusals are counted.
    """

    def __init__(
        self,
        log_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        size_limits: Mapping[str, SizeLimit] | None = None,
    ) -> None:
        super().__init__()
        self._log = ThrottledLog(log, log_interval, clock)
        self._size_limits = dict(size_limits or {})

    def _wrap(self, handler: Any, full_method: str) -> Any:
        deserializer = handler.request_deserializer
        if deserializer is None:
            return handler  # the behaviour takes the raw bytes
        message = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
        name = message.full_name if message is not None else "the request message"
        undecodable = _Refused(errors.InvalidArgument("request", f"cannot be decoded as {name}"))
        limit = self._size_limits.get(full_method)

        def decode(raw: bytes) -> Any:
            if limit is not None and len(raw) > limit.max_bytes:
                return _Refused(
                    errors.InvalidArgument(
                        limit.field,
                        f"request of {len(raw)} bytes exceeds the limit of {limit.max_bytes} "
                        f"bytes ({limit.rule})",
                    )
                )
            try:
                return deserializer(raw)
            except Exception as exc:  # any failure to parse client bytes is the client's
                self._log.warning(
                    "%s: request of %d bytes cannot be decoded as %s (%s)",
                    full_method,
                    len(raw),
                    name,
                    errors.clip(str(exc)),
                )
                return undecodable

        return _rebuilt(handler, _refusing, decode)


class _Refused:
    """Stands in for a request refused while decoding."""

    def __init__(self, error: errors.PraxisError) -> None:
        self.error = error


def _refusing(behavior: Callable[..., Any], streamed: bool) -> Any:
    """``behavior``, answering a request refused while decoding with its error."""
    if streamed:

        async def requests(iterator: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for request in iterator:
                if isinstance(request, _Refused):
                    await abort(context, request.error)
                yield request

        if inspect.isasyncgenfunction(behavior):

            async def each_of_stream(iterator: Any, context: Context) -> AsyncIterator[Any]:
                async for response in behavior(requests(iterator, context), context):
                    yield response

            return each_of_stream

        async def one_of_stream(iterator: Any, context: Context) -> Any:
            return await behavior(requests(iterator, context), context)

        return one_of_stream

    if inspect.isasyncgenfunction(behavior):

        async def each(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, _Refused):
                await abort(context, request.error)
            async for response in behavior(request, context):
                yield response

        return each

    async def one(request: Any, context: Context) -> Any:
        if isinstance(request, _Refused):
            await abort(context, request.error)
        return await behavior(request, context)

    return one


class ThrottledLog:
    """Logs a recurring warning at most once per ``interval`` seconds; the next
    one logged says how many were suppressed in between. Not thread-safe."""

    def __init__(
        self, logger: logging.Logger, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._quiet_until = -float("inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` unless one was logged less than ``interval`` ago."""
        now = self._clock()
        if now < self._quiet_until:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d more like it not logged)"
            args = (*args, self._suppressed)
        self._logger.warning(message, *args)
        self._suppressed = 0
        self._quiet_until = now + self._interval


class _Observer:
    def __init__(self, metrics: Metrics, service: str, method: str) -> None:
        self._requests = metrics.grpc_server_requests_total
        self._duration = metrics.grpc_server_request_duration_seconds.labels(service, method)
        self._service = service
        self._method = method
        # The labelled child per status code (a labels() lookup costs more than inc()).
        self._by_code: dict[object, Any] = {}

    def record(self, context: Context, started: float, failure: BaseException | None) -> None:
        code = context.code()
        if code is None or (code == grpc.StatusCode.OK and failure is not None):
            code = grpc.StatusCode.OK if failure is None else _code_of(failure)
        counter = self._by_code.get(code)
        if counter is None:
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            counter = self._requests.labels(self._service, self._method, name)
            self._by_code[code] = counter
        counter.inc()
        self._duration.observe(time.perf_counter() - started)

    def unary(self, behavior: Callable[[Any, Context], Awaitable[Any]]) -> Any:
        async def call(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            failure: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self.record(context, started, failure)

        return call

    def stream(self, behavior: Callable[[Any, Context], Any]) -> Any:
        if not inspect.isasyncgenfunction(behavior):
            # A handler that writes with context.write() and returns (as the
            # health service's Watch does) is observed like a unary one.
            return self.unary(behavior)

        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            failure: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self.record(context, started, failure)

        return call


def _code_of(failure: BaseException) -> grpc.StatusCode:
    if isinstance(failure, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
