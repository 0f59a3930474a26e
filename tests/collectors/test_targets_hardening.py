"""Hardening of the target scrapes and of the agent's HTTP servers, on loopback: a trickling
target, a body over the read cap or cut short, a scrape stuck before its connection, many
simultaneous scrapers, clients that hang up or go idle, SIGTERM to a serving agent."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuslo.collectors.servers import ServerCollector, Target

VLLM_BODY = (Path(__file__).parent / "fixtures" / "servers" / "vllm_v1_metrics.prom").read_bytes()


class RawServer:
    """A loopback TCP server answering each connection with ``respond(conn)`` on its own
    thread; counts connections open now (a close by the client is seen within 0.05 s)."""

    def __init__(self, respond) -> None:  # type: ignore[no-untyped-def]
        self.respond = respond
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.open = self.max_open = self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/metrics"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)  # the request
            self.respond(self, conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            conn.close()

    def closed_by_peer(self, conn: socket.socket, wait: float) -> bool:
        """Whether the client closed the connection (or the server is stopping)."""
        readable, _, _ = select.select([conn], [], [], wait)
        if readable:
            try:
                return conn.recv(1024) == b""
            except OSError:
                return True
        return self.stop.is_set()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def trickle(server: RawServer, conn: socket.socket) -> None:
    """Headers, then one byte of a long body every 0.05 s for up to 30 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10000000\r\n\r\n")
    ends = time.monotonic() + 30
    while time.monotonic() < ends and not server.closed_by_peer(conn, 0.05):
        conn.sendall(b"#")


def whole(server: RawServer, conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(VLLM_BODY) + VLLM_BODY)
    server.closed_by_peer(conn, 5)


def cut_short(server: RawServer, conn: socket.socket) -> None:
    """The vLLM page's first half (cut at a line end), then the connection closes, though
    Content-Length promised the whole page."""
    half = VLLM_BODY[: VLLM_BODY.index(b"\n", len(VLLM_BODY) // 2) + 1]
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(VLLM_BODY) + half)


@contextlib.contextmanager
def servers(*responders) -> Iterator[list[RawServer]]:  # type: ignore[no-untyped-def]
    started = [RawServer(r) for r in responders]
    try:
        yield started
    finally:
        for s in started:
            s.close()


def up_of(families: dict) -> dict[str, float]:  # type: ignore[type-arg]
    return {s.labels["target"]: s.value for s in families["gpuslo_target_up"].samples}


def errors_of(families: dict) -> dict[tuple[str, str], float]:  # type: ignore[type-arg]
    fam = families.get("gpuslo_target_scrape_errors_total")
    samples = fam.samples if fam is not None else []
    return {(s.labels["target"], s.labels["reason"]): s.value for s in samples}


def collect(collector: ServerCollector) -> dict:  # type: ignore[type-arg]
    return {m.name: m for m in collector.collect()}


# --------------------------------------------------------------------------- target scrapes
def test_a_trickling_target_hits_its_deadline_holds_one_connection_and_healthy_ones_stay_up():
    with servers(trickle, whole) as (slow, good):
        collector = ServerCollector(
            [Target(slow.url), Target(good.url, server="vllm")], timeout=0.5, workers=4
        )
        try:
            for _ in range(8):  # twice the workers: stuck scrapes would fill the pool
                started = time.monotonic()
                families = collect(collector)
                assert time.monotonic() - started < 3  # one deadline, not a trickle's length
                assert up_of(families) == {slow.url: 0.0, good.url: 1.0}
        finally:
            collector.close()
        # One connection per scrape, each closed at the deadline (the next may open while the
        # last is still being torn down): never a pile of stuck ones.
        assert slow.max_open <= 2, slow.max_open
        counted = errors_of(families)
        # Each scrape ends at its deadline; one whose aborted predecessor had not quite ended
        # on a busy machine is skipped (in_flight) instead of opening a second connection.
        assert counted[(slow.url, "deadline")] + counted.get((slow.url, "in_flight"), 0) == 8
        assert counted[(slow.url, "deadline")] >= 4
        assert "deadline" in collector.errors[slow.url] or "in flight" in collector.errors[slow.url]


def test_a_scrape_stuck_before_its_connection_is_not_doubled_but_skipped_and_counted(
    monkeypatch,
):
    import http.client

    release, calls = threading.Event(), []

    def stuck_connect(self) -> None:  # type: ignore[no-untyped-def]
        calls.append(self.host)
        release.wait(20)  # as a name lookup that hangs: nothing to close
        raise OSError("released")

    monkeypatch.setattr(http.client.HTTPConnection, "connect", stuck_connect)
    collector = ServerCollector([Target("http://127.0.0.1:9/metrics")], timeout=0.3)
    try:
        collect(collector)
        families = collect(collector)
        families = collect(collector)
    finally:
        release.set()
        collector.close()
    assert len(calls) == 1  # the later scrapes did not open another connection
    assert up_of(families) == {"http://127.0.0.1:9/metrics": 0.0}
    assert errors_of(families)[("http://127.0.0.1:9/metrics", "in_flight")] == 2
    assert "still in flight" in collector.errors["http://127.0.0.1:9/metrics"]


def test_a_body_over_the_read_cap_is_reported_and_not_exported():
    with servers(whole) as (good,):
        collector = ServerCollector([Target(good.url)], timeout=2, max_bytes=len(VLLM_BODY) // 2)
        try:
            families = collect(collector)
        finally:
            collector.close()
    assert up_of(families) == {good.url: 0.0}
    assert not [name for name in families if name.startswith("gen_ai_")]
    assert errors_of(families) == {(good.url, "too_large"): 1.0}
    assert "cap" in collector.errors[good.url]


def test_a_body_cut_short_of_its_content_length_is_reported_and_not_exported():
    with servers(cut_short) as (cut,):
        collector = ServerCollector([Target(cut.url)], timeout=2)
        try:
            families = collect(collector)
        finally:
            collector.close()
    assert up_of(families) == {cut.url: 0.0}
    assert not [name for name in families if name.startswith("gen_ai_")]
    assert errors_of(families) == {(cut.url, "truncated"): 1.0}


# --------------------------------------------------------------------------- HTTP servers
class BigAgent:
    """An agent stand-in whose scrape takes a moment and is large (a client can hang up)."""

    def render(self, openmetrics: bool = False) -> str:
        time.sleep(0.3)
        return "gpuslo_padding 1\n" * 500_000

    def health(self) -> dict[str, dict[str, object]]:
        return {}


def test_simultaneous_connections_all_complete_their_handshake_and_are_answered():
    from gpuslo.collectors import Agent, AgentServer

    server = AgentServer(Agent([]), "127.0.0.1", 0)  # listening, not yet accepting
    clients: list[socket.socket] = []
    connected: set[socket.socket] = set()
    try:
        for _ in range(200):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(server.address)
            clients.append(sock)
        # Linux retries a dropped SYN after 1 s: a backlog that holds everyone connects all
        # of them before that, while the accept loop is busy (here: not started).
        deadline = time.monotonic() + 0.7
        while len(connected) < len(clients) and time.monotonic() < deadline:
            waiting = [s for s in clients if s not in connected]
            _, writable, _ = select.select([], waiting, [], 0.1)
            connected.update(
                s for s in writable if not s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            )
        server.start()
        answered = 0
        if len(connected) == 200:
            for sock in clients:
                sock.setblocking(True)
                sock.settimeout(20)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for sock in clients:
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                answered += data.startswith(b"HTTP/1.1 200")
    finally:
        for sock in clients:
            sock.close()
        server.stop()
    assert len(connected) == 200
    assert answered == 200


def _handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request" in t.name]


def test_a_client_hanging_up_mid_response_leaves_no_traceback(capsys, caplog):
    from gpuslo.collectors import AgentServer

    server = AgentServer(BigAgent(), "127.0.0.1", 0)  # type: ignore[arg-type]
    server.start()
    try:
        for _ in range(3):
            sock = socket.create_connection(server.address, timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.05)
            # Hang up with a reset while the server is still preparing the answer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        ends = time.monotonic() + 10
        while _handler_threads() and time.monotonic() < ends:
            time.sleep(0.05)
        assert not _handler_threads()
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_an_idle_connection_is_closed_by_the_server():
    from gpuslo.collectors import Agent, AgentServer

    server = AgentServer(Agent([]), "127.0.0.1", 0, timeout=0.5)
    server.start()
    try:
        sock = socket.create_connection(server.address, timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive, then idle
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 5  # closed after the idle timeout, not held open
        sock.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- the agent
def test_sigterm_stops_a_serving_agent_with_a_stuck_target_within_3s():
    with servers(trickle) as (slow,):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpuslo",
                "agent",
                "--gpu-backend=sim",
                "--no-collector.infiniband",
                "--listen=127.0.0.1:0",
                "--interval=0.2",
                f"--server-target={slow.url}",
                "--server-timeout=20",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            while line and "serving on" not in line:
                line = proc.stderr.readline()
            assert "serving on" in line
            ends = time.monotonic() + 15
            while not slow.accepted and time.monotonic() < ends:
                time.sleep(0.05)
            assert slow.accepted  # a scrape is stuck on the trickling target
            time.sleep(0.3)
            proc.send_signal(15)
            started = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert took < 3, took
    assert "Traceback" not in err, err


@pytest.mark.parametrize("flag", ["--server-max-bytes=0", "--server-timeout=0"])
def test_agent_refuses_bad_target_limits(flag):
    from tests.conftest import run_gpuslo

    out = run_gpuslo(
        "agent",
        "--once",
        "--no-collector.gpu",
        "--no-collector.infiniband",
        "--server-target=http://127.0.0.1:9/metrics",
        flag,
    )
    assert out.returncode == 2 and "must be" in out.stderr and "Traceback" not in out.stderr
