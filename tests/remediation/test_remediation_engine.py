"""The remediation engine with a real SQLite journal, the log actuator and a hand-set clock:
guardrails, exactly-once effect, reverts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuslo.foundation.errors import SpecError
from gpuslo.remediation.actuators import ActuatorError, LogActuator
from gpuslo.remediation.engine import Remediator
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import load_policy
from gpuslo.remediation.webhook import PayloadError, parse_payload
from tests.conftest import run_gpuslo

POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
settings:
  kill_switch: {kill}
policies:
  - name: chat-ttft-scale
    match: {{slo: chat-ttft, severity: page}}
    action:
      scale_pool:
        pool: {{namespace: inference, name: llama}}
        step: 2
        min: 2
        max: 10
        gpus_per_replica: 8
        max_gpus: 64
    cooldown: 10m
    rate_limit: {{max: 2, per: 1h}}
    revert: {{after: 5m}}
  - name: chat-fallback
    match: {{slo: chat-availability, severity: page}}
    action:
      cpu_fallback:
        route: {{namespace: inference, name: chat}}
        primary: llama
        fallback: llama-cpu
        fallback_pool: {{namespace: inference, name: llama-cpu}}
        fallback_replicas: 3
        step_percent: 25
        max_percent: 50
    cooldown: 0s
    revert: {{after: 1m}}
"""
POOL = "Deployment/inference/llama"


def payload(status="firing", slo="chat-ttft", starts="2026-11-22T10:00:00Z", fp="a1", group="g1"):
    return parse_payload(
        json.dumps(
            {
                "version": "4",
                "groupKey": group,
                "status": status,
                "receiver": "gpuslo",
                "alerts": [
                    {
                        "status": status,
                        "labels": {"alertname": "GpusloBudgetBurn", "slo": slo, "severity": "page"},
                        "startsAt": starts,
                        "fingerprint": fp,
                    }
                ],
            }
        ).encode()
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 10, 1, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY.format(kill=tmp_path / "off"))
    clock = Clock()
    actuator = LogActuator(pools={POOL: 2, "Deployment/inference/llama-cpu": 1})
    actuator.routes["HTTPRoute/inference/chat"] = {"llama": 100, "llama-cpu": 0}
    journal = Journal(tmp_path / "journal.db", clock=clock)
    remediator = Remediator(load_policy(policy_file), journal, actuator, clock=clock)
    return remediator, actuator, clock, tmp_path


def test_firing_scales_once_however_often_it_is_delivered(setup):
    remediator, actuator, _, _ = setup
    first = remediator.handle(payload())
    assert [o.decision for o in first] == ["acted"]
    assert actuator.pools[POOL] == 4
    for _ in range(3):  # Alertmanager retries and an HA peer's copy
        assert [o.decision for o in remediator.handle(payload())] == ["duplicate"]
    assert actuator.calls == [("scale", POOL, 4)]


def test_resolved_reverts_after_hysteresis_never_below_the_start(setup):
    remediator, actuator, clock, _ = setup
    remediator.handle(payload())
    scheduled = remediator.handle(payload(status="resolved"))
    assert [o.decision for o in scheduled] == ["revert-scheduled"]
    clock.now += 4 * 60
    assert remediator.tick() == [] and actuator.pools[POOL] == 4  # hysteresis not over
    actuator.pools[POOL] = 7  # someone else added replicas meanwhile
    clock.now += 61
    assert [o.decision for o in remediator.tick()] == ["reverted"]
    assert actuator.pools[POOL] == 5  # only our two come off
    assert remediator.tick() == []  # done once


def test_cooldown_and_rate_limit_stop_actions_and_say_why(setup):
    remediator, actuator, clock, _ = setup
    remediator.handle(payload(starts="2026-11-22T10:00:00Z", fp="a"))
    clock.now += 60
    skipped = remediator.handle(payload(starts="2026-11-22T10:01:00Z", fp="b"))
    assert skipped[0].decision == "skipped" and skipped[0].reason.startswith("cooldown")
    clock.now += 11 * 60
    assert remediator.handle(payload(starts="2026-11-22T10:12:00Z", fp="c"))[0].decision == "acted"
    clock.now += 11 * 60
    limited = remediator.handle(payload(starts="2026-11-22T10:23:00Z", fp="d"))
    assert limited[0].reason.startswith("rate limit: 2 actions per 1h")
    assert actuator.calls == [("scale", POOL, 4), ("scale", POOL, 6)]


def test_caps_bound_the_scale_and_a_capped_pool_is_left_alone(setup):
    remediator, actuator, clock, _ = setup
    actuator.pools[POOL] = 7
    remediator.handle(payload(fp="a"))
    assert actuator.pools[POOL] == 8  # 64 GPUs / 8 per replica
    clock.now += 3600
    again = remediator.handle(payload(fp="b", starts="2026-11-22T11:00:00Z"))
    assert again[0].decision == "skipped" and "already at the policy's bound" in again[0].reason


def test_kill_switch_and_stale_data_stop_everything(setup, tmp_path):
    remediator, actuator, _, path = setup
    (path / "off").touch()
    assert remediator.handle(payload())[0].reason == "kill switch is on"
    (path / "off").unlink()
    remediator.data_check = lambda alert: "the alert's expression returns nothing now"
    assert remediator.handle(payload())[0].decision == "skipped"
    assert actuator.calls == []
    remediator.data_check = None  # data back: the same episode is judged afresh
    assert remediator.handle(payload())[0].decision == "acted"


def test_cpu_fallback_prescales_then_shifts_and_reverts_in_reverse(setup):
    remediator, actuator, clock, _ = setup
    assert remediator.handle(payload(slo="chat-availability"))[0].decision == "acted"
    assert actuator.calls == [
        ("scale", "Deployment/inference/llama-cpu", 3),
        ("weights", "HTTPRoute/inference/chat", {"llama": 75, "llama-cpu": 25}),
    ]
    remediator.handle(payload(slo="chat-availability", status="resolved"))
    clock.now += 61
    assert [o.decision for o in remediator.tick()] == ["reverted"]
    assert actuator.calls[2:] == [
        ("weights", "HTTPRoute/inference/chat", {"llama": 100, "llama-cpu": 0}),
        ("scale", "Deployment/inference/llama-cpu", 1),
    ]


def test_dry_run_records_advice_and_acts_on_nothing(setup):
    remediator, actuator, _, _ = setup
    remediator.dry_run = True
    assert remediator.handle(payload())[0].decision == "advised"
    assert actuator.calls == []
    (entry,) = remediator.journal.query(status="advised")
    assert entry.plan["after"] == 4


def test_a_failed_action_is_recorded_with_the_api_reason(setup):
    remediator, actuator, _, _ = setup

    def refuse(workload, replicas):
        raise ActuatorError("patch Deployment/inference/llama/scale: HTTP 403 forbidden")

    actuator.scale = refuse  # type: ignore[method-assign]
    (outcome,) = remediator.handle(payload())
    assert outcome.decision == "failed" and "HTTP 403" in outcome.reason
    assert remediator.journal.query(status="failed")[0].reason == outcome.reason


def test_a_decision_left_unfinished_is_completed_once_on_restart(setup):
    remediator, actuator, clock, path = setup
    # A crash between writing the decision and acting on it leaves status "decided".
    remediator.journal.insert(
        key="k:chat-ttft-scale",
        policy="chat-ttft-scale",
        kind="scale_pool",
        status="decided",
        target=POOL,
        plan={
            "steps": [
                {
                    "scale": {"namespace": "inference", "name": "llama", "kind": "Deployment"},
                    "replicas": 4,
                }
            ],
            "pool": {"namespace": "inference", "name": "llama", "kind": "Deployment"},
            "before": 2,
            "after": 4,
        },
    )
    again = Remediator(
        remediator.policy, Journal(path / "journal.db", clock=clock), actuator, clock=clock
    )
    assert [o.decision for o in again.resume()] == ["resumed"]
    assert again.resume() == []
    assert actuator.calls == [("scale", POOL, 4)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b'{"version": "3"}', "version"),
        (b'{"version": "4", "groupKey": "g", "status": "firing", "alerts": []}', "alerts"),
        (
            b'{"version": "4", "groupKey": "g", "status": "firing", "alerts": [{"status": "x"}]}',
            "alerts.0.status",
        ),
    ],
)
def test_malformed_payloads_get_a_reason(body, reason):
    with pytest.raises(PayloadError, match=reason.replace(".", r"\.")):
        parse_payload(body)


def test_policy_problems_are_reported_at_their_place(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(
        POLICY.format(kill="/x")
        .replace("step: 2", "step: 2\n        target: 3")
        .replace("fallback_replicas: 3", "fallback_replicas: 3\n        colour: red")
    )
    with pytest.raises(SpecError) as err:
        load_policy(bad)
    text = [str(p) for p in err.value.problems]
    assert any(
        t.startswith(f"{bad}:10:") and "give exactly one of step or target" in t for t in text
    ), text
    assert any("colour: Extra inputs are not permitted" in t for t in text), text
    assert Path(bad).exists()


def run_cli(*args: str):
    return run_gpuslo("remediate", *args)


def test_cli_validates_policies_and_refuses_bad_input_without_a_traceback(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "remediation" / "policy.yaml"
    ok = run_cli("validate", str(example))
    assert ok.returncode == 0 and "3 policies valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(example.read_text().replace("step_percent: 25", "step_percent: 250"))
    out = run_cli("validate", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{bad}:" in out.stderr and "step_percent" in out.stderr
    flags = run_cli("serve", "--policy", str(example), "--listen", "nowhere")
    assert flags.returncode == 2 and "--listen must be HOST:PORT" in flags.stderr
    empty = tmp_path / "token"
    empty.write_text("\n")
    out = run_cli("serve", "--policy", str(example), "--token-file", str(empty))
    assert out.returncode == 2 and "is empty" in out.stderr


def _two_services_same_name() -> list:
    from gpuslo.slo_engine.model import SLO

    def slo(service: str) -> SLO:
        return SLO("availability", service, 0.99, 3600.0, "e", "t", ())

    return [slo("search"), slo("chat")]


def test_a_cause_check_picks_the_slo_by_service_and_name():
    from gpuslo.foundation.promlab import free_port
    from gpuslo.remediation.engine import CauseCheck
    from gpuslo.remediation.webhook import Alert

    check = CauseCheck(f"http://127.0.0.1:{free_port()}", _two_services_same_name())
    at = datetime(2026, 12, 1, tzinfo=UTC)

    def alert(**labels: str) -> Alert:
        return Alert(status="firing", labels=labels, startsAt=at, fingerprint="f")

    assert check(alert(slo="availability")) == (
        None,
        "2 SLOs (give the service label) named 'availability' in settings.slo_specs",
    )
    assert check(alert(slo="latency", service="chat"))[1].startswith("no SLO named 'latency'")
    # one SLO found: the analysis runs (and fails here: nothing listens on that port)
    cause, why = check(alert(slo="availability", service="chat"))
    assert cause is None and why.startswith("cause analysis failed")
