"""The agent's HTTP endpoint: ``/metrics`` (text or OpenMetrics by Accept) and ``/healthz``."""

from __future__ import annotations

import gzip
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gpuslo.foundation.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    wants_openmetrics,
)

from .agent import Agent

log = logging.getLogger(__name__)

_INDEX = b"""<html><head><title>gpuslo agent</title></head><body>
<h1>gpuslo agent</h1><p><a href="/metrics">metrics</a> &middot; <a href="/healthz">healthz</a></p>
</body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    agent: Agent  # set on the subclass built per server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive scraper waits for
    # the delayed ACK (~40 ms) before the body of a small response arrives.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            openmetrics = wants_openmetrics(self.headers.get("Accept"))
            body = self.agent.render(openmetrics).encode()
            ctype = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
            self._send(200, ctype, body, compress=True)
        elif path == "/healthz":
            health = self.agent.health()
            body = json.dumps({"status": "ok", "collectors": health}, indent=1).encode()
            self._send(200, "application/json", body)
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", _INDEX)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, code: int, ctype: str, body: bytes, compress: bool = False) -> None:
        gzipped = compress and "gzip" in (self.headers.get("Accept-Encoding") or "")
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


LISTEN_BACKLOG = 1024  # pending connections the kernel holds (socketserver's default is 5)
CONNECTION_TIMEOUT = 30.0  # seconds a connection may sit idle or half-open before it is closed


class _ThreadingServer(ThreadingHTTPServer):
    """One thread per connection (daemon, so none holds up exit), a real listen backlog, and
    clients that hang up or time out are logged at debug, not printed with a traceback."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, ConnectionError | TimeoutError):  # reset, broken pipe, idle timeout
            log.debug("client %s went away: %s", client_address, err)
        else:
            log.exception("error serving %s", client_address)


class BackgroundHTTPServer:
    """A threaded HTTP server bound to ``host:port`` (port 0 picks a free one), served on a
    background thread. Listens with a backlog of ``LISTEN_BACKLOG``; every connection gets a
    ``timeout`` (seconds) on each read and write, so idle keep-alive and half-open
    connections are closed rather than kept forever."""

    thread_name = "http"

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        host: str,
        port: int,
        timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the connection timeout must be > 0 seconds")
        if handler.timeout is None:
            handler = type(handler.__name__, (handler,), {"timeout": timeout})
        self.httpd = _ThreadingServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (also when it was never started)."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()


class AgentServer(BackgroundHTTPServer):
    """The agent's ``/metrics`` and ``/healthz``."""

    def __init__(
        self, agent: Agent, host: str, port: int, timeout: float = CONNECTION_TIMEOUT
    ) -> None:
        handler = type("AgentHandler", (_Handler,), {"agent": agent})
        super().__init__(handler, host, port, timeout)
