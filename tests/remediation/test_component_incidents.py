"""Every page becomes an incident, end to end: a real Prometheus holding a cluster's history
(a replica of the SLO's Deployment goes NotReady and the SLO burns), two real Alertmanagers
that do not gossip (an HA pair: both deliver), the hook with its incident service, and
loopback chat and generic webhooks that record what they are sent.

Also here: a Prometheus that never answers does not delay an action, and an alert storm fills
the bounded explanation queue, is counted, and still acts on every page."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpuslo.foundation.promlab import Prometheus
from gpuslo.remediation.actuators import LogActuator
from gpuslo.remediation.engine import Remediator
from gpuslo.remediation.incidents import Explainer, Incidents, IncidentStore
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.notify import ChatTarget, Notifier, WebhookTarget
from gpuslo.remediation.policy import load_policy
from gpuslo.remediation.server import Hook, Metrics
from gpuslo.slo_engine import load_specs
from tests.remediation.incident_history import SLOS, WINDOWS, page_time, write_history
from tests.remediation.receivers import Blackhole, Receiver
from tests.remediation.test_component_remediation import start_alertmanager

pytestmark = pytest.mark.component

TOKEN = "incident-token"
POOL = "Deployment/serving/llama-70b"
EXTERNAL = "https://gpuslo.example.com"
POLICY = f"""\
apiVersion: gpuslo/v1
kind: RemediationPolicy
settings:
  incidents: {{external_url: "{EXTERNAL}", workers: WORKERS, queue: QUEUE}}
policies:
  - name: availability-scale
    match: {{severity: page}}
    action:
      scale_pool: {{pool: {{namespace: serving, name: llama-70b}}, step: 1, max: 1000}}
    cooldown: 0s
    rate_limit: {{max: 1000, per: 1h}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("incidents")
    write_history(tmp / "history.om")
    (tmp / "slos.yaml").write_text(SLOS)
    (tmp / "windows.yaml").write_text(WINDOWS)
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(tmp / "history.om")
        prom.restart()
        slos, _ = load_specs([tmp / "slos.yaml"])
        yield prom, slos


class Setup:
    def __init__(self, tmp: Path, prometheus: str, slos: Any, workers: int = 4, queue: int = 64):
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY.replace("WORKERS", str(workers)).replace("QUEUE", str(queue)))
        spec = load_policy(policy)
        self.chat, self.webhook = Receiver(), Receiver()
        self.actuator = LogActuator(pools={POOL: 2})
        self.journal = Journal(tmp / "journal.db")
        metrics = Metrics()
        store = IncidentStore(self.journal)
        self.incidents = Incidents(
            store,
            spec.settings.incidents,
            metrics.registry,
            explain=Explainer(prometheus, slos, 15.0, timeout=60),
        )
        self.incidents.notifier = Notifier(
            store,
            [ChatTarget(self.chat.url, EXTERNAL), WebhookTarget(self.webhook.url, EXTERNAL)],
            self.incidents.metrics,
        )
        remediator = Remediator(spec, self.journal, self.actuator, on_outcome=metrics.outcome)
        self.hook = Hook(
            remediator, metrics, port=0, token=TOKEN, incidents=self.incidents, tick=0.2
        ).start()
        self.url = f"http://127.0.0.1:{self.hook.port}"

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, Any, dict[str, str]]:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with opener.open(urllib.request.Request(self.url + path, headers=headers)) as resp:
                body = resp.read()
                code, hdrs = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            body, code, hdrs = err.read(), err.code, dict(err.headers)
        kind = hdrs.get("Content-Type", "")
        return code, (json.loads(body) if "json" in kind and body else body.decode()), hdrs

    def incidents_now(self) -> list[dict[str, Any]]:
        return self.get("/v1/incidents")[1]["incidents"]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        text = self.get("/metrics", token=None)[1]
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.split("{", 1)[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def close(self) -> None:
        self.hook.stop()
        self.chat.close()
        self.webhook.close()
        self.journal.close()


def post_alerts(am: str, starts: float, cases: list[str], ends: datetime | None = None) -> None:
    alerts = []
    for case in cases:
        alert: dict[str, Any] = {
            "labels": {
                "alertname": "GpusloBudgetBurn",
                "slo": "llama-availability",
                "service": "chat",
                "severity": "page",
                "tier": "page-fast",
                "case": case,
            },
            "annotations": {"summary": "burning"},
            "startsAt": datetime.fromtimestamp(starts, UTC).isoformat(),
        }
        if ends is not None:
            alert["endsAt"] = ends.isoformat()
        alerts.append(alert)
    req = urllib.request.Request(
        am + "/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5):
        pass


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_page_is_one_explained_incident_announced_once_and_updated_once(
    cluster, tmp_path, process
):
    prom, slos = cluster
    s = Setup(tmp_path, prom.url, slos)
    try:
        ams = [
            start_alertmanager(tmp_path / n, process, s.hook.port, TOKEN) for n in ("am1", "am2")
        ]
        for am in ams:
            post_alerts(am, page_time(), ["one"])
        (incident,) = wait_for(
            lambda: [i for i in s.incidents_now() if i["explanation"]["status"] != "pending"],
            what="the explained incident",
        )
        # Both Alertmanagers delivered: the second copy found the incident (and the action).
        wait_for(
            lambda: s.metric("gpuslo_remediation_decisions_total", decision="duplicate") >= 1,
            what="the duplicate delivery",
        )
        assert len(s.incidents_now()) == 1
        assert s.actuator.calls == [("scale", POOL, 3)]
        explanation = incident["explanation"]
        assert explanation["status"] == "explained", explanation
        top = explanation["causes"][0]
        assert top["kind"] == "replica_loss"
        assert top["entity"] == {"namespace": "serving", "pool": "llama-70b"}
        evidence = top["evidence"][0]
        assert (evidence["before"], evidence["after"]) == (4.0, 3.0)
        assert "kube_pod_status_ready" in evidence["query"]
        ident = incident["id"]

        def charted():  # the chart series are fetched after the explanation is stored
            got = s.get(f"/v1/incidents/{ident}")[1]["explanation"]["causes"][0]
            return got["evidence"][0].get("series")

        series = wait_for(charted, what="the evidence series")
        assert len(series) > 10 and {v for _, v in series} == {3.0, 4.0}
        assert explanation["radius"]["pools"] == ["llama-70b"]
        assert incident["started_at"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(page_time())
        )
        assert incident["url"] == f"{EXTERNAL}/incidents/{ident}"
        acted = wait_for(
            lambda: s.get(f"/v1/incidents/{ident}")[1]["actions"], what="the linked action"
        )
        assert [(a["kind"], a["status"]) for a in acted] == [("scale_pool", "acted")]

        wait_for(lambda: s.chat.requests, what="the chat message")
        wait_for(lambda: s.webhook.requests, what="the webhook message")
        time.sleep(1.0)
        (message,) = s.chat.bodies()
        assert "replica loss" in message["text"] and "llama-availability" in message["text"]
        assert message["blocks"][0]["type"] == "header"
        button = message["blocks"][-1]["elements"][0]
        assert button["url"] == f"{EXTERNAL}/incidents/{ident}"
        assert [b["event"] for b in s.webhook.bodies()] == ["incident.opened"]

        for am in ams:
            post_alerts(am, page_time(), ["one"], ends=datetime.now(UTC))
        wait_for(lambda: len(s.chat.requests) == 2, what="the chat update")
        wait_for(lambda: len(s.webhook.requests) == 2, what="the webhook update")
        time.sleep(1.5)  # the second Alertmanager's resolved copy sends nothing more
        assert len(s.chat.requests) == 2 and len(s.webhook.requests) == 2
        assert s.chat.bodies()[1]["text"].startswith("Resolved after")
        assert s.webhook.bodies()[1]["event"] == "incident.resolved"
        resolved = s.get(f"/v1/incidents/{ident}")[1]
        assert resolved["status"] == "resolved" and resolved["resolved_at"]
        assert set(resolved["deliveries"]) == {"chat", "webhook"}

        code, page, _ = s.get(f"/incidents/{ident}")
        assert code == 200 and "<img src='data:image/png;base64," in page
        assert "replica_loss" in page and "availability-scale" in page
        assert s.get(f"/incidents/{ident}", token=None)[0] == 401
        code, _, headers = s.get(
            "/incidents/open?slo=llama-availability&service=chat&tier=page-fast"
        )
        assert code == 302 and headers["Location"] == f"/incidents/{ident}"
        assert s.get("/incidents/open?slo=other")[0] == 404
        assert s.get("/v1/incidents/ffff")[0] == 404
        assert s.metric("gpuslo_incident_explanation_seconds_count") == 1
        spec = s.get("/openapi.json", token=None)[1]
        assert {"/v1/incidents", "/v1/incidents/{id}", "/incidents/{id}"} <= set(spec["paths"])
    finally:
        s.close()


def test_a_prometheus_that_never_answers_delays_no_action(cluster, tmp_path, process):
    _, slos = cluster
    hole = Blackhole()
    s = Setup(tmp_path, hole.url, slos)
    try:
        am = start_alertmanager(tmp_path / "am", process, s.hook.port, TOKEN)
        posted = time.monotonic()
        post_alerts(am, page_time(), ["slow"])
        wait_for(lambda: s.actuator.calls, what="the action")
        acted_after = time.monotonic() - posted
        assert acted_after < 3.0, f"the action waited {acted_after:.1f}s"
        (incident,) = s.incidents_now()
        assert incident["explanation"]["status"] == "pending"  # still waiting on Prometheus
        assert [a["status"] for a in incident["actions"]] == ["acted"]
    finally:
        s.close()
        hole.close()


def test_an_alert_storm_is_bounded_counted_and_every_page_still_acts(cluster, tmp_path, process):
    _, slos = cluster
    hole = Blackhole()
    s = Setup(tmp_path, hole.url, slos, workers=1, queue=2)
    try:
        am = start_alertmanager(tmp_path / "am", process, s.hook.port, TOKEN)
        cases = [f"storm-{i:02d}" for i in range(20)]
        post_alerts(am, page_time(), cases)
        wait_for(lambda: len(s.actuator.calls) == 20, what="20 actions")
        incidents = wait_for(
            lambda: (found := s.incidents_now()) and len(found) == 20 and found,
            what="20 incidents",
        )
        states = sorted(i["explanation"]["status"] for i in incidents)
        # One page with the worker (hanging on Prometheus), two queued, the rest skipped.
        assert states == ["pending"] * 3 + ["skipped"] * 17
        skipped = [i for i in incidents if i["explanation"]["status"] == "skipped"]
        assert "queue full" in skipped[0]["explanation"]["reason"]
        assert skipped[0]["explained_at"] is None
        assert s.metric("gpuslo_incident_explanations_skipped_total") == 17
        assert s.metric("gpuslo_incident_explanation_queue_depth") == 2
        # A skipped page is still announced, without causes.
        wait_for(lambda: len(s.chat.requests) == 17, what="17 chat messages")
        assert all("No cause named" in b["text"] for b in s.chat.bodies())
    finally:
        s.close()
        hole.close()
