"""The hook's HTTP edge under hostile or unusual clients, with real HTTP to a Hook on
127.0.0.1: bounded bodies and parses, a real listen backlog, idle and half-open timeouts, quiet
hang-ups, and every version-4 delivery shape real senders produce (pre-0.19 Alertmanager
without ``fingerprint``, relays without a per-alert ``status``), still acting exactly once."""

from __future__ import annotations

import http.client
import json
import select
import socket
import struct
import threading
import time
from typing import Any

import pytest

from gpuslo.remediation import server as server_mod
from gpuslo.remediation.actuators import LogActuator
from gpuslo.remediation.engine import Remediator
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import load_policy
from gpuslo.remediation.server import Hook, Metrics

TOKEN = "t"
POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
policies:
  - name: any-page
    match: {severity: page}
    action:
      scale_pool: {pool: {name: llama}, step: 1, max: 100000}
    cooldown: 0s
    rate_limit: {max: 100000, per: 1h}
"""
ALERT = {
    "status": "firing",
    "labels": {"alertname": "GpusloBudgetBurn", "severity": "page", "slo": "chat-ttft"},
    "annotations": {},
    "startsAt": "2026-11-22T10:00:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "",
    "fingerprint": "abc",
}


def payload(group: str = "g", **alert: Any) -> dict[str, Any]:
    a = {**ALERT, **alert}
    return {
        "version": "4",
        "groupKey": group,
        "status": "firing",
        "receiver": "gpuslo",
        "alerts": [{k: v for k, v in a.items() if v is not None}],
    }


@pytest.fixture
def hook(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    journal = Journal(tmp_path / "journal.db")
    remediator = Remediator(load_policy(tmp_path / "policy.yaml"), journal, LogActuator())
    hook = Hook(remediator, Metrics(), port=0, token=TOKEN, tick=0.05)
    hook.idle_timeout = 1.0  # a test attribute: the unmodified Hook ignores it
    yield hook
    hook.stop()
    journal.close()


def post(hook: Hook, body: bytes, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", hook.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/v1/alerts",
            body=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def raw(hook: Hook, data: bytes, timeout: float = 5) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", hook.port), timeout=timeout)
    s.sendall(data)
    return s


def read_all(s: socket.socket, limit: float = 5) -> bytes:
    """Everything the server sends until it closes (or ``limit`` seconds pass)."""
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"server did not close within {limit}s; got {out[:200]!r}")


def head(length: str | None, extra: str = "") -> bytes:
    cl = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{cl}{extra}\r\n"
    ).encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# ----------------------------------------------------------------- bounded parses


def test_deep_json_answers_400_quickly(hook):
    hook.start()
    for body in (b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000):
        started = time.monotonic()
        code, answer = post(hook, body)
        assert code == 400 and "deep" in answer["error"], answer
        assert time.monotonic() - started < 2
    # a whole body's worth of brackets, too
    started = time.monotonic()
    code, answer = post(hook, b"[" * server_mod.MAX_BODY)
    assert code == 400 and time.monotonic() - started < 3


def test_huge_numbers_answer_400_quickly(hook):
    hook.start()
    for number in (b"9" * 5000, b"1." + b"5" * 5000, b"-" + b"7" * 100_000):
        body = b'{"version": "4", "truncatedAlerts": ' + number + b"}"
        started = time.monotonic()
        code, answer = post(hook, body)
        assert code == 400 and "number" in answer["error"], answer
        assert time.monotonic() - started < 2


# ----------------------------------------------------------------- the listen backlog


def test_a_burst_of_connections_waits_in_the_backlog(hook):
    """64 clients connect at once while the hook is not accepting yet: the kernel's queue
    holds them all (a backlog of 5 holds six and drops the rest's SYNs)."""
    socks = []
    try:
        for _ in range(64):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", hook.port))
            socks.append(s)
        deadline = time.monotonic() + 0.8
        pending = set(socks)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.05)
            pending -= set(writable)
        hook.start()
        assert not pending, f"{len(pending)} of 64 connections not queued"
        body = json.dumps(payload()).encode()
        for s in socks:
            s.setblocking(True)
            s.settimeout(10)
            s.sendall(head(str(len(body)), "Connection: close\r\n") + body)
        assert [status_of(read_all(s, 15)) for s in socks] == [200] * 64
    finally:
        for s in socks:
            s.close()


def test_sixty_simultaneous_deliveries_are_all_answered(hook):
    hook.start()
    n = 60
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def deliver(i: int) -> None:
        body = json.dumps(payload(group=f"g{i % 7}")).encode()
        barrier.wait()
        try:
            results[i] = post(hook, body, timeout=20)[0]
        except OSError as err:
            results[i] = repr(err)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * n


# ----------------------------------------------------------------- bounded bodies


def test_content_length_over_the_cap_is_refused_before_the_body(hook):
    """413 without reading a byte of the body, and the connection closes: the unread body must
    not be taken for the next request."""
    hook.start()
    s = raw(hook, head(str(server_mod.MAX_BODY + 1)) + b"GET /healthz HTTP/1.1\r\n\r\n")
    try:
        answer = read_all(s)
        assert status_of(answer) == 413
        assert answer.count(b"HTTP/1.1") == 1, answer  # the 'body' was not served as a request
    finally:
        s.close()


@pytest.mark.parametrize("length", ["-1", "abc", "10, 12"])
def test_a_bad_content_length_answers_400_and_closes(hook, length):
    hook.start()
    s = raw(hook, head(length) + b"GET /healthz HTTP/1.1\r\n\r\n")
    try:
        answer = read_all(s)
        assert status_of(answer) == 400 and answer.count(b"HTTP/1.1") == 1, answer
    finally:
        s.close()


def test_expect_100_continue_over_the_cap_gets_413_not_100(hook):
    hook.start()
    s = raw(hook, head(str(server_mod.MAX_BODY + 1), "Expect: 100-continue\r\n"))
    try:
        assert status_of(read_all(s)) == 413
    finally:
        s.close()


def chunked(body: bytes, size: int = 100) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_a_chunked_delivery_is_accepted(hook):
    hook.start()
    body = json.dumps(payload()).encode()
    s = raw(hook, head(None, "Transfer-Encoding: chunked\r\nConnection: close\r\n") + chunked(body))
    try:
        answer = read_all(s)
        assert status_of(answer) == 200, answer
        assert b'"acted"' in answer
    finally:
        s.close()


def test_a_chunked_body_over_the_cap_answers_413(hook):
    hook.start()
    over = b"%x\r\n%s\r\n" % (server_mod.MAX_BODY + 1, b"")
    s = raw(hook, head(None, "Transfer-Encoding: chunked\r\n") + over)
    try:
        assert status_of(read_all(s)) == 413
    finally:
        s.close()


# ----------------------------------------------------------------- timeouts and hang-ups


def test_an_idle_connection_is_closed(hook):
    hook.start()
    s = socket.create_connection(("127.0.0.1", hook.port), timeout=5)
    try:
        started = time.monotonic()
        assert read_all(s, limit=5) == b""
        assert time.monotonic() - started < 4
    finally:
        s.close()


def test_a_half_sent_body_times_out(hook):
    hook.start()
    s = raw(hook, head("100") + b'{"version":')
    try:
        started = time.monotonic()
        answer = read_all(s, limit=6)
        assert answer == b"" or status_of(answer) == 408, answer
        assert time.monotonic() - started < 5
    finally:
        s.close()


def test_clients_that_hang_up_leave_no_traceback(hook, capfd):
    hook.start()
    body = json.dumps(payload()).encode()
    for _ in range(5):
        s = raw(hook, head(str(len(body))) + body)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()
    s = raw(hook, head("100") + b"{")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.5)
    assert post(hook, body)[0] == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


# ----------------------------------------------------------------- accepted shapes


def test_a_pre_0_19_payload_without_fingerprint_acts_once(hook):
    hook.start()
    body = json.dumps(payload(fingerprint=None)).encode()
    code, first = post(hook, body)
    assert code == 200, first
    assert [o["decision"] for o in first["outcomes"]] == ["acted"]
    code, second = post(hook, body)
    assert code == 200 and [o["decision"] for o in second["outcomes"]] == ["duplicate"]
    # the derived fingerprint is Alertmanager's own: an upgrade mid-episode stays one episode
    fp = first["outcomes"][0]["fingerprint"]
    code, third = post(hook, json.dumps(payload(fingerprint=fp)).encode())
    assert [o["decision"] for o in third["outcomes"]] == ["duplicate"]
    assert len(hook.remediator.journal.query(status="acted")) == 1


def test_a_relay_payload_without_alert_status_acts_once(hook):
    hook.start()
    body = json.dumps(payload(status=None)).encode()
    code, first = post(hook, body)
    assert code == 200, first
    assert [o["decision"] for o in first["outcomes"]] == ["acted"]
    code, second = post(hook, body)
    assert code == 200 and [o["decision"] for o in second["outcomes"]] == ["duplicate"]
    both = json.dumps(payload(group="g2", status=None, fingerprint=None)).encode()
    assert [o["decision"] for o in post(hook, both)[1]["outcomes"]] == ["acted"]
    assert [o["decision"] for o in post(hook, both)[1]["outcomes"]] == ["duplicate"]
    assert len(hook.remediator.journal.query(status="acted")) == 2


def test_the_derived_fingerprint_is_alertmanagers():
    """prometheus/common model.LabelSet.Fingerprint: FNV-1a 64 over the sorted label names and
    values, each followed by the 0xff separator byte; Alertmanager prints it as %016x. The
    expected values are prometheus/common's own test vectors (signature_test.go)."""
    from gpuslo.remediation.webhook import fingerprint

    assert fingerprint({}) == f"{14695981039346656037:016x}"
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert fingerprint(labels) == f"{5799056148416392346:016x}" == "507a62d79ee76c9a"


def test_openapi_says_fingerprint_and_status_are_optional(hook):
    hook.start()
    conn = http.client.HTTPConnection("127.0.0.1", hook.port, timeout=5)
    try:
        conn.request("GET", "/openapi.json")
        schema = json.loads(conn.getresponse().read())["components"]["schemas"]["Alert"]
    finally:
        conn.close()
    assert schema["required"] == ["labels", "startsAt"]
    assert {"fingerprint", "status"} <= set(schema["properties"])
