"""The public server's security from ``api.tls`` and ``api.auth``: its TLS
credentials, its tokens and the interceptor that checks them. Files are
read when the node starts (a restart picks up new ones)."""

from __future__ import annotations

import grpc

from praxis_grpc.api.auth import AuthInterceptor
from praxis_grpc.api.tokens import TokenFileError, TokenStore
from praxis_grpc.config import ApiAuthConfig, ApiTlsConfig

__all__ = ["SecuritySettingsError", "api_tokens", "auth_interceptors", "server_credentials"]


class SecuritySettingsError(Exception):
    """A file of ``api.tls`` or ``api.auth`` cannot be used; the message
    starts with the config key."""


def api_tokens(auth: ApiAuthConfig) -> TokenStore | None:
    """The tokens of ``api.auth.tokens_file``; None without one (no auth).

    Raises:
        SecuritySettingsError: the file cannot be read or is malformed.
    """
    if auth.tokens_file is None:
        return None
    try:
        return TokenStore.load(auth.tokens_file)
    except TokenFileError as exc:
        raise SecuritySettingsError(f"api.auth.tokens_file: {exc}") from None


def auth_interceptors(auth: ApiAuthConfig, tokens: TokenStore | None) -> list[AuthInterceptor]:
    """The interceptor checking ``tokens`` (none without tokens)."""
    if tokens is None:
        return []
    return [
        AuthInterceptor(tokens, open_health=auth.open_health, open_reflection=auth.open_reflection)
    ]


def server_credentials(tls: ApiTlsConfig | None) -> grpc.ServerCredentials | None:
    """The TLS credentials of ``api.tls`` (None: plaintext), requiring client
    certificates when ``client_ca`` is set.

    Raises:
        SecuritySettingsError: a file cannot be read, naming its key.
    """
    if tls is None:
        return None
    read: dict[str, bytes] = {}
    for key, path in (("cert", tls.cert), ("key", tls.key), ("client_ca", tls.client_ca)):
        if path is None:
            continue
        try:
            read[key] = path.read_bytes()
        except OSError as exc:
            raise SecuritySettingsError(
                f"api.tls.{key}: cannot read {path}: {exc.strerror}"
            ) from None
    try:
        return grpc.ssl_server_credentials(
            [(read["key"], read["cert"])],
            root_certificates=read.get("client_ca"),
            require_client_auth="client_ca" in read,
        )
    except (RuntimeError, ValueError) as exc:
        raise SecuritySettingsError(f"api.tls: {exc}") from None
