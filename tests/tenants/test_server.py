"""The tenant API's edge against a recording stand-in for Prometheus: what reaches the
backend (only rewritten queries, the org header when asked), and the bounds on requests."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpuslo.tenants.config import load_plane
from gpuslo.tenants.server import MAX_BODY, TenantApi
from tests.tenants.conftest import Keys, call, write_plane


class Recorder:
    """A stand-in Prometheus: records each call and answers an empty success, or a fixed
    answer when one is set."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answer: dict[str, Any] = {
            "status": "success",
            "data": {"resultType": "vector", "result": []},
        }
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, body: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(url.query) | urllib.parse.parse_qs(body)
                recorder.calls.append(
                    {
                        "path": url.path,
                        "params": params,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
                data = json.dumps(recorder.answer).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._record("")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                self._record(self.rfile.read(n).decode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def edge(tmp_path: Path, keys: Keys) -> Iterator[tuple[TenantApi, Recorder, dict[str, str]]]:
    rec = Recorder()
    files = write_plane(tmp_path, rec.url, keys)
    text = files.config.read_text().replace("cache: 1s", "cache: 1s\nscope_org_id: true")
    files.config.write_text(text)
    api = TenantApi(load_plane(files.config), "127.0.0.1", 0, body_timeout=1.0).start()
    try:
        yield api, rec, files.tokens
    finally:
        api.stop()
        rec.server.shutdown()


def test_only_the_rewritten_query_reaches_prometheus_with_the_org_header(edge: Any) -> None:
    api, rec, tokens = edge
    status, _ = call(
        api.url + "/api/v1/query",
        tokens["alpha-ci"],
        {"query": 'sum(rate(x{tenant=~".+"}[5m]))', "time": "100", "stats": "all"},
    )
    assert status == 200
    (seen,) = rec.calls
    assert seen["params"]["query"] == ['sum (rate(x{tenant="alpha"}[5m]))']
    assert seen["params"]["time"] == ["100"] and "stats" not in seen["params"]
    assert seen["headers"]["x-scope-orgid"] == "alpha"  # case-insensitive
    assert "authorization" not in seen["headers"]  # the tenant's credentials stay here


def test_a_refused_query_never_reaches_prometheus(edge: Any) -> None:
    api, rec, tokens = edge
    for q in ('x{tenant="beta"}', 'label_replace(x, "tenant", "beta", "", "")', "info(x)"):
        status, body = call(api.url + "/api/v1/query", tokens["alpha-ci"], {"query": q})
        assert 400 <= status < 500 and json.loads(body)["error"]
    assert rec.calls == []


def test_series_endpoints_always_send_a_tenant_match(edge: Any) -> None:
    api, rec, tokens = edge
    rec.answer = {"status": "success", "data": ["alpha", "beta"]}
    status, body = call(api.url + "/api/v1/label/tenant/values", tokens["alpha-ci"])
    assert status == 200 and json.loads(body)["data"] == ["alpha"]  # screened as well
    assert rec.calls[-1]["params"]["match[]"] == ['{tenant="alpha"}']
    call(api.url + "/api/v1/series?match[]=up&match[]=down", tokens["alpha-ci"])
    assert rec.calls[-1]["params"]["match[]"] == ['up{tenant="alpha"}', 'down{tenant="alpha"}']


def test_a_series_of_another_tenant_in_an_answer_is_dropped(edge: Any) -> None:
    api, rec, tokens = edge
    rec.answer = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"tenant": "beta"}, "value": [1, "1"]},
                {"metric": {"tenant": "alpha"}, "value": [1, "2"]},
            ],
        },
    }
    _, body = call(api.url + "/api/v1/query?query=x", tokens["alpha-ci"])
    assert json.loads(body)["data"]["result"] == [
        {"metric": {"tenant": "alpha"}, "value": [1, "2"]}
    ]


def _raw(api: TenantApi, request: bytes, wait: float = 5.0) -> str:
    with socket.create_connection(("127.0.0.1", api.port), timeout=wait) as s:
        s.sendall(request)
        chunks = []
        try:
            while data := s.recv(65536):
                chunks.append(data)
        except TimeoutError:
            pass
        return b"".join(chunks).decode(errors="replace")


def test_bodies_are_bounded_and_credentials_come_first(edge: Any) -> None:
    api, rec, tokens = edge
    auth = f"Authorization: Bearer {tokens['alpha-ci']}\r\n"
    post = "POST /api/v1/query HTTP/1.1\r\nHost: x\r\n" + auth
    big = _raw(
        api,
        f"{post}Content-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
    )
    assert big.startswith("HTTP/1.1 413")
    chunked = _raw(
        api,
        f"{post}Transfer-Encoding: chunked\r\n\r\n".encode(),
    )
    assert chunked.startswith("HTTP/1.1 411")
    # without credentials the body is never waited for: the answer comes at once
    started = time.monotonic()
    anon = _raw(api, b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    assert anon.startswith("HTTP/1.1 401") and time.monotonic() - started < 1.0
    # a body that stops arriving gets 408 after body_timeout (1 s here)
    slow = _raw(
        api,
        f"{post}Content-Length: 100\r\n\r\nquery=".encode(),
    )
    assert slow.startswith("HTTP/1.1 408")
    assert rec.calls == []


def test_requests_beyond_the_inflight_bound_get_503(tmp_path: Path, keys: Keys) -> None:
    rec = Recorder()
    files = write_plane(tmp_path, rec.url, keys)
    api = TenantApi(load_plane(files.config), "127.0.0.1", 0, max_inflight=1).start()
    try:
        api.inflight.acquire()  # one request in flight
        status, body = call(api.url + "/v1/whoami", files.tokens["alpha-ci"])
        assert status == 503 and json.loads(body)["error"]
        api.inflight.release()
        status, body = call(api.url + "/v1/whoami", files.tokens["alpha-ci"])
        assert status == 200 and json.loads(body)["tenants"] == ["alpha"]
    finally:
        api.stop()
        rec.server.shutdown()


def test_an_unreachable_prometheus_is_a_502_with_the_reason(tmp_path: Path, keys: Keys) -> None:
    from gpuslo.foundation.promlab import free_port

    files = write_plane(tmp_path, f"http://127.0.0.1:{free_port()}", keys)
    api = TenantApi(load_plane(files.config), "127.0.0.1", 0).start()
    try:
        status, body = call(api.url + "/api/v1/query?query=up", files.tokens["alpha-ci"])
        assert status == 502 and "unreachable" in json.loads(body)["error"]
        status, body = call(api.url + "/v1/tenants/alpha/slos", files.tokens["alpha-ci"])
        assert status == 502 and json.loads(body)["error"]
    finally:
        api.stop()


def test_without_a_catalog_costs_and_budget_say_so(tmp_path: Path, keys: Keys) -> None:
    rec = Recorder()
    files = write_plane(tmp_path, rec.url, keys)
    files.config.write_text(files.config.read_text().replace("catalog: catalog.yaml\n", ""))
    api = TenantApi(load_plane(files.config), "127.0.0.1", 0).start()
    try:
        for view in ("costs", "budget"):
            status, body = call(f"{api.url}/v1/tenants/alpha/{view}", files.tokens["alpha-ci"])
            assert status == 404 and "catalog" in json.loads(body)["error"]
        assert rec.calls == []
    finally:
        api.stop()
        rec.server.shutdown()
