"""Every service's Prometheus /metrics server: HTTPS like its gRPC server, optionally a token.

prometheus_client's own server cannot ask for a token, so this serves its WSGI app behind a
check: with a metrics token, a request without `Authorization: Bearer <token>` gets 401 (the
token is compared by digest, in constant time). With `--tls-cert-file` the server speaks
HTTPS with the service's certificate, and with `--tls-client-ca-file` it asks scrapers for a
client certificate too, as the gRPC server does. The TLS handshake happens in the request's
own thread, so a client that never finishes it cannot hold up other scrapes.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

_BEARER = "Bearer "
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _DebugLog(io.TextIOBase):
    """A text stream into this module's log at DEBUG level."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("metrics request: %s", text.rstrip())
        return len(text)


_SHUTDOWN_POLL_S = 0.1


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape, and no traceback on stderr when a scraper hangs up
    during the answer (wsgiref ignores that for plain sockets but prints TLS's SSLEOFError)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_stderr(self) -> Any:
        return _DebugLog()


def token_checked(app: WsgiApp, token: str) -> WsgiApp:
    """`app` answering 401 to requests without `Authorization: Bearer <token>`."""
    expected = hashlib.sha256(token.encode()).digest()

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        given = header[len(_BEARER) :] if header.startswith(_BEARER) else ""
        if hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected) and given:
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
        )
        return [b"a metrics token is required: Authorization: Bearer <token>\n"]

    return checked


def start_metrics_server(
    host: str,
    port: int,
    registry: prometheus_client.CollectorRegistry,
    *,
    token: str = "",
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[ThreadingWSGIServer, int]:
    """Serves `registry` at http(s)://host:port/metrics on a daemon thread.

    Returns:
        The server (`shutdown()`, `server_close()` stop it) and its bound port.
    """
    app: WsgiApp = prometheus_client.make_wsgi_app(registry)
    if token:
        app = token_checked(app, token)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A scraper that fails the TLS handshake or hangs up: not worth a traceback.
            log.debug("metrics request from %s failed", client_address, exc_info=True)

    httpd = make_server(host, port, app, Server, handler_class=_QuietHandler)
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(
            httpd.socket, server_side=True, do_handshake_on_connect=False
        )
    # shutdown() waits for the serving loop's next poll: 0.1 s rather than the default 0.5 s,
    # which was most of a worker's stop time.
    thread = threading.Thread(
        target=httpd.serve_forever, args=(_SHUTDOWN_POLL_S,), name="metrics-http", daemon=True
    )
    thread.start()
    return httpd, int(httpd.server_port)
