"""Fuzzing the webhook endpoint with hypothesis: arbitrary JSON, and valid Alertmanager payloads
with fields replaced by arbitrary values, must never get a 500 (bounded: a few hundred
examples against a loopback server)."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuslo.remediation.actuators import LogActuator
from gpuslo.remediation.engine import Remediator
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import load_policy
from gpuslo.remediation.server import Hook, Metrics

POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
policies:
  - name: any-page
    match: {severity: page}
    action:
      scale_pool: {pool: {name: llama}, step: 1, max: 1000}
    cooldown: 0s
    rate_limit: {max: 100000, per: 1h}
    revert: {after: 0s}
"""
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
VALID = {
    "version": "4",
    "groupKey": "g",
    "status": "firing",
    "truncatedAlerts": 0,
    "alerts": [
        {
            "status": "firing",
            "labels": {"severity": "page", "slo": "s"},
            "annotations": {},
            "startsAt": "2026-11-22T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph?g0.expr=up",
            "fingerprint": "abc",
        }
    ],
}
FIELDS = [("version",), ("groupKey",), ("status",), ("truncatedAlerts",), ("alerts",)] + [
    ("alerts", 0, k)
    for k in VALID["alerts"][0]  # type: ignore[index]
]


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "policy.yaml").write_text(POLICY)
    journal = Journal(tmp / "journal.db")
    remediator = Remediator(load_policy(tmp / "policy.yaml"), journal, LogActuator())
    hook = Hook(remediator, Metrics(), port=0, token="t", tick=0.05).start()
    yield hook
    hook.stop()
    journal.close()


def post(hook: Hook, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", hook.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/alerts",
            body=body,
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(VALID))
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(value=JSON)
def test_arbitrary_json_never_gets_a_500(hook, value):
    assert post(hook, json.dumps(value).encode()) in (200, 400)


@FUZZ
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_payloads_with_a_field_replaced_never_get_a_500(hook, field, value):
    assert post(hook, json.dumps(replaced(field, value)).encode()) in (200, 400)


@FUZZ
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_never_get_a_500(hook, body):
    assert post(hook, body or b" ") in (200, 400)


def dropped(fields: frozenset[str]) -> dict[str, Any]:
    data = json.loads(json.dumps(VALID))
    for name in fields:
        del data["alerts"][0][name]
    return data


@FUZZ
@given(
    fields=st.frozensets(st.sampled_from(["fingerprint", "status", "annotations", "endsAt"])),
    labels=st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4),
)
def test_payloads_without_the_optional_alert_fields_are_accepted(hook, fields, labels):
    """Alertmanager before 0.19 sends no fingerprint; relays may drop the alert's status."""
    data = dropped(fields)
    data["alerts"][0]["labels"] = {**labels, "severity": "page"}
    assert post(hook, json.dumps(data).encode()) == 200


@FUZZ
@given(depth=st.integers(33, 5000), opener=st.sampled_from([b"[", b'{"a":']))
def test_deep_json_gets_a_400(hook, depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    assert post(hook, opener * depth + b"1" + closer * depth) == 400


@FUZZ
@given(digits=st.integers(65, 20_000), fraction=st.booleans())
def test_huge_numbers_get_a_400(hook, digits, fraction):
    number = b"1" * digits + (b".5" if fraction else b"")
    assert post(hook, b'{"version": "4", "truncatedAlerts": ' + number + b"}") == 400
