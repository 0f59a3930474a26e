"""The tenant API: each tenant's SLOs, costs and budget, and a Prometheus-compatible query API
whose every query is rewritten to that tenant's series.

Routes (all but ``/healthz`` need ``Authorization: Bearer <token or JWT>``):

- ``GET /v1/whoami``: the identity and its tenants;
- ``GET /v1/tenants/<t>/slos``, ``/costs[?days=N]``, ``/budget``;
- ``GET|POST /api/v1/query``, ``query_range``, ``series``, ``labels``,
  ``label/<name>/values`` and ``status/buildinfo``; also under ``/tenants/<t>/`` (a Grafana
  data source URL per tenant). Without that prefix the tenant is the ``X-Gpuslo-Tenant``
  header, or the identity's only tenant.

A tenant outside the identity's list gets 403, whether or not it exists. Refusals are 4xx
with ``{"status": "error", "errorType": ..., "error": reason}`` (Prometheus' error shape);
only an unreachable Prometheus is a 502. Bounded: request line and headers as the stdlib
bounds them; credentials are checked before a body is read; bodies (the POST form of the
query API) up to ``MAX_BODY`` arriving within ``body_timeout``; ``idle_timeout`` per
connection; at most ``max_inflight`` requests at once (503 beyond); ``upstream_timeout`` per
Prometheus call and answers up to ``MAX_UPSTREAM_BYTES``.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gpuslo.foundation import conventions as c

from .auth import Authenticator, Principal, Unauthorized
from .config import Plane
from .promql import Refused, Scope, enforce, enforce_all
from .views import Views

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
MAX_UPSTREAM_BYTES = 8 * 1024 * 1024  # an answer Grafana can draw is far smaller
MAX_MATCHERS = 20
IDLE_TIMEOUT = 30.0  # seconds a connection may go without sending anything
BODY_TIMEOUT = 10.0  # seconds for a whole POST body to arrive
UPSTREAM_TIMEOUT = 60.0
MAX_INFLIGHT = 64  # requests handled at once; more get 503 (bounds memory: each may hold an answer)
_QUERY_PARAMS = {
    "query": ("query", "time", "timeout", "limit"),
    "query_range": ("query", "start", "end", "step", "timeout", "limit"),
    "series": ("start", "end", "limit"),
    "labels": ("start", "end", "limit"),
    "values": ("start", "end", "limit"),
}
_PREFIX = re.compile(r"^/tenants/([^/]{1,63})(/api/v1/.*)$")
_VIEW = re.compile(r"^/v1/tenants/([^/]{1,63})/(slos|costs|budget)$")
_LABEL_VALUES = re.compile(r"^/api/v1/label/([a-zA-Z_][a-zA-Z0-9_]*)/values$")
_BUILDINFO = {
    "status": "success",
    "data": {"version": "2.45.0", "revision": "gpuslo-tenants", "branch": "", "goVersion": ""},
}


class _Answer(Exception):
    """An early answer: status and JSON body."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            log.debug("client %s: %r", client_address[0], err)
        else:
            log.error("request from %s failed", client_address[0], exc_info=err)


class _Pool:
    """Kept-alive HTTP connections to Prometheus, shared by the request threads (a new
    connection per query would cost a TCP handshake each)."""

    def __init__(self, url: str, timeout: float, size: int = 32) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(size)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _new(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def request(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One call; a kept-alive connection Prometheus closed meanwhile is retried once on
        a fresh one (every call here only reads)."""
        for attempt in (0, 1):
            try:
                conn = self._idle.get_nowait() if attempt == 0 else self._new()
            except queue.Empty:
                conn = self._new()
            try:
                conn.request(method, self.base + target, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read(MAX_UPSTREAM_BYTES + 1)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if attempt:
                    raise
                continue
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                raise OSError(str(err) or type(err).__name__) from None
            if resp.will_close or len(raw) > MAX_UPSTREAM_BYTES:
                conn.close()
            else:
                try:
                    self._idle.put_nowait(conn)
                except queue.Full:
                    conn.close()
            return resp.status, raw
        raise OSError("no answer")  # pragma: no cover - the loop returns or raises


class TenantApi:
    """The service: authentication, the rewriter and the views behind one HTTP server."""

    def __init__(
        self,
        plane: Plane,
        host: str = "127.0.0.1",
        port: int = c.TENANTS_DEFAULT_PORT,
        views: Views | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        self.plane = plane
        self.auth = Authenticator(plane)
        self.views = views or Views(plane)
        self.upstream = plane.spec.prometheus.rstrip("/")
        self.pool = _Pool(self.upstream, upstream_timeout)
        self.label = plane.spec.tenant_label
        self.idle_timeout = idle_timeout
        self.upstream_timeout = upstream_timeout
        self.body_timeout = body_timeout
        self.inflight = threading.BoundedSemaphore(max_inflight)
        self.server = _Server((host, port), _handler(self))
        self.port = self.server.server_address[1]

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        return f"http://{host!s}:{self.port}"

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def start(self) -> TenantApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.pool.close()

    # ----------------------------------------------------------------- proxying
    def prometheus(
        self, path: str, params: list[tuple[str, str]], tenant: str
    ) -> tuple[int, dict[str, Any]]:
        """Send the rewritten call to Prometheus; its status and JSON answer."""
        data = urllib.parse.urlencode(params)
        headers = {c.HEADER_SCOPE_ORG_ID: tenant} if self.plane.spec.scope_org_id else {}
        if path.endswith("/values"):  # Prometheus serves label values on GET only
            method, target, body_bytes = "GET", f"{path}?{data}", None
        else:
            method, target, body_bytes = "POST", path, data.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            status, raw = self.pool.request(method, target, body_bytes, headers)
        except OSError as err:
            raise _Answer(502, "unavailable", f"Prometheus unreachable: {err}") from None
        if len(raw) > MAX_UPSTREAM_BYTES:
            raise _Answer(422, "execution", "answer too large; narrow the query")
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Answer(502, "unavailable", f"Prometheus answered HTTP {status}") from None
        if status >= 500:
            raise _Answer(502, "unavailable", f"Prometheus answered HTTP {status}")
        return status, body

    def screen(self, body: dict[str, Any], tenant: str, path: str) -> dict[str, Any]:
        """Defence in depth: drop any series labelled with another tenant (none should
        come back, as every selector carries the matcher)."""
        data = body.get("data")

        def mine(series: Any) -> bool:
            labels = series.get("metric", series) if isinstance(series, dict) else {}
            other = isinstance(labels, dict) and labels.get(self.label, tenant) != tenant
            if other:
                log.error("dropped a series of another tenant from an answer to %s", tenant)
            return not other

        if isinstance(data, dict) and isinstance(data.get("result"), list):
            data["result"] = [s for s in data["result"] if mine(s)]
        elif path.endswith("/series") and isinstance(data, list):
            body["data"] = [s for s in data if mine(s)]
        elif path == f"/api/v1/label/{self.label}/values" and isinstance(data, list):
            body["data"] = [v for v in data if v == tenant]
        return body

    def query_api(self, path: str, form: dict[str, list[str]], tenant: str) -> dict[str, Any]:
        scope = Scope(tenant, self.label)
        if path == "/api/v1/status/buildinfo":
            return _BUILDINFO
        if path in ("/api/v1/query", "/api/v1/query_range"):
            kind = path.rsplit("/", 1)[1]
            queries = form.get("query", [])
            if len(queries) != 1:
                raise _Answer(400, "bad_data", "give exactly one query parameter")
            params = [("query", enforce(queries[0], scope))]
        elif path in ("/api/v1/series", "/api/v1/labels") or _LABEL_VALUES.match(path):
            kind = path.rsplit("/", 1)[1] if not _LABEL_VALUES.match(path) else "values"
            matches = form.get("match[]", [])
            if len(matches) > MAX_MATCHERS:
                raise _Answer(400, "bad_data", f"at most {MAX_MATCHERS} match[] parameters")
            params = [("match[]", m) for m in enforce_all(matches, scope)]
        else:
            raise _Answer(404, "not_found", f"no such path: {path}")
        for name in _QUERY_PARAMS[kind]:
            if name != "query":
                params += [(name, v) for v in form.get(name, [])[:1]]
        status, body = self.prometheus(path, params, tenant)
        if status >= 400:
            raise _Answer(status, str(body.get("errorType", "bad_data")), _error(body))
        return self.screen(body, tenant, path)

    def tenant_for(self, principal: Principal, asked: str | None) -> str:
        if asked is None:
            if len(principal.tenants) != 1:
                raise _Answer(
                    400,
                    "bad_data",
                    f"this identity has several tenants: name one with {c.HEADER_TENANT} or "
                    "/tenants/<tenant>/",
                )
            return principal.tenants[0]
        if asked not in principal.tenants:
            raise _Answer(403, "forbidden", "not one of your tenants")
        return asked


def _error(body: dict[str, Any]) -> str:
    return str(body.get("error", "query failed"))[:500]


def _handler(api: TenantApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "gpuslo-tenants"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            self.connection.settimeout(api.idle_timeout)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.client_address[0], *args)

        def _send(self, code: int, body: Any) -> None:
            data = (json.dumps(body, separators=(",", ":"), allow_nan=False) + "\n").encode()
            self.send_response(code)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="gpuslo-tenants"')
            self.end_headers()
            self.wfile.write(data)

        def _fail(self, status: int, kind: str, message: str) -> None:
            self._send(status, {"status": "error", "errorType": kind, "error": message})

        def do_GET(self) -> None:
            self._serve(lambda: {})

        def do_POST(self) -> None:
            self._serve(self._form)

        def _read(self, n: int) -> bytes:
            """Exactly n body bytes within ``body_timeout``; TimeoutError otherwise."""
            deadline = time.monotonic() + api.body_timeout
            buf = bytearray()
            try:
                while len(buf) < n:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self.connection.settimeout(min(left, api.idle_timeout))
                    data = self.rfile.read1(n - len(buf))
                    if not data:
                        raise _Answer(400, "bad_data", "body shorter than its Content-Length")
                    buf += data
            finally:
                self.connection.settimeout(api.idle_timeout)
            return bytes(buf)

        def _form(self) -> dict[str, list[str]]:
            self.close_connection = True  # until the body is read, the stream is not framed
            if self.headers.get("Transfer-Encoding"):
                raise _Answer(411, "bad_data", "send a Content-Length, not a chunked body")
            length_text = self.headers.get("Content-Length", "0").strip()
            if not length_text.isdigit() or len(length_text) > 12:
                raise _Answer(400, "bad_data", "Content-Length must be a number")
            length = int(length_text)
            if length > MAX_BODY:
                raise _Answer(413, "bad_data", f"body over {MAX_BODY} bytes")
            kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            try:
                raw = self._read(length) if length else b""
            except TimeoutError:
                raise _Answer(408, "bad_data", "request body not received in time") from None
            self.close_connection = False
            if raw and kind != "application/x-www-form-urlencoded":
                raise _Answer(415, "bad_data", "the body must be a URL-encoded form")
            try:
                return urllib.parse.parse_qs(
                    raw.decode(), keep_blank_values=True, max_num_fields=100, strict_parsing=False
                )
            except (UnicodeDecodeError, ValueError):
                raise _Answer(400, "bad_data", "malformed form body") from None

        def _serve(self, body_form: Callable[[], dict[str, list[str]]]) -> None:
            if not api.inflight.acquire(blocking=False):
                self.close_connection = True
                return self._fail(503, "unavailable", "too many requests in flight; retry")
            try:
                self._answer(body_form)
            finally:
                api.inflight.release()

        def _answer(self, body_form: Callable[[], dict[str, list[str]]]) -> None:
            try:
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/healthz":
                    return self._send(200, {"status": "ok"})
                try:
                    form = urllib.parse.parse_qs(
                        url.query, keep_blank_values=True, max_num_fields=100
                    )
                except ValueError:
                    raise _Answer(400, "bad_data", "too many query parameters") from None
                try:  # credentials first: nobody unauthenticated gets a body read
                    principal = api.auth.principal(self.headers.get("Authorization"))
                except Unauthorized as err:
                    if self.command == "POST":
                        self.close_connection = True
                    raise _Answer(401, "unauthorized", str(err)) from None
                for k, v in body_form().items():
                    form.setdefault(k, []).extend(v)
                self._route(url.path, form, principal)
            except _Answer as err:
                self._fail(err.status, err.kind, err.message)
            except Refused as err:
                self._fail(err.status, "forbidden" if err.status == 403 else "bad_data", err.reason)
            except Exception as err:  # a bug: answer, log, keep serving
                log.exception("request %s failed", self.path.split("?")[0])
                self._fail(500, "internal", f"internal error: {type(err).__name__}")

        def _route(self, path: str, form: dict[str, list[str]], who: Principal) -> None:
            if path == "/v1/whoami":
                return self._send(
                    200, {"identity": who.identity, "tenants": list(who.tenants), "via": who.method}
                )
            if m := _VIEW.match(path):
                if self.command != "GET":
                    raise _Answer(405, "bad_data", "use GET")
                tenant = api.tenant_for(who, m.group(1))
                return self._send(200, self._view(m.group(2), tenant, form))
            asked = self.headers.get(c.HEADER_TENANT)
            if m := _PREFIX.match(path):
                asked, path = m.group(1), m.group(2)
            if path.startswith("/api/v1/"):
                tenant = api.tenant_for(who, asked)
                return self._send(200, api.query_api(path, form, tenant))
            raise _Answer(404, "not_found", f"no such path: {path}")

        def _view(self, name: str, tenant: str, form: dict[str, list[str]]) -> Any:
            from gpuslo.foundation.prometheus import HistoryError

            if name in ("costs", "budget") and api.views.catalog() is None:
                raise _Answer(404, "not_found", "no price catalog configured (catalog:)")
            try:
                if name == "slos":
                    return {"tenant": tenant, "slos": api.views.tenant_slos(tenant)}
                if name == "costs":
                    try:
                        days = int(form.get("days", ["0"])[0])
                    except ValueError:
                        raise _Answer(400, "bad_data", "days must be a whole number") from None
                    if not 0 <= days <= 92:
                        raise _Answer(400, "bad_data", "days must be between 0 and 92")
                    return api.views.costs(tenant, days)
                return api.views.budget(tenant)
            except HistoryError as err:
                raise _Answer(502, "unavailable", str(err)) from None

    return Handler
