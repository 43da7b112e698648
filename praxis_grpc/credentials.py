"""What a client presents to a node's public API: TLS (a CA to check the
node's certificate, and a client certificate for mutual TLS) and a bearer
token (``api.auth``).

The token is sent as ``authorization: Bearer <token>`` metadata on every
call, over TLS or not (as etcd does; send tokens in plaintext only on a
trusted network). It is kept out of ``repr`` so it cannot reach a log line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

__all__ = ["ClientCredentials"]

Options = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class ClientCredentials:
    """A client's TLS files and token; all empty is a plaintext, anonymous client.

    Attributes:
        cacert: PEM CA that signed the node's certificate; with ``cert``
            unset, TLS is used when this is set.
        cert, key: PEM client certificate and key (mutual TLS); both or neither.
        token: The bearer token, or "".
        tls: Use TLS even without ``cacert`` (the system's CA roots).
    """

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str = field(default="", repr=False)
    tls: bool = False

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both cert and key")

    @property
    def secure(self) -> bool:
        """True when the channel uses TLS."""
        return self.tls or self.cacert is not None or self.cert is not None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The TLS credentials, None for plaintext.

        Raises:
            OSError: a file cannot be read.
        """
        if not self.secure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.cacert),
            private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent on every call."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self, target: str, options: Options = ()) -> grpc.Channel:
        """A blocking channel to ``target`` presenting these credentials."""
        tls = self.channel_credentials()
        if tls is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, tls, options=options)
        if not self.token:
            return channel
        return grpc.intercept_channel(channel, _Metadata(self.metadata()))

    def aio_channel(self, target: str, options: Options = ()) -> grpc.aio.Channel:
        """An asyncio channel to ``target`` presenting these credentials."""
        interceptors: list[Any] = [kind(self.metadata()) for kind in _AIO_KINDS if self.token]
        tls = self.channel_credentials()
        if tls is None:
            return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        return grpc.aio.secure_channel(target, tls, options=options, interceptors=interceptors)


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _with_metadata(details: Any, extra: tuple[tuple[str, str], ...], aio: bool) -> Any:
    """``details`` (grpc's call details: a namedtuple) with ``extra`` metadata added."""
    metadata: Any = (*(details.metadata or ()), *extra)
    if aio:
        metadata = grpc.aio.Metadata(*metadata)
    return details._replace(metadata=metadata)


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds fixed metadata to every call of a blocking channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._extra = metadata

    def _details(self, details: Any) -> Any:
        return _with_metadata(details, self._extra, aio=False)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioMetadata:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._extra = metadata

    def _details(self, details: Any) -> Any:
        return _with_metadata(details, self._extra, aio=True)


class _AioUnaryUnary(_AioMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStream(_AioMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnary(_AioMetadata, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AioStreamStream(_AioMetadata, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


_AIO_KINDS = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
