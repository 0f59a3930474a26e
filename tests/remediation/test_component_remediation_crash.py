"""Crash between deciding and acting: the hook runs as its own process (``gpuslo remediate
serve``) against a pool API in the test that kills it with SIGKILL on its first change, either
before or after applying that change. After a restart and a repeat delivery of the same alert,
the pool has been changed to the planned state exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gpuslo.remediation.journal import Journal
from tests.conftest import free_port, wait_http

pytestmark = pytest.mark.component

POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
policies:
  - name: ttft-scale
    match: {slo: chat-ttft}
    action:
      scale_pool: {pool: {namespace: inference, name: llama}, step: 2, max: 10}
"""
ALERT = {
    "version": "4",
    "groupKey": '{}:{alertname="GpusloBudgetBurn"}',
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "GpusloBudgetBurn", "slo": "chat-ttft"},
            "startsAt": "2026-11-22T10:00:00Z",
            "fingerprint": "f00d",
        }
    ],
}


class Pool:
    """The twin's pool API for one pool; kills ``victim`` on the first PUT."""

    def __init__(self, apply_before_kill: bool) -> None:
        self.replicas = 2
        self.puts: list[int] = []
        self.victim: subprocess.Popen[bytes] | None = None
        self.apply_before_kill = apply_before_kill
        pool = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply({"replicas": pool.replicas})

            def do_PUT(self) -> None:
                wanted = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                first = not pool.puts
                pool.puts.append(wanted["replicas"])
                if first and pool.apply_before_kill:
                    pool.replicas = wanted["replicas"]
                if first and pool.victim is not None:
                    os.kill(pool.victim.pid, signal.SIGKILL)
                    pool.victim.wait()
                    return  # the hook is gone: no answer
                pool.replicas = wanted["replicas"]
                self._reply({"replicas": pool.replicas})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"


def start_hook(tmp_path, pool: Pool, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpuslo",
            "remediate",
            "serve",
            "--policy",
            str(tmp_path / "policy.yaml"),
            "--listen",
            f"127.0.0.1:{port}",
            "--journal",
            str(tmp_path / "journal.db"),
            "--actuator",
            "twin",
            "--twin-url",
            pool.url,
        ],
        env={**os.environ, "GPUSLO_REMEDIATE_TOKEN": "t"},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "hook.log").open("ab"),
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc


def deliver(port: int) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/alerts",
        data=json.dumps(ALERT).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer t"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except (urllib.error.URLError, ConnectionError):
        return 0  # the hook died mid-request; Alertmanager would retry


@pytest.mark.parametrize(
    "apply_before_kill", [True, False], ids=["killed-after-applying", "killed-before-applying"]
)
def test_one_action_survives_a_crash_between_decided_and_acted(tmp_path, apply_before_kill):
    (tmp_path / "policy.yaml").write_text(POLICY)
    pool = Pool(apply_before_kill)
    port = free_port()
    hook = start_hook(tmp_path, pool, port)
    pool.victim = hook
    try:
        assert deliver(port) == 0 and hook.wait(timeout=10) == -signal.SIGKILL
        journal = Journal(tmp_path / "journal.db")
        assert [e.status for e in journal.query()] == ["decided"]  # written before acting
        journal.close()
        pool.victim = None
        hook = start_hook(tmp_path, pool, port)  # resumes the decision at start-up
        assert deliver(port) == 200  # Alertmanager's retry of the same notification
        assert deliver(port) == 200
    finally:
        hook.terminate()
        hook.wait(timeout=10)
        pool.http.shutdown()
    journal = Journal(tmp_path / "journal.db")
    entries = journal.query()
    assert [(e.kind, e.status) for e in entries] == [("scale_pool", "acted")]
    assert entries[0].reason.startswith("resumed after restart")
    assert pool.replicas == 4  # 2 + one step, once
    assert set(pool.puts) == {4}  # every call set the planned state; none added a step again
