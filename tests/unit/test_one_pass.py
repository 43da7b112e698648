"""OnePass: several handler interceptors applied as one grpc interceptor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from praxis_grpc.api.interceptors import OnePass, _HandlerInterceptor, _rebuilt


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Tag(_HandlerInterceptor):
    """Records its name each time a call passes through it."""

    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__()
        self._name, self._calls = name, calls

    def _wrap(self, handler: Any, full_method: str) -> Any:
        return _rebuilt(handler, lambda behavior, _: self._tagged(behavior))

    def _tagged(self, behavior: Callable[..., Awaitable[Any]]) -> Any:
        async def call(request: Any, context: Any) -> Any:
            self._calls.append(self._name)
            return await behavior(request, context)

        return call


async def test_one_pass_wraps_a_handler_as_the_chain_would_once_per_method() -> None:
    calls: list[str] = []

    async def behavior(request: str, context: Any) -> str:
        calls.append("handler")
        return request + "!"

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details: Any) -> Any:
        return handler if details.method == "/s.S/M" else None

    one = OnePass(Tag("outer", calls), Tag("inner", calls))
    details = Details("/s.S/M")
    wrapped = await one.intercept_service(continuation, details)
    assert await wrapped.unary_unary("hi", None) == "hi!"
    assert calls == ["outer", "inner", "handler"]  # the first given is outermost
    assert await one.intercept_service(continuation, details) is wrapped  # built once
    unknown = Details("/s.S/Other")
    assert await one.intercept_service(continuation, unknown) is None  # left to grpc
