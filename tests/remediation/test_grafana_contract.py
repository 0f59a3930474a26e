"""The Grafana annotation of an incident against a recorded API contract
(``contracts/grafana_annotations.json``, written from Grafana's Annotations HTTP API
reference, not captured): one ``POST /api/annotations`` on the SLO's drill-down dashboard when
the incident is explained, one ``PATCH /api/annotations/{id}`` moving ``timeEnd`` to the
resolution, a bearer service-account token, and a refused token recorded, not raised."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gpuslo.remediation.incidents import Incidents, IncidentStore, dashboard_uid
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.notify import GrafanaAnnotations, Notifier
from gpuslo.remediation.policy import IncidentSettings
from gpuslo.remediation.webhook import parse_payload

CONTRACT = json.loads((Path(__file__).parent / "contracts/grafana_annotations.json").read_text())
TOKEN = "glsa_service_account_token"
CAUSE = {
    "kind": "thermal_throttle",
    "entity": {"Hostname": "gpu-node-00", "gpu": "1"},
    "score": 0.9,
    "summary": "thermal throttle: thermal throttling (s/s) on Hostname=gpu-node-00, gpu=1 rose",
    "evidence": [],
}


class GrafanaContract:
    """Answers each request with the contract's next exchange; records every difference."""

    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self.exchanges, self.problems = list(exchanges), []
        self.bodies: list[Any] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                me.bodies.append(body)
                if not me.exchanges:
                    me.problems.append(f"unexpected {self.command} {self.path}")
                    return self._reply(500, {"message": "not in contract"})
                want = me.exchanges.pop(0)
                req = want["request"]
                if (self.command, self.path) != (req["method"], req["path"]):
                    me.problems.append(f"{self.command} {self.path}, want {req['path']}")
                for name, value in req.get("headers", {}).items():
                    if self.headers.get(name) != value:
                        me.problems.append(f"header {name}: {self.headers.get(name)!r}")
                for key, value in req.get("body", {}).items():
                    if (body or {}).get(key) != value:
                        me.problems.append(f"body {key}: {(body or {}).get(key)!r}, want {value!r}")
                self._reply(want["response"]["status"], want["response"]["body"])

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PATCH = _serve

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def payload(status: str) -> Any:
    alert = {
        "status": status,
        "labels": {
            "alertname": "GpusloBudgetBurn",
            "slo": "chat-ttft",
            "service": "chat",
            "severity": "page",
            "tier": "page-fast",
        },
        "startsAt": "2026-11-22T10:00:00Z",
        "endsAt": "2026-11-22T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": "0123456789abcdef",
    }
    body = {"version": "4", "groupKey": "g", "status": status, "alerts": [alert]}
    return parse_payload(json.dumps(body).encode())


@pytest.fixture
def incidents(tmp_path):
    journal = Journal(tmp_path / "journal.db")
    servers: list[GrafanaContract] = []

    def start(exchanges: list[dict[str, Any]]) -> tuple[Incidents, GrafanaContract]:
        grafana = GrafanaContract(exchanges)
        servers.append(grafana)
        store = IncidentStore(journal)
        inc = Incidents(
            store,
            IncidentSettings(external_url="https://gpuslo.example"),
            CollectorRegistry(),
            explain=lambda labels, at: {"causes": [CAUSE]},
        )
        target = GrafanaAnnotations(
            grafana.url,
            TOKEN,
            lambda i: dashboard_uid(i.slo, i.service, False),
            1,
            "https://gpuslo.example",
        )
        inc.notifier = Notifier(store, [target], inc.metrics, retries=(0.01, 0.01))
        return inc.start(), grafana

    yield start
    for g in servers:
        g.close()
    journal.close()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_an_incident_is_one_annotation_made_a_region_when_it_resolves(incidents):
    inc, grafana = incidents(CONTRACT["open_and_resolve"])
    try:
        (ident,) = inc.observe(payload("firing")).values()
        wait_for(lambda: inc.store.get(ident).deliveries.get("grafana"))
        inc.observe(payload("firing"))  # a repeat delivery: nothing more
        inc.observe(payload("resolved"))
        wait_for(lambda: "resolved" in inc.store.get(ident).deliveries["grafana"])
        inc.observe(payload("resolved"))
        time.sleep(0.3)
    finally:
        inc.stop()
    assert grafana.problems == [] and grafana.exchanges == []
    create, patch = grafana.bodies
    assert set(create) <= set(CONTRACT["documented_fields"]["create"])
    assert set(patch) <= set(CONTRACT["documented_fields"]["patch"])
    assert create["text"].startswith("chat-ttft (chat) is burning its error budget")
    assert f'href="https://gpuslo.example/incidents/{ident}"' in create["text"]
    assert inc.store.get(ident).deliveries["grafana"]["id"] == 1


def test_a_refused_token_is_recorded_on_the_incident_and_counted(incidents):
    inc, grafana = incidents(CONTRACT["unauthorized"])
    try:
        (ident,) = inc.observe(payload("firing")).values()
        error = wait_for(lambda: inc.store.get(ident).deliveries.get("grafana", {}).get("error"))
    finally:
        inc.stop()
    assert "HTTP 401" in error and grafana.exchanges == []
    assert inc.metrics.notifications.labels("grafana", "failed")._value.get() == 1
