"""Correlation: ranking rules on hand-made series, and the whole path on the digital twin's
history in a real Prometheus (blast radius, candidates, ranking, the CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpuslo.foundation.promlab import Prometheus
from gpuslo.simulator.offline import run_offline
from gpuslo.simulator.scenario import load_scenario
from gpuslo.slo_engine import load_specs
from gpuslo.slo_engine.correlate import SIGNALS, Candidate, change_points, explain, rank
from gpuslo.slo_engine.evaluator import evaluate
from gpuslo.slo_engine.history import sli_from_prometheus
from tests.conftest import run_gpuslo

STEP = 15.0
SIG = {(s.kind, s.name): s for s in SIGNALS}
XID = SIG[("xid", "XID errors")]
TEMP = SIG[("thermal_throttle", "GPU temperature (C)")]
UTIL = SIG[("noisy_neighbour", "GPU utilization (%)")]
TRAFFIC = SIG[("traffic_spike", "requests/s by tenant")]


def series(rng, change_at: int | None = None, by: float = 0.0, level: float = 50.0, n=360):
    v = level + rng.normal(0, 1.0, n)
    if change_at is not None:
        v[change_at:] += by
    return v


def test_a_hard_fault_before_the_symptom_outranks_a_soft_signal_and_a_later_change():
    rng = np.random.default_rng(1)
    times = np.arange(360) * STEP
    onset = times[200]
    xid = np.where(np.arange(360) >= 196, 1.0, 0.0)  # a counter: 0, then 1
    cands = [
        Candidate(XID, {"Hostname": "n1", "gpu": "3", "xid": "48"}, xid),
        Candidate(TRAFFIC, {"tenant": "acme"}, series(rng, 230, 30)),  # after the symptom
        Candidate(TEMP, {"Hostname": "n1", "gpu": "1"}, series(rng, 199, 8)),
    ]
    causes = rank(cands, times, onset)
    assert causes[0].kind == "xid"
    assert dict(causes[0].entity) == {"Hostname": "n1", "gpu": "3"}
    assert causes[0].evidence[0].changed_at == times[196]
    assert {c.kind for c in causes} == {"xid", "traffic_spike", "thermal_throttle"}
    late = next(c for c in causes if c.kind == "traffic_spike")
    assert late.evidence[0].changed_at > onset  # found, but weighed as an effect
    assert late.score < causes[0].score


def test_a_load_change_on_every_gpu_is_not_a_cause_but_one_gpu_beyond_its_peers_is():
    rng = np.random.default_rng(2)
    times = np.arange(360) * STEP
    onset = times[200]
    cands = [
        Candidate(
            UTIL, {"Hostname": "n1", "gpu": str(g)}, series(rng, 198, 20 + (30 if g == 5 else 0))
        )
        for g in range(8)
    ]
    causes = rank(cands, times, onset)
    assert dict(causes[0].entity)["gpu"] == "5"
    others = [c for c in causes if dict(c.entity)["gpu"] != "5"]
    assert all(c.score < 0.2 * causes[0].score for c in others)


def test_heat_that_follows_a_gpus_own_load_is_the_loads_effect_not_a_thermal_fault():
    rng = np.random.default_rng(4)
    times = np.arange(360) * STEP
    onset = times[200]

    def gpus(busier: bool):
        cands = []
        for g in range(8):
            hot = g == 2
            util = series(rng, 198, 30 if hot and busier else 0, level=70)
            temp = series(rng, 199, 12 if hot else 0, level=60)
            labels = {"Hostname": "n1", "gpu": str(g)}
            cands += [Candidate(UTIL, labels, util), Candidate(TEMP, labels, temp)]
        return rank(cands, times, onset)

    # a neighbour keeps GPU 2 busier: it runs hotter, and the load is named, not the heat
    busy = gpus(busier=True)
    assert (busy[0].kind, dict(busy[0].entity)["gpu"]) == ("noisy_neighbour", "2")
    heat = [c for c in busy if c.kind == "thermal_throttle"]
    assert all(c.score < 0.2 * busy[0].score for c in heat)
    # the same heat with no more load than its peers: its cooling, a thermal cause
    hot = gpus(busier=False)
    assert (hot[0].kind, dict(hot[0].entity)["gpu"]) == ("thermal_throttle", "2")


def test_change_points_find_the_split_and_a_flat_step_is_certain():
    times = np.arange(200) * 60.0
    flat = np.where(np.arange(200) < 120, 1.0, 0.0)
    k, before, after, _effect, p, valid = change_points(
        flat[None, :], times, times[118], np.array([-1.0])
    )
    assert valid[0] and k[0] == 120 and before[0] == 1.0 and after[0] == 0.0 and p[0] == 0.0
    rising = change_points(flat[None, :], times, times[118], np.array([1.0]))
    assert not rising[5][0]  # nothing rose: no change in that direction


SCENARIO = """\
apiVersion: gpuslo/v1
kind: TwinScenario
description: Two models side by side; a GPU of each overheats, and one tenant of the first
  model triples its traffic later.
duration: 2h
step: 15s
nodes:
  - {prefix: gpu-node, count: 1, gpus: 8, profile: H100}
pools:
  - {name: llama-8b, model: llama-3-8b, replicas: 4, gpus_per_replica: 1, tokens_per_second: 2000}
  - {name: mistral-7b, model: mistral-7b, replicas: 4, gpus_per_replica: 1, tokens_per_second: 2000}
tenants:
  - {name: acme, model: llama-3-8b, requests_per_second: 23.4, diurnal: 0}
  - {name: globex, model: mistral-7b, requests_per_second: 23.4, diurnal: 0}
faults:
  - {at: 30m, for: 25m, kind: thermal_throttle, node: gpu-node-00, gpu: 1}
  - {at: 30m, for: 25m, kind: thermal_throttle, node: gpu-node-00, gpu: 6}
"""
SLOS = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults:
  service: chat
  window: 1h
  alerting: {base_window: 1m, windows: windows.yaml}
slos:
  - name: llama-tpot
    objective: 93
    selector: {model: llama-3-8b}
    latency: {metric: tpot, threshold: 100ms}
"""
WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.05, long_window: 5m, short_window: 1m}
"""


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("correlate")
    (tmp / "scenario.yaml").write_text(SCENARIO)
    (tmp / "slos.yaml").write_text(SLOS)
    (tmp / "windows.yaml").write_text(WINDOWS)
    start = 1_790_000_000.0
    run_offline(load_scenario(tmp / "scenario.yaml"), tmp / "run", start)
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(tmp / "run" / "history.om")
        prom.restart()
        yield prom, tmp, start


@pytest.mark.component
def test_the_overheating_gpu_of_the_slos_model_is_named_and_the_other_models_is_not(twin):
    prom, tmp, start = twin
    (slo,) = load_specs([tmp / "slos.yaml"])[0]
    ev = evaluate(slo, sli_from_prometheus(prom.url, slo, start, start + 7200, STEP))
    pages = [e for e in ev.episodes if e.tier == "page-fast"]
    assert pages and start + 1800 <= pages[0].start <= start + 1800 + 600
    result = explain(prom.url, slo, pages[0].start, STEP)
    # llama's pods are on GPUs 0-3 (replicas are placed first), mistral's on 4-7
    gpus = {g for c in result.causes for k, g in c.entity if k == "gpu"}
    assert "6" not in gpus  # mistral's hot GPU is outside the blast radius
    top = result.causes[0]
    assert top.kind == "thermal_throttle" and dict(top.entity) == {
        "Hostname": "gpu-node-00",
        "gpu": "1",
    }
    assert abs(result.onset - (start + 1800)) <= 120
    assert "thermal throttling" in top.sentence(result.onset) or "temperature" in top.sentence(
        result.onset
    )
    assert len(result.radius.pods) == 4 and len(result.radius.uuids) == 4


@pytest.mark.component
def test_explain_cli_prints_ranked_causes_as_json_and_refuses_bad_input(twin):
    prom, tmp, start = twin
    proc = run_gpuslo(
        "explain",
        str(tmp / "slos.yaml"),
        "--slo",
        "llama-tpot",
        "--at",
        str(start + 1860),
        "--prometheus",
        prom.url,
        "--step",
        "15s",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["causes"][0]["kind"] == "thermal_throttle"
    assert out["causes"][0]["entity"]["gpu"] == "1"
    assert "UUID=~" in out["causes"][0]["evidence"][0]["query"]
    bad = run_gpuslo(
        "explain",
        str(tmp / "slos.yaml"),
        "--slo",
        "nope",
        "--at",
        "now",
        "--prometheus",
        prom.url,
    )
    assert bad.returncode == 2 and "no SLO named nope" in bad.stderr
    assert "Traceback" not in bad.stderr


CAUSE_POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
settings:
  prometheus: {url}
  slo_specs: [slos.yaml]
  explain_step: 15s
policies:
  - name: scale-on-traffic
    match: {{slo: llama-tpot}}
    when_cause: [traffic_spike]
    action:
      scale_pool: {{pool: {{namespace: inference, name: llama-8b}}, step: 1, max: 8}}
  - name: drain-hot-gpu
    match: {{slo: llama-tpot}}
    when_cause: [thermal_throttle, gpu_lost]
    action:
      notify_only: {{}}
"""


@pytest.mark.component
def test_a_policy_acts_only_on_the_cause_it_names(twin, tmp_path):
    from datetime import UTC, datetime

    from gpuslo.remediation.actuators import LogActuator
    from gpuslo.remediation.engine import CauseCheck, Remediator
    from gpuslo.remediation.journal import Journal
    from gpuslo.remediation.policy import load_policy
    from gpuslo.remediation.webhook import parse_payload

    prom, tmp, start = twin
    policy_file = tmp / "policy.yaml"  # next to slos.yaml, which it names
    policy_file.write_text(CAUSE_POLICY.format(url=prom.url))
    spec = load_policy(policy_file)
    starts = datetime.fromtimestamp(start + 1860, UTC).isoformat().replace("+00:00", "Z")
    payload = parse_payload(
        json.dumps(
            {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "receiver": "gpuslo",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "GpusloBudgetBurn", "slo": "llama-tpot"},
                        "startsAt": starts,
                        "fingerprint": "f1",
                    }
                ],
            }
        ).encode()
    )
    actuator = LogActuator(pools={"Deployment/inference/llama-8b": 4})
    remediator = Remediator(
        spec,
        Journal(tmp_path / "journal.db"),
        actuator,
        clock=lambda: start + 1900,
        cause_check=CauseCheck.from_settings(spec.settings, policy_file),
    )
    outcomes = {o.policy: o for o in remediator.handle(payload)}
    assert outcomes["scale-on-traffic"].decision == "skipped"
    assert "probable cause is thermal_throttle" in outcomes["scale-on-traffic"].reason
    assert outcomes["drain-hot-gpu"].decision == "acted"
    assert actuator.pools["Deployment/inference/llama-8b"] == 4  # nothing scaled


def test_a_cause_condition_without_prometheus_is_a_policy_error(tmp_path):
    from gpuslo.foundation.errors import SpecError
    from gpuslo.remediation.policy import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(CAUSE_POLICY.replace("  prometheus: {url}\n", "").format())
    with pytest.raises(SpecError) as err:
        load_policy(path)
    assert "when_cause" in str(err.value.problems[0])
    assert "needs settings.prometheus" in str(err.value.problems[0])
