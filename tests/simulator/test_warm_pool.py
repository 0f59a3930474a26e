"""Warm pools in the twin: warm replicas hold GPUs and serve seconds after promotion, cold ones
minutes after a scale; scale-downs refill the warm pool; the live pool API and the
remediation hook's promote_warm action drive them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml

from gpuslo.remediation.actuators import LogActuator, TwinActuator
from gpuslo.remediation.engine import Remediator
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import Workload, load_policy
from gpuslo.remediation.webhook import parse_payload
from gpuslo.simulator.fleet import Fleet
from gpuslo.simulator.live import LiveTwin
from gpuslo.simulator.scenario import load_scenario

SCENARIO = {
    "apiVersion": "gpuslo/v1",
    "kind": "TwinScenario",
    "duration": "1h",
    "step": "10s",
    "nodes": [{"prefix": "gpu-node", "count": 1, "gpus": 8}],
    "pools": [
        {
            "name": "llama",
            "model": "llama-3-8b",
            "replicas": 2,
            "warm_replicas": 2,
            "gpus_per_replica": 1,
            "tokens_per_second": 1000,
            "cold_start": "5m",
            "warm_start": "20s",
        }
    ],
    "tenants": [{"name": "acme", "model": "llama-3-8b", "requests_per_second": 4}],
}


def scenario(tmp_path, **changes):
    body = json.loads(json.dumps(SCENARIO))
    body["pools"][0].update(changes)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_scenario(path)


def serving(fleet: Fleet, pool: str = "llama") -> int:
    return sum(1 for h in fleet.pools[pool].healths if h > 0)


def advance(fleet: Fleet, seconds: float, dt: float = 10.0) -> None:
    end = fleet.t + seconds
    while fleet.t < end - 1e-9:
        fleet.step(dt)


def test_warm_replicas_hold_gpus_but_do_not_serve(tmp_path):
    fleet = Fleet(scenario(tmp_path))
    state = fleet.pools["llama"]
    assert len(state.replicas) == 2 and len(state.warm) == 2
    held = [g for g in fleet.gpus if g.pool == "llama"]
    assert len(held) == 4  # two serving, two warm GPUs
    assert sum(1 for g in held if g.replica is None) == 2  # warm: held, no pod serving
    fleet.step(10.0)
    assert serving(fleet) == 2


def test_promoted_warm_replicas_serve_in_seconds_cold_ones_in_minutes(tmp_path):
    fleet = Fleet(scenario(tmp_path))
    fleet.step(10.0)
    promoted = fleet.promote_warm("llama", 5)  # 2 warm first, 1 cold behind
    assert promoted == 2
    state = fleet.pools["llama"]
    assert state.desired == 5 and len(state.replicas) == 5
    advance(fleet, 30.0)
    assert serving(fleet) == 4  # the warm ones serve after warm_start (20 s)
    advance(fleet, 4 * 60.0)
    assert serving(fleet) == 4  # the cold one still loads
    advance(fleet, 60.0)
    assert serving(fleet) == 5
    # The warm pool is refilled behind, by cold starts: two new warm replicas are loading.
    assert len(state.warm) == 2
    assert fleet.promote_warm("llama", 5) == 0  # absolute: repeating changes nothing


def test_cold_scale_without_warm_pool_waits_the_cold_start(tmp_path):
    fleet = Fleet(scenario(tmp_path, warm_replicas=0))
    fleet.step(10.0)
    assert fleet.promote_warm("llama", 4) == 0
    advance(fleet, 60.0)
    assert serving(fleet) == 2
    advance(fleet, 5 * 60.0)
    assert serving(fleet) == 4


def test_scale_down_refills_the_warm_pool_with_loaded_replicas(tmp_path):
    fleet = Fleet(scenario(tmp_path, replicas=4, warm_replicas=1))
    state = fleet.pools["llama"]
    fleet.step(10.0)
    fleet.set_warm("llama", 2)  # one more wanted: it starts loading (a cold start)
    assert max(r.ready_at for r in state.warm) > fleet.t
    fleet.set_replicas("llama", 2)  # the replicas scaled off are loaded: they replace it
    assert len(state.warm) == 2
    assert all(r.ready_at <= fleet.t for r in state.warm)
    assert sum(1 for g in fleet.gpus if g.pool == "llama") == 4  # the rest freed
    assert fleet.promote_warm("llama", 3) == 1
    advance(fleet, 30.0)
    assert serving(fleet) == 3  # seconds, not the five-minute cold start


def test_scripted_warm_actions_and_validation(tmp_path):
    body = json.loads(json.dumps(SCENARIO))
    body["actions"] = [
        {"at": "1m", "promote_warm": {"pool": "llama", "replicas": 4}},
        {"at": "2m", "warm": {"pool": "llama", "replicas": 0}},
    ]
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(body))
    fleet = Fleet(load_scenario(path))
    advance(fleet, 100.0)
    assert serving(fleet) == 4
    advance(fleet, 60.0)
    assert fleet.pools["llama"].warm == []
    body["actions"] = [{"at": "1m", "promote_warm": {"pool": "nope", "replicas": 4}}]
    path.write_text(yaml.safe_dump(body))
    where = r"a.yaml:\d+:\d+: actions\[0\].promote_warm.pool: no GPU pool named nope"
    with pytest.raises(Exception, match=where):
        load_scenario(path)
    body["actions"] = []
    body["pools"][0]["warm_replicas"] = 7  # 2 + 7 GPUs on an 8-GPU node
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(Exception, match="the pools need 9 whole GPUs; the nodes have 8"):
        load_scenario(path)


def test_spot_interruption_restarts_a_replica_after_a_cold_start(tmp_path):
    fleet = Fleet(scenario(tmp_path))
    fleet.step(10.0)
    fleet.interrupt("llama", 1)
    fleet.step(10.0)
    assert serving(fleet) == 1
    advance(fleet, 5 * 60.0)
    assert serving(fleet) == 2


POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
policies:
  - name: ttft-warm
    match: {slo: chat-ttft, severity: page}
    action:
      promote_warm:
        pool: {namespace: inference, name: llama}
        step: 3
        max: 8
    cooldown: 0s
"""


def _page() -> object:
    return parse_payload(
        json.dumps(
            {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "receiver": "gpuslo",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {
                            "alertname": "GpusloBudgetBurn",
                            "slo": "chat-ttft",
                            "severity": "page",
                        },
                        "startsAt": "2026-11-22T10:00:00Z",
                        "fingerprint": "f1",
                    }
                ],
            }
        ).encode()
    )


def _remediator(tmp_path, actuator):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    now = datetime(2026, 11, 22, 10, 1, tzinfo=UTC).timestamp()
    journal = Journal(tmp_path / "journal.db", clock=lambda: now)
    return Remediator(load_policy(policy), journal, actuator, clock=lambda: now)


def test_hook_promote_warm_action_uses_the_warm_path(tmp_path):
    actuator = LogActuator(pools={"Deployment/inference/llama": 2})
    outcome = _remediator(tmp_path, actuator).handle(_page())  # type: ignore[arg-type]
    assert [o.decision for o in outcome] == ["acted"]
    assert actuator.calls == [("promote_warm", "Deployment/inference/llama", 5)]


def test_hook_promote_warm_on_the_live_twin(tmp_path):
    twin = LiveTwin(scenario(tmp_path), agents=False, speed=1.0).start()
    try:
        actuator = TwinActuator(f"http://127.0.0.1:{twin.port}")
        outcome = _remediator(tmp_path, actuator).handle(_page())  # type: ignore[arg-type]
        assert [o.decision for o in outcome] == ["acted"]
        assert "2 warm promoted" in outcome[0].reason
        body = twin.pool("inference", "llama")
        assert body is not None and body["replicas"] == 5 and body["running"] == 5
        workload = Workload(namespace="inference", name="llama")
        assert actuator.replicas(workload) == 5
    finally:
        twin.stop()


def test_kubernetes_like_actuator_without_warm_pool_scales_plainly(tmp_path):
    class Plain:
        name = "plain"

        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def replicas(self, workload):
            return 2

        def scale(self, workload, replicas):
            self.calls.append(("scale", replicas))
            return "scaled"

        def weights(self, route):
            return {}

        def set_weights(self, route, weights):
            pass

    actuator = Plain()
    outcome = _remediator(tmp_path, actuator).handle(_page())  # type: ignore[arg-type]
    assert [o.decision for o in outcome] == ["acted"] and actuator.calls == [("scale", 5)]
