"""What a member presents to etcd: TLS (``ha.consensus.etcd.tls``) and a
user's password (``username`` / ``password`` or ``password_file``).

With a user, every call carries etcd's auth token (metadata ``token``),
obtained with ``Auth.Authenticate`` on the first call and shared by every
endpoint of the member. It is fetched again once a minute (so a JWT token
with a TTL above a minute never expires in use; etcd checks a stream's token
when the stream starts) and when etcd refuses it (an auth store that
changed): a unary call is then retried once with the new token. The password
and the token never appear in a log line or an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from praxis_grpc.config import EtcdConfig
from praxis_grpc.consensus.base import ConsensusError

__all__ = ["EtcdCredentials", "EtcdToken", "credentials_of", "token_interceptors"]

# grpc.aio passes the method name to interceptors as bytes.
_AUTHENTICATE = (b"/etcdserverpb.Auth/Authenticate", "/etcdserverpb.Auth/Authenticate")
_AUTH_TIMEOUT = 5.0
# etcd's answers to a token it no longer accepts (rpctypes.ErrGRPCInvalidAuthToken,
# ErrGRPCAuthOldRevision): the etcd client, too, authenticates again on these.
_REFUSED_TOKEN = ("etcdserver: invalid auth token", "etcdserver: revision of auth store is old")


@dataclass(frozen=True)
class EtcdCredentials:
    """TLS credentials (None: plaintext) and an etcd user ("" for none)."""

    tls: grpc.ChannelCredentials | None = None
    username: str = ""
    password: str = field(default="", repr=False)


def credentials_of(config: EtcdConfig) -> EtcdCredentials:
    """The credentials ``config`` names, its files read now.

    Raises:
        ConsensusError: a file cannot be read or is empty; the message names its key.
    """
    tls = None
    if config.tls is not None:
        files = {
            key: _read(f"tls.{key}", path)
            for key, path in (
                ("ca", config.tls.ca),
                ("cert", config.tls.cert),
                ("key", config.tls.key),
            )
        }
        tls = grpc.ssl_channel_credentials(
            root_certificates=files["ca"], private_key=files["key"], certificate_chain=files["cert"]
        )
    password = config.password
    if config.password_file is not None:
        raw = _read("password_file", config.password_file)
        password = (raw or b"").decode("utf-8", "replace").strip()
        if not password:
            raise ConsensusError(f"ha.consensus.etcd.password_file {config.password_file} is empty")
    return EtcdCredentials(tls, config.username, password)


def _read(key: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConsensusError(
            f"ha.consensus.etcd.{key} {path}: cannot read it ({exc.strerror})"
        ) from None


class EtcdToken:
    """The auth token of one etcd user, shared by a member's endpoints.
    Used on one event loop."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._request = rpc_pb2.AuthenticateRequest(name=username, password=password)
        self._token = ""
        self._fetched = 0.0
        self._max_age = max_age
        self._clock = clock
        self._lock = asyncio.Lock()

    async def get(self, channel: grpc.aio.Channel) -> str:
        """The current token, authenticating over ``channel`` if there is none.

        Raises:
            grpc.aio.AioRpcError: etcd refused the user (``INVALID_ARGUMENT``
                "authentication failed") or could not be reached.
        """
        async with self._lock:
            if not self._token or self._clock() - self._fetched > self._max_age:
                response = await rpc_pb2_grpc.AuthStub(channel).Authenticate(
                    self._request, timeout=_AUTH_TIMEOUT
                )
                self._token, self._fetched = response.token, self._clock()
            return self._token

    def refused(self, token: str) -> None:
        """etcd refused ``token``: the next :meth:`get` authenticates again."""
        if self._token == token:
            self._token = ""


def refuses_token(exc: grpc.aio.AioRpcError) -> bool:
    """True if etcd failed the call because of its auth token."""
    return (exc.details() or "") in _REFUSED_TOKEN


def token_interceptors(token: EtcdToken) -> tuple[list[Any], _Channel]:
    """Interceptors adding ``token`` to every call of a channel, and the slot
    the channel is put in once made (they authenticate over it)."""
    slot = _Channel()
    return [kind(token, slot) for kind in _KINDS], slot


class _Channel:
    channel: grpc.aio.Channel | None = None


class _WithToken:
    def __init__(self, token: EtcdToken, slot: _Channel) -> None:
        self._token = token
        self._slot = slot

    async def _details(self, details: Any) -> tuple[Any, str]:
        assert self._slot.channel is not None, "token interceptors used before their channel"
        token = await self._token.get(self._slot.channel)
        metadata = grpc.aio.Metadata(*(details.metadata or ()), ("token", token))
        return details._replace(metadata=metadata), token


class _UnaryUnary(_WithToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method in _AUTHENTICATE:
            return await continuation(details, request)
        for last in (False, True):
            with_token, token = await self._details(details)
            call = await continuation(with_token, request)
            try:
                return await call
            except grpc.aio.AioRpcError as exc:
                if last or not refuses_token(exc):
                    raise
                self._token.refused(token)
        raise AssertionError("unreachable")


class _UnaryStream(_WithToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        with_token, _ = await self._details(details)
        return await continuation(with_token, request)


class _StreamStream(_WithToken, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        with_token, _ = await self._details(details)
        return await continuation(with_token, request_iterator)


_KINDS = (_UnaryUnary, _UnaryStream, _StreamStream)
