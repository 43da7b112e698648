"""Server interceptors: request metrics for every RPC, including health and reflection."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from praxis_grpc.metrics import Metrics

Context = grpc.aio.ServicerContext[Any, Any]


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts requests by service, method and final status code, and times them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
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
        service, _, method = full_method.lstrip("/").rpartition("/")
        observe = _Observer(self._metrics, service or "unknown", method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                observe.unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                observe.stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                observe.unary(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            observe.stream(handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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
