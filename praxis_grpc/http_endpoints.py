"""The node's HTTP port: Prometheus metrics and the A2A agent card.

``GET /metrics`` answers the registry in the format the scraper asks for
(Prometheus text or OpenMetrics, as ``prometheus_client`` negotiates);
``GET /.well-known/agent-card.json`` answers the node's card in the A2A
format (:mod:`praxis_grpc.a2a`), 503 until the node has published one.
Anything else is 404.

With a :class:`~praxis_grpc.api.tokens.TokenStore` (``metrics.require_token``),
``/metrics`` answers 401 unless the request carries ``Authorization: Bearer
<token>`` with a token of that store (any role: reading metrics is the least
a token allows). The A2A card stays public, as A2A intends.

Requests are served on threads of their own, away from the node's event
loop: the card comes from a callable that must be safe to call from any
thread (the node hands one that reads its current immutable card).
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from praxis_grpc.a2a import WELL_KNOWN_PATH
from praxis_grpc.api.tokens import TokenStore

log = logging.getLogger(__name__)

AgentCardSource = Callable[[], dict[str, Any] | None]
"""Returns the A2A card document, or None while there is none yet."""


class HttpEndpoints:
    """An HTTP server for ``/metrics`` and the A2A card, run on a thread.

    Call :meth:`start` once, then :meth:`close` (blocking, up to a few
    seconds while in-flight requests finish).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        agent_card: AgentCardSource,
        tokens: TokenStore | None = None,
    ) -> None:
        self._registry = registry
        self._agent_card = agent_card
        self._tokens = tokens
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    def start(self, host: str, port: int) -> None:
        """Bind ``host:port`` (0 picks a free port) and serve in a thread.

        Raises:
            OSError: the address cannot be bound.
        """
        handler = _handler(self._registry, self._agent_card, self._tokens)
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        # handle_request() is only called once a connection waits: never block in it.
        server.timeout = 0
        wake = socket.socketpair()
        thread = threading.Thread(
            target=_serve, args=(server, wake[0]), name="praxis-http", daemon=True
        )
        thread.start()
        self._server, self._thread, self._wake = server, thread, wake

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._server is None:
            return
        assert self._thread is not None
        assert self._wake is not None
        self._wake[1].send(b"x")
        self._thread.join(timeout=5)
        self._server.server_close()
        for end in self._wake:
            end.close()
        self._server = self._wake = None


def _serve(server: ThreadingHTTPServer, wake: socket.socket) -> None:
    """Serve ``server`` until ``wake`` becomes readable.

    ``serve_forever`` notices ``shutdown()`` only at its next poll, every
    0.5 s: every node stop (and so every test's teardown) waited for it. This
    loop sleeps until a connection or the wake-up arrives, so a close is at
    once and an idle node does not poll.
    """
    with selectors.DefaultSelector() as selector:
        selector.register(server, selectors.EVENT_READ)
        selector.register(wake, selectors.EVENT_READ)
        while True:
            ready = selector.select()
            if any(key.fileobj is wake for key, _ in ready):
                return
            server.handle_request()


def _handler(
    registry: CollectorRegistry, agent_card: AgentCardSource, tokens: TokenStore | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "praxis"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and tokens is not None and not self._authorised(tokens):
                self.send_response(HTTPStatus.UNAUTHORIZED)
                self.send_header("WWW-Authenticate", 'Bearer realm="praxis metrics"')
                body = b"/metrics needs 'Authorization: Bearer <token>' (metrics.require_token)\n"
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._reply(HTTPStatus.OK, content_type, encoder(registry))
            elif path == WELL_KNOWN_PATH:
                card = agent_card()
                if card is None:
                    self._reply(
                        HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no card published yet\n"
                    )
                else:
                    body = json.dumps(card, indent=2).encode()
                    self._reply(HTTPStatus.OK, "application/json", body)
            else:
                self._reply(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

        def _authorised(self, tokens: TokenStore) -> bool:
            scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
            return scheme.lower() == "bearer" and tokens.authenticate(token.strip()) is not None

        def _reply(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
