"""Loopback endpoints for incident tests: a webhook receiver that records what it is sent (a
chat or generic webhook), and a black hole that accepts connections and never answers (a
Prometheus that hangs)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Records every request: (method, path, headers, JSON body); answers ``answer``."""

    def __init__(self, answer: Any = "ok", status: int = 200) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.answer, self.status = answer, status
        me = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                me.requests.append((self.command, self.path, dict(self.headers), body))
                data = (
                    me.answer.encode()
                    if isinstance(me.answer, str)
                    else json.dumps(me.answer).encode()
                )
                self.send_response(me.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PATCH = do_GET = _serve

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def bodies(self) -> list[Any]:
        return [r[3] for r in self.requests]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class Blackhole:
    """A listening socket whose connections are accepted and never answered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self._stop.set()
        for conn in self.held:
            conn.close()
        self.sock.close()
