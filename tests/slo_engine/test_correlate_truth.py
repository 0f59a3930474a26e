"""Correlation against the harder truth of bench/correlation.py, on hand-made series: a
tenant's bump inside the pool's capacity is not the cause, a page on a fault-free day
(nothing but the daily curve and noise) names no cause at all, and a GPU of another model's
pod stays outside the radius even when that pod has the same name in another namespace."""

from __future__ import annotations

import numpy as np
import pytest

from gpuslo.foundation.promlab import Prometheus
from gpuslo.slo_engine.correlate import MIN_SCORE, SIGNALS, Candidate, blast_radius, rank

STEP = 15.0
N = 360
SIG = {(s.kind, s.name): s for s in SIGNALS}
TRAFFIC = SIG[("traffic_spike", "requests/s by tenant")]
READY = SIG[("replica_loss", "ready replicas")]
UTIL = SIG[("noisy_neighbour", "GPU utilization (%)")]


def traffic(rng, rps: float, at: int | None = None, factor: float = 1.0, ramp: float = 0.0):
    """A tenant's requests/s: 4% uniform jitter, times ``factor`` from step ``at``, plus a
    slow rise of ``ramp`` (a share of ``rps``) per hour."""
    t = np.arange(N) * STEP
    v = rps * (1 + ramp * t / 3600) * (1 + 0.04 * (rng.random(N) - 0.5))
    if at is not None:
        v[at:] *= factor
    return v


def ready(at: int, replicas: float = 4.0):
    v = np.full(N, replicas)
    v[at:] -= 1
    return v


def test_a_small_tenants_bump_inside_capacity_is_not_named_before_the_lost_replica():
    # The small tenant (15% of the model's traffic) rises by 35%, adding 5% to the model's
    # demand, the moment a replica goes unready: the sharpest change, but not the cause.
    rng = np.random.default_rng(7)
    times = np.arange(N) * STEP
    onset = times[200]
    cands = [
        Candidate(TRAFFIC, {"tenant": "acme"}, traffic(rng, 3.0, 199, 1.35)),
        Candidate(TRAFFIC, {"tenant": "globex"}, traffic(rng, 17.0)),
        Candidate(READY, {"namespace": "inference", "pool": "llama-70b"}, ready(200)),
    ]
    causes = rank(cands, times, onset)
    assert causes[0].kind == "replica_loss"
    bump = [c for c in causes if c.kind == "traffic_spike"]
    assert all(c.score < 0.5 * causes[0].score for c in bump)


def test_a_tenant_tripling_its_traffic_is_still_named_first():
    rng = np.random.default_rng(8)
    times = np.arange(N) * STEP
    onset = times[200]
    cands = [
        Candidate(TRAFFIC, {"tenant": "acme"}, traffic(rng, 12.0, 198, 3.0)),
        Candidate(TRAFFIC, {"tenant": "globex"}, traffic(rng, 8.0)),
        Candidate(READY, {"namespace": "inference", "pool": "llama-70b"}, ready(205)),
    ]
    causes = rank(cands, times, onset)
    assert (causes[0].kind, dict(causes[0].entity)) == ("traffic_spike", {"tenant": "acme"})
    assert causes[0].score > 0.8


def test_a_page_on_a_fault_free_day_names_no_cause():
    # The daily curve rising (10% an hour) and noise on every GPU: nothing to blame.
    rng = np.random.default_rng(9)
    times = np.arange(N) * STEP
    onset = times[200]
    cands = [
        Candidate(TRAFFIC, {"tenant": "initech"}, traffic(rng, 60.0, ramp=0.1)),
        Candidate(TRAFFIC, {"tenant": "hooli"}, traffic(rng, 40.0, ramp=0.1)),
        *(
            Candidate(UTIL, {"Hostname": "n0", "gpu": str(g)}, 80 + rng.normal(0, 1.0, N))
            for g in range(8)
        ),
        Candidate(READY, {"namespace": "inference", "pool": "llama-8b"}, np.full(N, 8.0)),
    ]
    assert rank(cands, times, onset) == []
    # what the threshold leaves out: weak moves, all far below a fault's score
    weak = rank(cands, times, onset, min_score=0.0)
    assert weak and all(c.score < MIN_SCORE for c in weak)


@pytest.mark.component
def test_a_same_named_pod_of_another_namespace_keeps_its_gpu_outside_the_radius(tmp_path):
    # Two teams each run a Deployment whose pod is named chat-0, serving different models on
    # different GPUs. The radius of team-a's model holds team-a's GPU only.
    from tests.slo_engine.test_correlate_ksm import START, _Om

    om = _Om()
    for k in range(40):
        for n, (ns, model) in enumerate((("team-a", "llama-3-8b"), ("team-b", "mistral-7b"))):
            server = {"model": model, "namespace": ns, "pod": "chat-0", "server": "vllm"}
            om.put(
                "gen_ai_server_requests",
                "counter",
                "gen_ai_server_requests_total",
                {**server, "outcome": "success"},
                k,
                10.0 * k,
            )
            holder = {
                "gpu": "0",
                "UUID": f"GPU-{n:08d}",
                "Hostname": f"gpu-{n}",
                "namespace": ns,
                "pod": "chat-0",
                "container": "server",
            }
            om.put("gpuslo_gpu_pod_info", "gauge", "gpuslo_gpu_pod_info", holder, k, 1)
    (tmp_path / "history.om").write_text(om.text())
    with Prometheus(tmp_path / "prom") as prom:
        prom.backfill_openmetrics(tmp_path / "history.om")
        prom.restart()
        end = START + 39 * STEP
        radius = blast_radius(prom.url, "llama-3-8b", START, end)
    assert radius.pods == ["chat-0"] and radius.namespaces == ["team-a"]
    assert radius.uuids == ["GPU-00000000"] and radius.nodes == ["gpu-0"]


def test_a_new_page_after_a_quiet_spell_begins_after_the_earlier_burn_not_inside_it():
    # An earlier burn (a lost GPU: the error ratio climbs for 40 minutes, then recovers),
    # quiet alerts for a quarter of an hour, then a new fault: the new page's symptom began
    # with the new rise, not in the earlier burn's tail still within the half-hour search.
    from gpuslo.slo_engine.correlate import onset_of, quiet_since
    from gpuslo.slo_engine.evaluator import Episode

    times = np.arange(600) * STEP
    rng = np.random.default_rng(11)
    ratio = 0.001 + rng.normal(0, 1e-5, 600)
    ratio[100:260] += np.linspace(0.01, 0.06, 160)  # the earlier burn, worsening smoothly
    ratio[260:330] += np.abs(rng.normal(0, 0.02, 70))  # its backlog draining, unevenly
    ratio[330:] += 0.03  # the new fault, 70 steps (17.5 min) after the burn ended
    earlier = Episode("page-fast", "page", times[102], times[265], 0.1, 8.0)
    current = Episode("page-fast", "page", times[331], times[360], 0.3, 5.0)
    detected = times[331]
    since = quiet_since([earlier, current], detected)
    assert since == times[265]
    assert onset_of(ratio, times, detected, since) == times[330]
    assert onset_of(ratio, times, detected) < times[265]  # unbounded: inside the earlier burn
    # a tier firing on through, or a flap of a few minutes, is one burn: no bound
    slow = Episode("page-slow", "page", times[110], times[340], 0.2, 3.0)
    assert quiet_since([earlier, slow, current], detected) is None
    flap = Episode("page-fast", "page", times[300], times[325], 0.2, 3.0)
    assert quiet_since([earlier, flap, current], detected) is None


def test_compressed_time_needs_the_time_scale_to_see_a_change_in_seconds():
    # Two-second steps, a replica lost 30 s before the symptom with 40 s of history before it
    # (the demo's compressed hour): at real-cluster windows (a 15-minute baseline) there is no
    # room for a baseline; with the windows scaled by 1/60 the loss is named.
    step, n = 2.0, 60
    times = np.arange(n) * step
    v = np.full(n, 4.0)
    v[20:] -= 1
    cands = [Candidate(READY, {"namespace": "inference", "pool": "llama-70b"}, v)]
    onset = times[35]
    assert rank(cands, times, onset) == []
    causes = rank(cands, times, onset, time_scale=1 / 60)
    assert [c.kind for c in causes] == ["replica_loss"]
