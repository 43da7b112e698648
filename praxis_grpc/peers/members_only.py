"""The peer service's gate with ``cluster`` set: members only, and relays in their own name.

The peer listener already requires a client certificate from the cluster CA
(mutual TLS). That CA may also sign certificates for users of the public API,
so the certificate must also name a libp2p peer id (``praxis:peer:`` SAN,
which only node certificates carry): otherwise ``UNAUTHENTICATED``. A relay
(``relayed_by``) must name that same peer id: otherwise ``PERMISSION_DENIED``.
Dispatches keep their ``origin_agent_id``, which names the task's owner of
record (a coordinator's ``"coordinator"``, or the original owner on a
hand-over), not the caller; their fencing tokens now come from members only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from praxis_grpc.api.interceptors import _HandlerInterceptor, _rebuilt
from praxis_grpc.cluster import caller_peer_id

__all__ = ["MembersOnly"]

Context = grpc.aio.ServicerContext[Any, Any]


class MembersOnly(_HandlerInterceptor):
    """Refuses calls whose TLS client certificate names no member (see the module)."""

    def _wrap(self, handler: Any, full_method: str) -> Any:
        gate = _streamed if handler.response_streaming else _unary
        return _rebuilt(handler, lambda behavior, _: gate(behavior))


async def _admit(request: Any, context: Context) -> None:
    caller = caller_peer_id(context.auth_context())
    if caller is None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "the peer service takes calls from cluster members only: the client "
            "certificate names no praxis:peer: id",
        )
    relayed_by = getattr(request, "relayed_by", None)
    if isinstance(relayed_by, str) and relayed_by != caller:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"relayed_by: {relayed_by!r} is not the calling member {caller}",
        )


def _unary(behavior: Any) -> Any:
    async def gated(request: Any, context: Context) -> Any:
        await _admit(request, context)
        return await behavior(request, context)

    return gated


def _streamed(behavior: Any) -> Any:
    async def gated(request: Any, context: Context) -> AsyncIterator[Any]:
        await _admit(request, context)
        async for response in behavior(request, context):
            yield response

    return gated
