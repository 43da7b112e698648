"""The peer service's gate with ``cluster`` set: members only, and relays in their own name.

The peer listener already requires a client certificate from the cluster CA
(mutual TLS). That CA may also sign certificates for users of the public API,
so the certificate must also name a libp2p peer id (``praxis:peer:`` SAN,
which only node certificates carry): otherwise ``UNAUTHENTICATED``. A relay
(``relayed_by``) must name that same peer id: otherwise ``PERMISSION_DENIED``.
Dispatches keep their ``origin_agent_id``, which names the task's owner of
record (a coordinator's ``"coordinator"``, or the original owner on a
hand-over), not the caller; their fencing tokens now come from members only.

A member whose certificate ``cluster.revoked`` names (its peer id or the
certificate's serial) is ``UNAUTHENTICATED``. Each member has at most
``cluster.max_calls_per_peer`` calls and streams in progress here (a
``Session`` stream is one, however many calls it carries); one more is
refused ``RESOURCE_EXHAUSTED`` before it reaches the service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from praxis_grpc.api.interceptors import _HandlerInterceptor, _rebuilt
from praxis_grpc.call_slots import PerPeerSlots
from praxis_grpc.cluster import caller_identity
from praxis_grpc.revocation import NOTHING_REVOKED, Revocations

__all__ = ["MembersOnly"]

Context = grpc.aio.ServicerContext[Any, Any]


class MembersOnly(_HandlerInterceptor):
    """Refuses calls whose TLS client certificate names no member or a revoked one,
    and a member's calls past its share of ``slots`` (see the module);
    ``on_refused`` is called with the reason (``revoked``, ``per_peer_limit``) of
    each call refused for the last two."""

    def __init__(
        self,
        slots: PerPeerSlots,
        on_refused: Callable[[str], None],
        revoked: Revocations = NOTHING_REVOKED,
    ) -> None:
        super().__init__()
        self._gate = _Gate(slots, on_refused, revoked)

    def _wrap(self, handler: Any, full_method: str) -> Any:
        gate = self._gate.streamed if handler.response_streaming else self._gate.unary
        return _rebuilt(handler, lambda behavior, _: gate(behavior))


class _Gate:
    def __init__(
        self, slots: PerPeerSlots, on_refused: Callable[[str], None], revoked: Revocations
    ) -> None:
        self._slots = slots
        self._on_refused = on_refused
        self._revoked = revoked

    async def enter(self, request: Any, context: Context) -> str:
        """The calling member, holding a slot (released by the caller of this)."""
        caller, serial = await _admit(request, context)
        if self._revoked.refuses(caller, serial):
            self._on_refused("revoked")
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the client certificate of {caller} is revoked (cluster.revoked)",
            )
        if not self._slots.acquire(caller):
            self._on_refused("per_peer_limit")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{caller} has {self._slots.limit} peer calls in progress here already "
                "(cluster.max_calls_per_peer)",
            )
        return caller

    def unary(self, behavior: Any) -> Any:
        async def gated(request: Any, context: Context) -> Any:
            caller = await self.enter(request, context)
            try:
                return await behavior(request, context)
            finally:
                self._slots.release(caller)

        return gated

    def streamed(self, behavior: Any) -> Any:
        async def gated(request: Any, context: Context) -> AsyncIterator[Any]:
            caller = await self.enter(request, context)
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                self._slots.release(caller)

        return gated


async def _admit(request: Any, context: Context) -> tuple[str, int]:
    identity = caller_identity(context.auth_context())
    if identity is None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "the peer service takes calls from cluster members only: the client "
            "certificate names no praxis:peer: id",
        )
    caller = identity[0]
    relayed_by = getattr(request, "relayed_by", None)
    if isinstance(relayed_by, str) and relayed_by != caller:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"relayed_by: {relayed_by!r} is not the calling member {caller}",
        )
    return identity
