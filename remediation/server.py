"""The webhook service: ``POST /v1/alerts`` (Alertmanager), ``GET /v1/actions`` (the journal),
``/healthz``, ``/metrics`` and ``/openapi.json``.

``/v1/*`` needs ``Authorization: Bearer <token>`` when a token is set (Alertmanager's
``http_config.authorization``); without valid credentials a request gets 401 and changes
nothing. With a client CA, TLS requires a client certificate as well (mTLS).
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
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
from .openapi import OPENAPI
from .webhook import PayloadError, parse_payload

log = logging.getLogger(__name__)
MAX_BODY = 4 * 1024 * 1024  # Alertmanager groups are small; refuse anything huge


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
    ) -> None:
        self.remediator = remediator
        self.metrics = metrics
        self.token = token
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
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

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.client_address[0], *args)

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else (json.dumps(body, indent=1) + "\n").encode()
            self.send_response(code)
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
            else:
                self._send(404, {"error": f"no such path: {url.path}"})

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

        def _post(self) -> None:
            url = urlparse(self.path)
            if url.path != "/v1/alerts":
                return self._send(404, {"error": f"no such path: {url.path}"})
            if not hook.authorized(self.headers.get("Authorization")):
                return self._error(401, "unauthorized", "missing or invalid bearer token")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._error(411, "bad_request", "Content-Length required")
            if not 0 < length <= MAX_BODY:
                return self._error(413 if length > 0 else 400, "bad_request", "bad body size")
            body = self.rfile.read(length)
            try:
                payload = parse_payload(body)
            except PayloadError as err:
                return self._error(400, "bad_request", str(err))
            try:
                outcomes = hook.remediator.handle(payload)
            except Exception as err:  # the journal keeps what was decided; report, don't crash
                log.exception("handling %s failed", payload.groupKey)
                return self._error(500, "internal", f"internal error: {type(err).__name__}")
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
                    ]
                },
            )

    return Handler
