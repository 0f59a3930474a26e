"""The remediation hook behind real Alertmanagers (Debian package), with a real Prometheus for
the data check, all on loopback.

Two Alertmanagers that do not gossip stand in for an HA pair: both deliver every notification,
so the hook sees each episode at least twice and must act once. Alerts are posted to the
Alertmanagers' API the way Prometheus posts them, with a generatorURL carrying the expression.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpuslo.foundation.promlab import Alertmanager
from gpuslo.remediation.actuators import LogActuator
from gpuslo.remediation.engine import DataCheck, Remediator
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import load_policy
from gpuslo.remediation.server import Hook, Metrics
from gpuslo.remediation.webhook import parse_payload
from tests.conftest import start_prometheus

pytestmark = pytest.mark.component

TOKEN = "s3cret-token"
POOL = "Deployment/inference/llama"


def policy_text(prometheus: str, kill: Path) -> str:
    return f"""\
apiVersion: gpuslo/v1
kind: RemediationPolicy
settings: {{prometheus: "{prometheus}", kill_switch: "{kill}"}}
policies:
  - name: ttft-scale
    match: {{slo: chat-ttft, severity: page}}
    action:
      scale_pool: {{pool: {{namespace: inference, name: llama}}, step: 2, min: 1, max: 10}}
    cooldown: 0s
    revert: {{after: 2s}}
"""


def start_alertmanager(tmp: Path, procs, hook_port: int, token: str) -> str:
    config = {
        "route": {
            "receiver": "gpuslo",
            "group_by": ["alertname", "slo", "case"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "gpuslo",
                "webhook_configs": [
                    {
                        "url": f"http://127.0.0.1:{hook_port}/v1/alerts",
                        "send_resolved": True,
                        "http_config": {"authorization": {"credentials": token}},
                    }
                ],
            }
        ],
    }
    # Clustering off: two of these are an HA pair that both deliver.
    am = Alertmanager(tmp, config).start()
    procs.append(am.process)
    return am.url


def post_alert(
    am: str, prometheus: str, expr: str, starts: datetime, ends: datetime | None, case: str = "a"
):
    alert = {
        # As Prometheus sends them: the rule's labels and the expression's series labels.
        "labels": {
            "alertname": "GpusloBudgetBurn",
            "slo": "chat-ttft",
            "severity": "page",
            "job": "self",
            "instance": "127.0.0.1:1",
            "case": case,  # a new alert per case, so Alertmanager notifies at once
        },
        "annotations": {"summary": "burning"},
        "startsAt": starts.isoformat(),
        "generatorURL": f"{prometheus}/graph?" + urllib.parse.urlencode({"g0.expr": expr}),
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    req = urllib.request.Request(
        am + "/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5):
        pass


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def hook(tmp_path, process):
    prometheus = start_prometheus(tmp_path, process, "self", "127.0.0.1:1")  # scrapes nothing
    wait_for(lambda: _has_up(prometheus), what="Prometheus to record up")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_text(prometheus, tmp_path / "kill"))
    actuator = LogActuator(pools={POOL: 2})
    journal = Journal(tmp_path / "journal.db")
    metrics = Metrics()
    spec = load_policy(policy_file)
    remediator = Remediator(
        spec, journal, actuator, data_check=DataCheck(prometheus), on_outcome=metrics.outcome
    )
    hook = Hook(remediator, metrics, port=0, token=TOKEN, tick=0.2).start()
    yield hook, actuator, prometheus, tmp_path
    hook.stop()
    journal.close()


def _has_up(prometheus: str) -> bool:
    q = urllib.parse.urlencode({"query": 'up{job="self"}'})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{q}", timeout=2) as resp:
        return bool(json.load(resp)["data"]["result"])


FRESH = 'up{job="self"} == 0'  # the target is down: the expression returns the series
MISSING = 'up{job="nothing-scrapes-this"} == 0'


def test_firing_acts_once_across_an_ha_pair_and_reverts_after_resolution(hook, process):
    h, actuator, prometheus, tmp = hook
    ams = []
    for name in ("am1", "am2"):
        (tmp / name).mkdir()
        ams.append(start_alertmanager(tmp / name, process, h.port, TOKEN))
    starts = datetime.now(UTC) - timedelta(seconds=5)
    for am in ams:
        post_alert(am, prometheus, FRESH, starts, None)
    wait_for(
        lambda: actuator.calls, what=f"an action; journal: {h.remediator.journal.query}, log: {tmp}"
    )
    # Both Alertmanagers deliver; the second copy must find the decision already made.
    wait_for(
        lambda: (
            len(h.remediator.journal.query(kind="scale_pool")) == 1
            and _decisions(h).get("duplicate", 0) >= 1
        ),
        what="the duplicate delivery",
    )
    assert actuator.calls == [("scale", POOL, 4)]
    for am in ams:
        post_alert(am, prometheus, FRESH, starts, datetime.now(UTC))
    wait_for(lambda: len(actuator.calls) == 2, what="the revert")
    assert actuator.calls[1] == ("scale", POOL, 2)
    entries = {e.kind: e.status for e in h.remediator.journal.query()}
    assert entries == {"scale_pool": "acted", "revert": "acted"}


def test_stale_data_bad_token_and_kill_switch_change_nothing(hook, process):
    h, actuator, prometheus, tmp = hook
    (tmp / "a").mkdir()
    am = start_alertmanager(tmp / "a", process, h.port, TOKEN)
    starts = datetime.now(UTC) - timedelta(seconds=5)
    post_alert(am, prometheus, MISSING, starts, None)
    skipped = wait_for(lambda: h.remediator.journal.query(status="skipped"), what="a skip")
    assert "returns nothing now" in skipped[0].reason

    (tmp / "kill").touch()
    post_alert(am, prometheus, FRESH, starts, None, case="kill")
    wait_for(
        lambda: any(e.reason == "kill switch is on" for e in h.remediator.journal.query()),
        what="the kill switch skip",
    )
    (tmp / "kill").unlink()

    (tmp / "b").mkdir()
    wrong = start_alertmanager(tmp / "b", process, h.port, "wrong-token")
    post_alert(wrong, prometheus, FRESH, starts, None, case="token")
    wait_for(lambda: _errors(h).get("unauthorized", 0) >= 1, what="a 401")
    time.sleep(1)
    assert actuator.calls == []
    assert not h.remediator.journal.query(status="acted")


def test_unauthenticated_and_malformed_requests(hook):
    h, actuator, _, _ = hook
    url = f"http://127.0.0.1:{h.port}/v1/alerts"

    def post(body: bytes, token: str | None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    assert post(b"{}", None)[0] == 401
    assert post(b"{}", "nope")[0] == 401
    code, body = post(b'{"version": "4"}', TOKEN)
    assert code == 400 and "groupKey" in body["error"]
    assert actuator.calls == []
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/openapi.json", timeout=5) as resp:
        assert "/v1/alerts" in json.load(resp)["paths"]


def _metric_values(h: Hook, name: str, label: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            key = labels.split(f'{label}="', 1)[1].split('"', 1)[0]
            out[key] = out.get(key, 0) + float(value)
    return out


def _decisions(h: Hook) -> dict[str, float]:
    return _metric_values(h, "gpuslo_remediation_decisions_total", "decision")


def _errors(h: Hook) -> dict[str, float]:
    return _metric_values(h, "gpuslo_remediation_errors_total", "kind")


def test_the_journal_api_filters_and_needs_the_token(hook):
    h, _, _, _ = hook
    h.remediator.handle(
        parse_payload(
            json.dumps(
                {
                    "version": "4",
                    "groupKey": "g",
                    "status": "firing",
                    "alerts": [
                        {
                            "status": "firing",
                            "labels": {"slo": "other", "severity": "page"},
                            "startsAt": "2026-11-22T10:00:00Z",
                            "fingerprint": "x",
                        }
                    ],
                }
            ).encode()
        )
    )
    h.remediator.journal.insert(
        key="k1", policy="ttft-scale", kind="scale_pool", status="skipped", slo="chat-ttft"
    )
    h.remediator.journal.insert(
        key="k2", policy="ttft-scale", kind="scale_pool", status="acted", slo="chat-ttft"
    )
    base = f"http://127.0.0.1:{h.port}/v1/actions"

    def get(query: str, token: str | None = TOKEN):
        req = urllib.request.Request(
            base + query, headers={"Authorization": f"Bearer {token}"} if token else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    assert get("", token=None)[0] == 401
    code, body = get("?status=acted")
    assert code == 200 and [a["key"] for a in body["actions"]] == ["k2"]
    assert [a["key"] for a in get("?policy=ttft-scale&limit=1")[1]["actions"]] == ["k2"]
    assert get("?limit=zero")[0] == 400


def test_mtls_refuses_clients_without_a_certificate(tmp_path):
    import ssl

    import trustme

    from gpuslo.remediation.server import tls_context

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: gpuslo/v1\nkind: RemediationPolicy\npolicies:\n"
        "  - {name: p, match: {slo: x}, action: {notify_only: {}}}\n"
    )
    journal = Journal(tmp_path / "j.db")
    remediator = Remediator(load_policy(tmp_path / "policy.yaml"), journal, LogActuator())
    tls = tls_context(tmp_path / "server.pem", tmp_path / "server.pem", tmp_path / "ca.pem")
    hook = Hook(remediator, Metrics(), port=0, tls=tls).start()
    try:
        url = f"https://127.0.0.1:{hook.port}/healthz"
        without = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with (
            pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)),
            urllib.request.urlopen(url, context=without, timeout=5) as resp,
        ):
            resp.read()
        with_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        ca.issue_cert("alertmanager").configure_cert(with_cert)
        with urllib.request.urlopen(url, context=with_cert, timeout=5) as resp:
            assert json.load(resp)["status"] == "ok"
    finally:
        hook.stop()
        journal.close()
