"""The server-wide bound on calls in progress (``api.max_concurrent_rpcs``).

grpc.aio's own ``maximum_concurrent_rpcs`` does the same job, but it costs
every call an event-loop callback (it releases the slot in a done-callback of
the call's task); this counts in the call's own coroutine instead, as one part
of the server's :class:`~praxis_grpc.api.interceptors.OnePass`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from praxis_grpc.api.interceptors import _HandlerInterceptor, _rebuilt

__all__ = ["REFUSAL_DETAILS", "CallLimit"]

Context = grpc.aio.ServicerContext[Any, Any]

# grpc.aio's words for the same refusal, kept so clients see no change.
REFUSAL_DETAILS = "Concurrent RPC limit exceeded!"


class CallLimit(_HandlerInterceptor):
    """At most ``limit`` calls (unary calls and streams alike, over all
    connections) in progress at once; the next one is answered
    ``RESOURCE_EXHAUSTED`` with :data:`REFUSAL_DETAILS` and no trailing
    metadata, before its handler runs, exactly as grpc.aio's
    ``maximum_concurrent_rpcs`` answers it. A call holds its slot until its
    handler returns or raises (a stream: until it ends).

    Install it first (outermost): a refused call then reaches no other part,
    so, as with grpc's limiter, it is not counted in the request metrics.
    One instance per server; runs on the server's event loop.

    Raises:
        ValueError: ``limit`` is below 1.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        super().__init__()
        self.limit = limit
        self.in_progress = 0

    def _wrap(self, handler: Any, full_method: str) -> Any:
        return _rebuilt(handler, lambda behavior, _: self._bounded(behavior))

    def _bounded(self, behavior: Callable[..., Any]) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def each(request: Any, context: Context) -> AsyncIterator[Any]:
                if self.in_progress >= self.limit:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSAL_DETAILS)
                self.in_progress += 1
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    self.in_progress -= 1

            return each

        async def one(request: Any, context: Context) -> Any:
            if self.in_progress >= self.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSAL_DETAILS)
            self.in_progress += 1
            try:
                return await behavior(request, context)
            finally:
                self.in_progress -= 1

        return one
