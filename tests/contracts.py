"""A loopback server that answers the official Kubernetes client from a recorded API contract
(a list of request/response exchanges, in order) and records every request that differs from
it. No API server runs here: contracts are written from the Kubernetes API reference, named as
such in each fixture."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest


class ContractServer:
    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self.exchanges = list(exchanges)
        self.problems: list[str] = []
        self.seen: list[tuple[str, str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path, _, query = self.path.partition("?")
                content_type = self.headers.get("Content-Type", "")
                server.seen.append((self.command, path, content_type))
                if not server.exchanges:
                    server.problems.append(f"unexpected {self.command} {path}")
                    return self._reply(500, {"message": "not in contract"})
                want = server.exchanges.pop(0)
                req = want["request"]
                if (self.command, path) != (req["method"], req["path"]):
                    server.problems.append(
                        f"{self.command} {path}, contract: {req['method']} {req['path']}"
                    )
                elif "query" in req and parse_qs(query) != req["query"]:
                    server.problems.append(
                        f"{self.command} {path}?{query}, contract query: {req['query']}"
                    )
                elif "body" in req and body != req["body"]:
                    server.problems.append(
                        f"{self.command} {path} body {body}, contract: {req['body']}"
                    )
                self._reply(want["response"]["status"], want["response"]["body"])

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = _serve

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def api_client(self) -> Any:
        """An official-client ApiClient pointed at this server."""
        from kubernetes import client

        config = client.Configuration(host=f"http://127.0.0.1:{self.http.server_address[1]}")
        return client.ApiClient(config)

    def done(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        assert self.problems == []
        assert self.exchanges == [], f"contract requests never made: {self.exchanges}"


def contract_fixture(contract: dict[str, Any]) -> Any:
    """A pytest fixture: ``contract(name)`` serves the named exchanges and, at teardown,
    fails the test on unexpected or missing requests."""

    @pytest.fixture
    def serve() -> Any:
        servers: list[ContractServer] = []

        def start(name: str) -> ContractServer:
            servers.append(ContractServer(contract[name]))
            return servers[-1]

        yield start
        for s in servers:
            s.done()

    return serve
