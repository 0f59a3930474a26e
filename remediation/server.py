"""The webhook service: ``POST /v1/alerts`` (Alertmanager), ``GET /v1/actions`` (the journal),
``GET /v1/incidents`` and ``/incidents/{id}`` (every page, explained), ``/healthz``,
``/metrics`` and ``/openapi.json``.

Incidents are served by the same process as the actions, beside them: they share the
journal's database (one writer, the exactly-once rules), the payload parsing and the token,
and a page's incident links the decisions the hook took on it. Their explanations run on
their own bounded worker pool, so a slow Prometheus never delays an action.

``/v1/*`` needs ``Authorization: Bearer <token>`` when a token is set (Alertmanager's
``http_config.authorization``); without valid credentials a request gets 401 and changes
nothing. With a client CA, TLS requires a client certificate as well (mTLS).

The edge is bounded: a body is refused by its declared size before a byte of it is read
(``Content-Length`` over ``MAX_BODY`` 413, missing 411, negative, malformed or conflicting
400; chunked bodies are read up to ``MAX_BODY`` and cut off with 413), a refused request's
connection is closed (its unread body is never taken for a request), parsing is bounded in
depth and number size (``webhook``), the listen backlog holds ``LISTEN_BACKLOG`` connections,
a connection that sends nothing for ``idle_timeout`` seconds is closed and a body must arrive
within ``body_timeout`` (408), and clients that hang up are logged at debug, not as tracebacks.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gpuslo.foundation import conventions as c

from .engine import Outcome, Remediator
from .incidents import Incidents
from .openapi import OPENAPI
from .webhook import PayloadError, parse_payload

log = logging.getLogger(__name__)
MAX_BODY = 4 * 1024 * 1024  # Alertmanager groups are small; refuse anything huge
LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
IDLE_TIMEOUT = 30.0  # seconds a connection may go without sending anything
BODY_TIMEOUT = 30.0  # seconds for a whole request body to arrive
MAX_LINE = 1024  # a chunk-size or trailer line
_LENGTH = re.compile(r"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _Refuse(Exception):
    """A request the hook answers with an error before (or while) reading its body."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Server(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG  # socketserver's default of 5 resets bursts
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):  # hang-ups, resets, timeouts, failed TLS handshakes
            log.debug("client %s: %r", client_address[0], err)
        else:
            log.error("request from %s failed", client_address[0], exc_info=err)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            c.REMEDIATION_DECISIONS.name.removesuffix("_total"),
            c.REMEDIATION_DECISIONS.help,
            [c.LABEL_POLICY, c.LABEL_DECISION],
            registry=self.registry,
        )
        self.latency = Histogram(
            c.REMEDIATION_WEBHOOK_SECONDS.name,
            c.REMEDIATION_WEBHOOK_SECONDS.help,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.errors = Counter(
            c.REMEDIATION_ERRORS.name.removesuffix("_total"),
            c.REMEDIATION_ERRORS.help,
            [c.LABEL_ERROR_KIND],
            registry=self.registry,
        )
        self.kill_switch = Gauge(
            c.REMEDIATION_KILL_SWITCH.name, c.REMEDIATION_KILL_SWITCH.help, registry=self.registry
        )

    def outcome(self, o: Outcome) -> None:
        self.decisions.labels(o.policy, o.decision).inc()


class Hook:
    """The service: a Remediator behind HTTP, with a thread that runs due reverts."""

    def __init__(
        self,
        remediator: Remediator,
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = c.REMEDIATION_DEFAULT_PORT,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
        tick: float = 1.0,
        idle_timeout: float = IDLE_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        incidents: Incidents | None = None,
    ) -> None:
        self.remediator = remediator
        self.incidents = incidents
        self.metrics = metrics
        self.token = token
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.server = _Server((host, port), _handler(self))
        if tls is not None:
            # The handshake happens on first read, in the connection's own thread, so a slow
            # client cannot hold up accepting others.
            self.server.socket = tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self.server.server_address[1]
        self._stop = threading.Event()
        self._tick = tick
        self._threads: list[threading.Thread] = []

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        expected = f"Bearer {self.token}".encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def start(self) -> Hook:
        if self.incidents is not None:
            self.incidents.start()
        for target in (self.server.serve_forever, self._reverts):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _reverts(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                for o in self.remediator.tick():
                    log.info("revert %s: %s %s", o.policy, o.decision, o.reason)
            except Exception:  # keep the loop alive; the journal keeps the revert pending
                log.exception("running due reverts failed")
                self.metrics.errors.labels("internal").inc()

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        if self.incidents is not None:
            self.incidents.stop()


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """Server TLS; with ``client_ca``, clients must present a certificate it signed (mTLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _handler(hook: Hook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "gpuslo-remediate"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        _linger = False  # a refused request's unread body: drain a little before closing

        def setup(self) -> None:
            super().setup()
            self.connection.settimeout(hook.idle_timeout)  # every read and write; idle too

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.client_address[0], *args)

        def handle_expect_100(self) -> bool:
            # Answer 401/404/411/413 instead of inviting a body the hook would refuse.
            try:
                if self.command == "POST":
                    self._check_post()
            except _Refuse as err:
                self._refuse(err)
                return False
            return super().handle_expect_100()

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else (json.dumps(body, indent=1) + "\n").encode()
            self.send_response(code)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="gpuslo"')
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, kind: str, message: str) -> None:
            hook.metrics.errors.labels(kind).inc()
            self._send(code, {"error": message})

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/healthz":
                kill = hook.remediator.kill_switch()
                self._send(
                    200, {"status": "ok", "kill_switch": kill, "dry_run": hook.remediator.dry_run}
                )
            elif url.path == "/metrics":
                hook.metrics.kill_switch.set(1 if hook.remediator.kill_switch() else 0)
                self._send(200, generate_latest(hook.metrics.registry), CONTENT_TYPE_LATEST)
            elif url.path == "/openapi.json":
                self._send(200, OPENAPI)
            elif url.path == "/v1/actions":
                if not hook.authorized(self.headers.get("Authorization")):
                    return self._error(401, "unauthorized", "missing or invalid bearer token")
                self._actions(parse_qs(url.query))
            elif url.path.startswith(("/v1/incidents", "/incidents/")) and hook.incidents:
                self._incidents(url.path, parse_qs(url.query))
            else:
                self._send(404, {"error": f"no such path: {url.path}"})

        def _incidents(self, path: str, query: dict[str, list[str]]) -> None:
            assert hook.incidents is not None
            store, base = hook.incidents.store, hook.incidents.base_url
            html = path.startswith("/incidents/")
            open_pages = html and hook.incidents.settings.open_pages
            if not open_pages and not hook.authorized(self.headers.get("Authorization")):
                return self._error(401, "unauthorized", "missing or invalid bearer token")
            if path == "/v1/incidents":
                args: dict[str, Any] = {
                    k: query[k][0] for k in ("slo", "service", "tier", "status") if k in query
                }
                try:
                    if "since" in query:
                        args["since"] = float(query["since"][0])
                    args["limit"] = min(int(query.get("limit", ["100"])[0]), 1000)
                except ValueError:
                    return self._error(400, "bad_request", "since and limit must be numbers")
                if args["limit"] < 1:
                    return self._error(400, "bad_request", "limit must be at least 1")
                found = store.query(**args)
                for i in found:
                    i.actions = store.actions(i.id)
                return self._send(200, {"incidents": [i.public(base) for i in found]})
            if path == c.INCIDENT_OPEN_PATH:
                first = {k: v[0] for k, v in query.items()}
                newest = store.query(
                    slo=first.get(c.LABEL_SLO),
                    service=first.get(c.LABEL_SERVICE),
                    tier=first.get(c.LABEL_TIER),
                    limit=1,
                )
                if not newest:
                    return self._send(404, {"error": "no incident of that SLO and tier yet"})
                self.send_response(302)
                self.send_header("Location", f"/incidents/{newest[0].id}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            ident = path.rsplit("/", 1)[1]
            incident = store.get(ident) if re.fullmatch(r"[0-9a-f]{1,64}", ident) else None
            if incident is None or path not in (f"/v1/incidents/{ident}", f"/incidents/{ident}"):
                return self._send(404, {"error": f"no such incident: {ident}"})
            if html:
                from .incident_page import render

                page = render(incident).encode()
                return self._send(200, page, "text/html; charset=utf-8")
            return self._send(200, incident.public(base))

        def _actions(self, query: dict[str, list[str]]) -> None:
            args: dict[str, Any] = {}
            for name in ("policy", "status", "slo", "kind"):
                if name in query:
                    args[name] = query[name][0]
            try:
                if "since" in query:
                    args["since"] = float(query["since"][0])
                args["limit"] = min(int(query.get("limit", ["100"])[0]), 1000)
            except ValueError:
                return self._error(400, "bad_request", "since and limit must be numbers")
            if args["limit"] < 1:
                return self._error(400, "bad_request", "limit must be at least 1")
            entries = hook.remediator.journal.query(**args)
            self._send(200, {"actions": [e.public() for e in entries]})

        def do_POST(self) -> None:
            started = time.perf_counter()
            try:
                self._post()
            finally:
                hook.metrics.latency.observe(time.perf_counter() - started)

        def _check_post(self) -> int | None:
            """The declared body length (None: chunked), or _Refuse; reads no body."""
            url = urlparse(self.path)
            if url.path != "/v1/alerts":
                raise _Refuse(404, f"no such path: {url.path}")
            if not hook.authorized(self.headers.get("Authorization")):
                raise _Refuse(401, "missing or invalid bearer token")
            codings = self.headers.get_all("Transfer-Encoding") or []
            lengths = {
                v.strip()
                for h in self.headers.get_all("Content-Length") or []
                for v in h.split(",")
            }
            if codings:
                if lengths:
                    raise _Refuse(400, "both Content-Length and Transfer-Encoding")
                if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
                    raise _Refuse(400, "only the chunked transfer coding is accepted")
                return None
            if not lengths:
                raise _Refuse(411, "Content-Length required")
            if len(lengths) != 1 or not _LENGTH.fullmatch(next(iter(lengths))):
                raise _Refuse(400, "Content-Length must be one non-negative number")
            length = int(next(iter(lengths)))
            if length > MAX_BODY:
                raise _Refuse(413, f"body over {MAX_BODY} bytes")
            if length == 0:
                raise _Refuse(400, "empty body")
            return length

        def _refuse(self, err: _Refuse) -> None:
            """Answer and close: the body left unread must not be taken for a request. Then
            drain a little of it, so the client reads the answer rather than a reset."""
            self.close_connection = True
            if err.code == 404:
                self._send(404, {"error": str(err)})
            else:
                self._error(
                    err.code, "unauthorized" if err.code == 401 else "bad_request", str(err)
                )
            self._linger = True

        def handle(self) -> None:
            super().handle()
            if self._linger:  # outside the request's timing: the answer has gone already
                self._drain()

        def _drain(self) -> None:
            try:
                self.wfile.flush()
                if isinstance(self.connection, ssl.SSLSocket):
                    return
                self.connection.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + 1.0
                drained = 0
                while drained < MAX_BODY and time.monotonic() < deadline:
                    self.connection.settimeout(max(0.01, deadline - time.monotonic()))
                    data = self.connection.recv(65536)
                    if not data:
                        break
                    drained += len(data)
            except OSError:
                pass

        def _read(self, n: int, deadline: float) -> bytes:
            """Exactly n bytes; TimeoutError past the deadline, ConnectionError on EOF."""
            buf = bytearray()
            while len(buf) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("body not received in time")
                self.connection.settimeout(min(left, hook.idle_timeout))
                data = self.rfile.read1(min(n - len(buf), 65536))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                buf += data
            return bytes(buf)

        def _line(self, deadline: float) -> bytes:
            line = bytearray()
            while not line.endswith(b"\n"):
                if len(line) > MAX_LINE:
                    raise _Refuse(400, "chunk line too long")
                line += self._read(1, deadline)
            return bytes(line)

        def _chunked(self, deadline: float) -> bytes:
            body = bytearray()
            while True:
                size = self._line(deadline).split(b";", 1)[0].strip()
                if not _CHUNK_SIZE.fullmatch(size):
                    raise _Refuse(400, "bad chunk size")
                n = int(size, 16)
                if n == 0:
                    break
                if len(body) + n > MAX_BODY:
                    raise _Refuse(413, f"body over {MAX_BODY} bytes")
                body += self._read(n, deadline)
                if self._read(2, deadline) != b"\r\n":
                    raise _Refuse(400, "chunk not followed by CRLF")
            for _ in range(64):  # trailers, ignored
                if self._line(deadline).strip() == b"":
                    return bytes(body)
            raise _Refuse(400, "too many trailer lines")

        def _body(self) -> bytes | None:
            """The request body, bounded in size and time; None when answered already."""
            try:
                length = self._check_post()
                deadline = time.monotonic() + hook.body_timeout
                try:
                    return (
                        self._chunked(deadline) if length is None else self._read(length, deadline)
                    )
                finally:
                    self.connection.settimeout(hook.idle_timeout)
            except _Refuse as err:
                self._refuse(err)
            except TimeoutError:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self._error(408, "bad_request", "request body not received in time")
            except ConnectionError:  # the client hung up mid-body: nobody to answer
                self.close_connection = True
            return None

        def _post(self) -> None:
            body = self._body()
            if body is None:
                return
            try:
                payload = parse_payload(body)
            except PayloadError as err:
                return self._error(400, "bad_request", str(err))
            pages: dict[str, str] = {}
            if hook.incidents is not None:
                try:  # a few SQLite writes; the explanation runs on the incident workers
                    pages = hook.incidents.observe(payload)
                except Exception:  # incidents never stand in the way of an action
                    log.exception("recording the incidents of %s failed", payload.groupKey)
            try:
                outcomes = hook.remediator.handle(payload)
            except Exception as err:  # the journal keeps what was decided; report, don't crash
                log.exception("handling %s failed", payload.groupKey)
                return self._error(500, "internal", f"internal error: {type(err).__name__}")
            if pages and hook.incidents is not None:
                try:
                    hook.incidents.link(pages, outcomes)
                except Exception:
                    log.exception(
                        "linking the decisions of %s to incidents failed", payload.groupKey
                    )
            self._send(
                200,
                {
                    "outcomes": [
                        {
                            "policy": o.policy,
                            "fingerprint": o.fingerprint,
                            "decision": o.decision,
                            "reason": o.reason,
                            "id": o.entry_id,
                        }
                        for o in outcomes
                    ],
                    "incidents": sorted(set(pages.values())),
                },
            )

    return Handler
