"""The incident service without external binaries: identity and exactly-once storage in the
journal's database, a restart finishing what was left, notifications sent once and updated
once (also when the resolve overtakes the explanation), failing targets recorded, the
drill-down uid matching the generated dashboard, settings validated at their place."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gpuslo.foundation import conventions as c
from gpuslo.foundation.errors import SpecError
from gpuslo.remediation.incidents import (
    ExplainError,
    Incidents,
    IncidentStore,
    dashboard_uid,
    incident_id,
)
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.notify import ChatTarget, Notifier, WebhookTarget, slack_message, targets
from gpuslo.remediation.policy import IncidentSettings, load_policy
from gpuslo.remediation.webhook import parse_payload
from tests.conftest import run_gpuslo
from tests.remediation.receivers import Receiver

LABELS = {
    "alertname": "GpusloBudgetBurn",
    "slo": "chat-ttft",
    "service": "chat",
    "severity": "page",
    "tier": "page-fast",
}
CAUSE = {
    "kind": "thermal_throttle",
    "entity": {"Hostname": "gpu-node-00", "gpu": "1"},
    "score": 0.9,
    "summary": "thermal throttle: thermal throttling (s/s) on Hostname=gpu-node-00, gpu=1 rose",
    "evidence": [],
}


def payload(status: str = "firing", group: str = "g", **labels: str) -> Any:
    alert = {
        "status": status,
        "labels": {**LABELS, **labels},
        "startsAt": "2026-11-22T10:00:00Z",
        "endsAt": "2026-11-22T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": "0123456789abcdef",
    }
    body = {"version": "4", "groupKey": group, "status": status, "alerts": [alert]}
    return parse_payload(json.dumps(body).encode())


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


def service(journal, explain=None, sinks=(), **settings: Any) -> Incidents:
    store = IncidentStore(journal)
    registry = CollectorRegistry()
    inc = Incidents(store, IncidentSettings(**settings), registry, explain=explain)
    inc.notifier = Notifier(store, list(sinks), inc.metrics, retries=(0.01, 0.01))
    return inc


def test_one_incident_per_page_whatever_the_route_and_however_often_delivered(journal):
    calls = []
    inc = service(journal, explain=lambda labels, at: calls.append(at) or {"causes": [CAUSE]})
    inc.start()
    try:
        first = inc.observe(payload(group="route-a"))
        again = inc.observe(payload(group="route-a"))
        other_route = inc.observe(payload(group="route-b"))
        assert first == again == other_route  # fingerprint + startsAt; the group key aside
        (ident,) = first.values()
        assert ident == incident_id(payload().alerts[0])
        wait_for(lambda: inc.store.get(ident).explanation_status == "explained")
        assert len(calls) == 1 and calls[0] == payload().alerts[0].startsAt.timestamp()
        assert inc.observe(payload(status="resolved")) == first
        inc.observe(payload(status="resolved"))
        (stored,) = inc.store.query()
        assert stored.status == "resolved"
        assert stored.resolved == payload(status="resolved").alerts[0].endsAt.timestamp()
        assert stored.result() == {
            "slo": "chat-ttft",
            "started_at": stored.started,
            "explained_at": stored.explained,
            "causes": [{"kind": "thermal_throttle", "entity": CAUSE["entity"], "score": 0.9}],
        }
        assert inc.observe(payload(severity="ticket")) == {}  # not a page
    finally:
        inc.stop()


def test_a_restart_explains_the_pages_left_pending_once(journal):
    inc = service(journal)  # no explainer: nothing taken from the queue
    inc.explain = lambda labels, at: {"causes": []}
    inc._offer = lambda *args: None  # the process dies before a worker takes the page
    (ident,) = inc.observe(payload()).values()
    assert inc.store.get(ident).explanation_status == "pending"
    calls = []
    again = service(journal, explain=lambda labels, at: calls.append(1) or {"causes": []})
    assert again.resume() == 1
    again.start()
    try:
        wait_for(lambda: again.store.get(ident).explanation_status == "explained")
        assert again.store.explained(ident, "explained", {}, 0.0) is False  # stored once
        assert calls == [1]
    finally:
        again.stop()


def test_an_explanation_error_is_stored_as_the_reason(journal):
    def fails(labels, at):
        raise ExplainError("no SLO named 'chat-ttft' in settings.slo_specs")

    inc = service(journal, explain=fails).start()
    try:
        (ident,) = inc.observe(payload()).values()
        got = wait_for(lambda: (i := inc.store.get(ident)).explanation_status != "pending" and i)
        assert got.explanation_status == "failed"
        assert "no SLO named" in got.headline()
    finally:
        inc.stop()


def test_a_resolve_that_overtakes_the_explanation_still_gives_one_message_then_one_update(
    journal,
):
    chat, hook = Receiver(), Receiver()
    release = threading.Event()

    def slow(labels, at):
        release.wait(10)
        return {"causes": [CAUSE], "radius": {"pods": ["a"], "gpus": 1, "nodes": [], "pools": []}}

    sinks = [ChatTarget(chat.url, "https://gpuslo.example"), WebhookTarget(hook.url, None)]
    inc = service(journal, explain=slow, sinks=sinks).start()
    try:
        (ident,) = inc.observe(payload()).values()
        inc.observe(payload(status="resolved"))
        time.sleep(0.3)
        assert chat.requests == []  # nothing before the explanation
        release.set()
        wait_for(lambda: len(chat.requests) == 2 and len(hook.requests) == 2)
        inc.observe(payload(status="resolved"))
        inc.observe(payload())
        time.sleep(0.3)
        opened, resolved = chat.bodies()
        assert (
            opened["text"].startswith("chat-ttft (chat) is burning")
            and "thermal" in (opened["text"])
        )
        assert resolved["text"].startswith("Resolved after 30m")
        assert [b["event"] for b in hook.bodies()] == ["incident.opened", "incident.resolved"]
        deliveries = inc.store.get(ident).deliveries
        assert set(deliveries["chat"]) == {"opened", "resolved"}
    finally:
        inc.stop()
        chat.close()
        hook.close()


def test_a_chat_api_that_answers_a_message_ts_gets_the_update_in_its_thread(journal):
    chat = Receiver(answer={"ok": True, "channel": "C123", "ts": "1700000000.000100"})
    inc = service(
        journal,
        explain=lambda labels, at: {"causes": []},
        sinks=[ChatTarget(chat.url, None, "xoxb")],
    )
    inc.start()
    try:
        inc.observe(payload())
        wait_for(lambda: chat.requests)
        inc.observe(payload(status="resolved"))
        wait_for(lambda: len(chat.requests) == 2)
        update = chat.bodies()[1]
        assert update["thread_ts"] == "1700000000.000100" and update["channel"] == "C123"
        assert chat.requests[0][2]["Authorization"] == "Bearer xoxb"
    finally:
        inc.stop()
        chat.close()


def test_a_failing_target_is_retried_then_recorded_and_counted(journal):
    chat = Receiver(answer={"error": "no_service"}, status=404)
    inc = service(
        journal, explain=lambda labels, at: {"causes": []}, sinks=[ChatTarget(chat.url, None)]
    )
    inc.start()
    try:
        (ident,) = inc.observe(payload()).values()
        wait_for(lambda: "error" in inc.store.get(ident).deliveries.get("chat", {}))
        assert len(chat.requests) == 3  # the first try and two retries
        error = inc.store.get(ident).deliveries["chat"]["error"]
        assert "HTTP 404" in error and chat.url.split("//")[1] in error
        assert inc.metrics.notifications.labels("chat", "failed")._value.get() == 1
    finally:
        inc.stop()
        chat.close()


def test_slack_message_has_text_blocks_and_a_link_to_the_incident(journal):
    inc = service(journal, explain=lambda labels, at: {})
    inc._offer = lambda *args: None  # no worker: the explanation is stored by hand
    (ident,) = inc.observe(payload()).values()
    assert inc.store.explained(ident, "explained", {"causes": [CAUSE]}, 0.0)
    incident = inc.store.get(ident)
    message = slack_message(incident, "https://gpuslo.example/")
    assert message["text"] == incident.headline()
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds == ["header", "section", "section", "context", "actions"]
    assert (
        message["blocks"][-1]["elements"][0]["url"] == f"https://gpuslo.example/incidents/{ident}"
    )
    assert "thermal throttle" in message["blocks"][2]["text"]["text"]


def test_the_drill_down_uid_is_the_generated_dashboards():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    from gpuslo.dashboards.generate import all_dashboards
    from gpuslo.slo_engine import load_specs
    from tests.conftest import ROOT

    slos, _ = load_specs([ROOT / "examples/slos/chat.yaml"])
    built = all_dashboards(slos)
    for slo in slos:
        uid = dashboard_uid(slo.name, slo.service, qualified=False)
        model = json.loads(JSONEncoder().encode(built[f"{uid}.json"]))
        assert model["uid"] == uid
        assert model["panels"][0]["title"].startswith("Error budget remaining")  # panel 1
    assert dashboard_uid("x" * 50, "svc", False) == ("gpuslo-slo-" + "x" * 50)[:40]


def test_the_incident_link_names_the_slo_and_tier():
    link = c.incident_link("https://gpuslo.example/", "chat ttft", "chat", "page-fast")
    assert link == (
        "https://gpuslo.example/incidents/open?slo=chat+ttft&service=chat&tier=page-fast"
    )


POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
settings:
  incidents:
    chat: {url: "https://hooks.example/x", url_file: chat-url}
    grafana: {url: "http://grafana:3000", token_file: grafana-token}
policies:
  - name: p
    match: {severity: page}
    action: {notify_only: {}}
"""


def test_incident_settings_are_checked_at_their_place(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    with pytest.raises(SpecError) as err:
        load_policy(path)
    assert "settings.incidents.chat" in str(err.value)
    assert "give exactly one of url or url_file" in str(err.value)
    path.write_text(POLICY.replace('url: "https://hooks.example/x", ', ""))
    spec = load_policy(path)
    with pytest.raises(ValueError, match=r"incidents\.chat\.url_file .*chat-url"):
        targets(spec.settings.incidents, path, lambda i: "uid")
    (tmp_path / "chat-url").write_text("https://hooks.example/secret\n")
    (tmp_path / "grafana-token").write_text("glsa_token\n")
    sinks = targets(spec.settings.incidents, path, lambda i: "uid")
    assert [s.name for s in sinks] == ["chat", "grafana"]
    assert sinks[0].url == "https://hooks.example/secret"


def test_serve_refuses_a_missing_secret_file_in_one_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace('url: "https://hooks.example/x", ', ""))
    result = run_gpuslo(
        "remediate",
        "serve",
        "--policy",
        str(path),
        "--journal",
        str(tmp_path / "j.db"),
        "--listen",
        "127.0.0.1:0",
    )
    assert result.returncode != 0
    assert "incidents.chat.url_file" in result.stderr and "Traceback" not in result.stderr


def test_generated_page_alerts_link_their_incident_when_an_external_url_is_set():
    from gpuslo.slo_engine import load_specs
    from gpuslo.slo_engine.rules import Layout, alert_rules
    from tests.conftest import ROOT

    slos, _ = load_specs([ROOT / "examples/slos/chat.yaml"])
    slo = next(s for s in slos if s.name == "chat-ttft")
    linked = alert_rules(slo, layout=Layout(incident_url="https://gpuslo.example"))
    tiers = [r for r in linked if r["labels"].get(c.LABEL_TIER) in {t.name for t in slo.tiers}]
    assert tiers and all(
        r["annotations"][c.INCIDENT_ANNOTATION_URL]
        == c.incident_link("https://gpuslo.example", "chat-ttft", "chat", r["labels"]["tier"])
        for r in tiers
    )
    assert all(c.INCIDENT_ANNOTATION_URL not in r["annotations"] for r in alert_rules(slo))


def test_without_prometheus_settings_a_page_is_still_recorded_and_announced(journal):
    chat = Receiver()
    inc = service(journal, sinks=[ChatTarget(chat.url, None)]).start()
    try:
        (ident,) = inc.observe(payload()).values()
        wait_for(lambda: chat.requests)
        incident = inc.store.get(ident)
        assert incident.explanation_status == "unavailable" and incident.explained is None
        assert "settings.prometheus" in chat.bodies()[0]["text"]
    finally:
        inc.stop()
        chat.close()


CLUSTER_POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
settings:
  prometheus: http://127.0.0.1:9
  slo_specs: [slos.yaml]
  dcgm_names: current
  pool_by: {pool_by}
policies:
  - name: page
    match: {{severity: page}}
    action: {{notify_only: {{}}}}
"""


def test_the_cause_analysis_reads_the_cluster_as_the_settings_describe_it(tmp_path):
    """A cluster on dcgm-exporter 4.9 with pools by pod label: both the live incidents and
    the cause checks correlate with those names and that label; a bad pool_by is refused at
    its place in the file."""
    from gpuslo.remediation.engine import CauseCheck
    from gpuslo.remediation.incidents import Explainer
    from tests.remediation.incident_history import SLOS, WINDOWS

    (tmp_path / "slos.yaml").write_text(SLOS)
    (tmp_path / "windows.yaml").write_text(WINDOWS)
    path = tmp_path / "policy.yaml"
    path.write_text(CLUSTER_POLICY.format(pool_by="label:app.kubernetes.io/name"))
    settings = load_policy(path).settings
    for made in (Explainer.from_settings(settings, path), CauseCheck.from_settings(settings, path)):
        assert made.config.naming.host_label == "hostname"  # the current generation's label
        assert made.config.naming.name(c.DCGM_GPU_UTIL) != c.DCGM_GPU_UTIL.name
        assert (made.config.pools.by, made.config.pools.label) == (
            "label",
            "app.kubernetes.io/name",
        )
    path.write_text(CLUSTER_POLICY.format(pool_by="deployment"))
    with pytest.raises(SpecError) as err:
        load_policy(path)
    assert "policy.yaml:7" in str(err.value) and "settings.pool_by" in str(err.value)
    assert "use owner, label or label:NAME" in str(err.value)
