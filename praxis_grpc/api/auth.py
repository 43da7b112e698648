"""Who may call what on the public API: bearer tokens with roles (``api.auth``).

:class:`AuthInterceptor` is the one place that authenticates and authorises
public calls. Each method of ``praxis.v1`` needs the least role that
:data:`METHOD_ROLES` gives it; a method served but missing from the table is
refused to everyone (a new RPC is never open by accident, and a test checks
the table against the service descriptors). Health and reflection are open
unless ``api.auth.open_health`` / ``open_reflection`` say otherwise; then
they need ``reader``.

The caller of the call being served is :func:`current_caller`: the task
service records it as a task's ``submitter`` and shows a ``client`` only its
own tasks. Without ``api.auth.tokens_file`` nothing is checked and every
call is :data:`ANONYMOUS` (an admin named "").
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from praxis_grpc.api.errors import abort
from praxis_grpc.api.interceptors import ThrottledLog, _HandlerInterceptor, _rebuilt
from praxis_grpc.api.tokens import Role, TokenStore
from praxis_grpc.errors import PermissionDenied, PraxisError, Unauthenticated

__all__ = [
    "ANONYMOUS",
    "METHOD_ROLES",
    "AuthInterceptor",
    "Caller",
    "current_caller",
]

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)

METHOD_ROLES: dict[str, Role] = {
    "/praxis.v1.AgentService/GetAgent": Role.READER,
    "/praxis.v1.AgentService/ListPeers": Role.READER,
    "/praxis.v1.AgentService/Drain": Role.ADMIN,
    "/praxis.v1.CardService/GetCard": Role.READER,
    "/praxis.v1.CardService/ListCards": Role.READER,
    "/praxis.v1.CardService/WatchCards": Role.READER,
    # A client reads and cancels only its own tasks: the task service checks
    # the submitter (current_caller); a reader reads every task.
    "/praxis.v1.TaskService/SubmitTask": Role.CLIENT,
    "/praxis.v1.TaskService/GetTask": Role.READER,
    "/praxis.v1.TaskService/ListTasks": Role.READER,
    "/praxis.v1.TaskService/CancelTask": Role.CLIENT,
    "/praxis.v1.TaskService/WatchTask": Role.READER,
}
"""The least role each public method needs (full method name -> role)."""

_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# The private node-to-node service shares the server but not these tokens:
# only cluster members may call it, and that is checked by the peer
# authentication of the mesh (mutual TLS with node certificates / per-call
# proofs; see SECURITY.md "Mesh"), not here.
_PEER_PREFIX = "/praxis.peer.v1."


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of a public call.

    Attributes:
        name: The token's name (a task's ``submitter``); "" without auth.
        role: What the token may do.
    """

    name: str
    role: Role

    @property
    def sees_all_tasks(self) -> bool:
        """False for a ``client``: it sees and cancels only tasks it submitted."""
        return self.role is not Role.CLIENT

    def owns(self, submitter: str) -> bool:
        """True if this caller may see a task submitted by ``submitter``."""
        return self.sees_all_tasks or submitter == self.name


ANONYMOUS = Caller("", Role.ADMIN)
"""The caller of every call on a node without ``api.auth.tokens_file``."""

_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("praxis_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the public call being served (each call runs in its own
    asyncio task, hence its own context); :data:`ANONYMOUS` outside one or
    without auth."""
    return _CALLER.get()


class AuthInterceptor(_HandlerInterceptor):
    """Authenticates the bearer token of each public call (metadata
    ``authorization: Bearer <token>``) against ``tokens`` and checks its role.

    Answers UNAUTHENTICATED when the token is missing or unknown and
    PERMISSION_DENIED when its role is below the method's; both messages name
    what is needed, never the token. Refusals are logged (throttled) with the
    method and the peer address. Install it first (outermost) but after
    :class:`~praxis_grpc.api.interceptors.MetricsInterceptor`, so refusals
    are counted.

    Args:
        tokens: The accepted tokens.
        open_health: Health checks need no token.
        open_reflection: Server reflection needs no token.
    """

    def __init__(
        self,
        tokens: TokenStore,
        *,
        open_health: bool = True,
        open_reflection: bool = True,
        log_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._tokens = tokens
        self._open_health = open_health
        self._open_reflection = open_reflection
        self._log = ThrottledLog(log, log_interval, clock)

    def required_role(self, full_method: str) -> Role | None:
        """The least role ``full_method`` needs, None if it is open to anyone.

        Raises:
            PermissionDenied: a method no role may call (not in the table).
        """
        if full_method.startswith(_HEALTH_PREFIX):
            return None if self._open_health else Role.READER
        if full_method.startswith(_REFLECTION_PREFIXES):
            return None if self._open_reflection else Role.READER
        role = METHOD_ROLES.get(full_method)
        if role is None:
            raise PermissionDenied(f"{full_method} is not open to any role on this node")
        return role

    def _wrap(self, handler: Any, full_method: str) -> Any:
        if full_method.startswith(_PEER_PREFIX):
            return handler  # members only: see _PEER_PREFIX
        try:
            needed = self.required_role(full_method)
        except PermissionDenied as exc:
            log.error("%s is served but has no role in api.auth.METHOD_ROLES", full_method)
            refusal: PraxisError = exc
            return _rebuilt(handler, lambda behavior, _: _guarded(behavior, lambda _c: refusal))
        if needed is None:
            return handler
        return _rebuilt(
            handler,
            lambda behavior, _: _guarded(behavior, lambda c: self._admit(c, full_method, needed)),
        )

    def _admit(self, context: Context, full_method: str, needed: Role) -> Caller | PraxisError:
        """The caller of ``context`` if its token allows ``needed``, else the refusal."""
        refusal: PraxisError
        token = _bearer(context)
        if token is None:
            refusal = Unauthenticated(
                f"{full_method} needs a token with the role {needed.label!r} or above: "
                "send the metadata 'authorization: Bearer <token>'"
            )
        else:
            entry = self._tokens.authenticate(token)
            if entry is None:
                refusal = Unauthenticated("the bearer token is not valid on this node")
            elif entry.role < needed:
                refusal = PermissionDenied(
                    f"{full_method} needs the role {needed.label!r}; the token {entry.name!r} "
                    f"has the role {entry.role.label!r}"
                )
            else:
                return Caller(entry.name, entry.role)
        self._log.warning("refused %s from %s: %s", full_method, context.peer(), refusal.message)
        return refusal


def _bearer(context: Context) -> str | None:
    """The token of the call's ``authorization: Bearer`` metadata, or None."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _guarded(behavior: Callable[..., Any], admit: Callable[[Context], Any]) -> Any:
    """``behavior`` run as the caller ``admit`` returns, or refused with the
    error it returns instead. The caller is set in the call's own context."""
    if inspect.isasyncgenfunction(behavior):

        async def each(request: Any, context: Context) -> AsyncIterator[Any]:
            await _enter(admit, context)
            async for response in behavior(request, context):
                yield response

        return each

    async def one(request: Any, context: Context) -> Any:
        await _enter(admit, context)
        return await behavior(request, context)

    return one


async def _enter(admit: Callable[[Context], Caller | PraxisError], context: Context) -> None:
    outcome = admit(context)
    if isinstance(outcome, PraxisError):
        await abort(context, outcome)
    else:
        _CALLER.set(outcome)
