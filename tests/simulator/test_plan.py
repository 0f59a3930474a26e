"""The capacity planner: load limits from SLOs, forecast, schedule, warm pool and spot share,
pool-profile validation, page counting, traffic from a twin history, and a small replay in
the twin where the plan beats static provisioning on cost with every SLO met."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from gpuslo.foundation.errors import SpecError
from gpuslo.simulator import plan as P
from gpuslo.simulator.offline import run_offline
from gpuslo.simulator.scenario import load_scenario

PROFILES = {
    "apiVersion": "gpuslo/v1",
    "kind": "PoolProfiles",
    "sync": "30s",
    "pools": [
        {
            "name": "llama",
            "model": "llama-3-8b",
            "gpu": "H100",
            "tokens_per_second": 1000,
            "cold_start": "4m",
            "warm_start": "10s",
            "ttft_base": 0.1,
            "price": {"on-demand": 3.0, "spot": 1.0},
            "spot": {"interruptions_per_hour": 0.05, "max_share": 0.5},
            "min_replicas": 1,
            "max_replicas": 16,
        }
    ],
}

SCENARIO = {
    "apiVersion": "gpuslo/v1",
    "kind": "TwinScenario",
    "duration": "1d",
    "step": "1m",
    "nodes": [{"prefix": "gpu-node", "count": 2, "gpus": 8}],
    "pools": [
        {
            "name": "llama",
            "model": "llama-3-8b",
            "replicas": 8,
            "tokens_per_second": 1000,
            "cold_start": "4m",
            "warm_start": "10s",
            "ttft_base": 0.1,
        }
    ],
    "tenants": [
        {
            "name": "acme",
            "model": "llama-3-8b",
            "requests_per_second": 12,
            "diurnal": 0.6,
            "output_tokens": 256,
            "bursts": [{"at": "14h", "for": "20m", "factor": 1.3}],
        }
    ],
    "faults": [{"at": "10h", "for": "1h", "kind": "xid79", "node": "gpu-node-00", "gpu": 1}],
}

TTFT = P.SloTarget("ttft", "llama-3-8b", "ttft", 0.99, 1.0)
AVAILABILITY = P.SloTarget("availability", "llama-3-8b", "availability", 0.999)


def write(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def profiles(tmp_path, **changes):
    body = yaml.safe_load(yaml.safe_dump(PROFILES))
    body["pools"][0].update(changes)
    return P.load_profiles(write(tmp_path, "pools.yaml", body))


def test_max_load_is_where_the_slo_spends_its_planning_share(tmp_path):
    p = profiles(tmp_path).pools[0]
    rho = P.max_load(p, [TTFT], 0.5, 256)
    # exp(-1 / (0.1 / (1 - rho))) = 0.005 at the limit
    assert rho == pytest.approx(1 - 0.1 * math.log(200), abs=1e-6)
    assert P.bad_fraction(p, TTFT, rho, 256) == pytest.approx(0.005, rel=1e-4)
    tight = P.SloTarget("t", "llama-3-8b", "ttft", 0.999, 1.0)
    assert P.max_load(p, [TTFT, tight], 0.5, 256) < rho  # the tighter SLO sets the load
    assert P.max_load(p, [], 0.5, 256) == 0.9  # no SLO: the cap


def test_schedule_follows_the_forecast_warm_covers_bursts_and_reclaims(tmp_path):
    prof = profiles(tmp_path)
    hours = np.arange(0, 7 * 24 * 3600, 600.0)
    tokens = 4000 + 3000 * np.sin(2 * np.pi * hours / 86400)
    traffic = P.Traffic(P.TWIN_EPOCH + hours, {"llama-3-8b": tokens}, {"llama-3-8b": tokens / 256})
    (plan,) = P.make_plan(traffic, prof, [TTFT])
    rho = plan.max_load
    per = 1000 * rho
    how = P.hour_of_week(traffic.timestamps)
    for h in (6, 18, 30):  # near the daily peak and trough
        q = np.quantile(tokens[how == h], 0.5) * 1.05
        assert plan.schedule[h] == math.ceil(q / per)
    assert plan.schedule[6] > plan.schedule[18]
    assert plan.static_replicas == math.ceil(tokens.max() * 1.05 / per)
    assert plan.static_replicas >= max(plan.schedule)
    # Warm: burst margin of the hour's replicas (at least one), or the reclaim insurance.
    assert all(
        w == max(1, math.ceil(0.15 * n))
        for w, n in zip(plan.warm_schedule, plan.schedule, strict=True)
    )
    assert plan.spot_share == 0.5  # spot is cheaper: the most the profile allows
    pricey = profiles(tmp_path, price={"on-demand": 3.0, "spot": 3.5})
    assert P.make_plan(traffic, pricey, [TTFT])[0].spot_share == 0.0
    # At a high reclaim rate the insurance outgrows the burst margin.
    risky = profiles(tmp_path, spot={"interruptions_per_hour": 3.0, "max_share": 1.0})
    (rplan,) = P.make_plan(traffic, risky, [TTFT])
    assert max(rplan.warm_schedule) > max(plan.warm_schedule)
    assert plan.predicted["plan.cost"] < plan.predicted["static.cost"]
    assert plan.predicted["plan.ttft"] >= 0.99


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokens_per_second": 0}, r"pools\[0\]\.tokens_per_second: .*greater than 0"),
        ({"cold_start": "soon"}, r"pools\[0\]\.cold_start"),
        ({"min_replicas": 9, "max_replicas": 4}, r"pools\[0\]\.min_replicas: min_replicas 9 is"),
        ({"price": {}}, r"pools\[0\]\.price: no on-demand price for H100"),
        ({"price": {"on-demand": 3.0}}, r"pools\[0\]\.spot\.max_share: spot share allowed but"),
        ({"spot": {"max_share": 1.5}}, r"pools\[0\]\.spot\.max_share: .*less than or equal"),
        ({"colour": "blue"}, r"pools\[0\]\.colour: .*[Ee]xtra"),
    ],
)
def test_bad_pool_profiles_say_file_line_and_field(tmp_path, change, message):
    with pytest.raises(SpecError) as err:
        profiles(tmp_path, **change)
    text = "\n".join(str(p) for p in err.value.problems)
    assert "pools.yaml:" in text
    assert any(str(p).split(": ", 1)[0].count(":") == 2 for p in err.value.problems)  # line:col
    import re

    assert re.search(message, text), text


def test_prices_come_from_the_catalog_when_the_profile_has_none(tmp_path):
    body = yaml.safe_load(yaml.safe_dump(PROFILES))
    del body["pools"][0]["price"]
    path = write(tmp_path, "pools.yaml", body)
    prof = P.load_profiles(path, {"H100": {"on-demand": 2.5, "spot": 1.1}})
    assert prof.pools[0].price.on_demand == 2.5 and prof.pools[0].price.spot == 1.1
    with pytest.raises(SpecError, match="no on-demand price for H100"):
        P.load_profiles(path, {"A100": {"on-demand": 1.0}})


def test_pages_count_rising_edges_of_a_burning_page_tier():
    slo = P.SloTarget("s", "m", "ttft", 0.99, 1.0, pages=(P.PageTier(14.4, 3600, 300),))
    total = np.full(600, 100.0)  # ten hours at one-minute steps
    good = total.copy()
    assert P.count_pages(good, total, slo, 60.0) == 0
    good[100:130] = 0.0  # half an hour of everything failing: one page
    assert P.count_pages(good, total, slo, 60.0) == 1
    good[400:430] = 0.0  # a second episode, hours later
    assert P.count_pages(good, total, slo, 60.0) == 2
    mild = total.copy()
    mild[100:400] = 95.0  # 5% bad: burn 5, under the 14.4 threshold
    assert P.count_pages(mild, total, slo, 60.0) == 0


def test_traffic_from_a_twin_history_matches_the_model(tmp_path):
    body = yaml.safe_load(yaml.safe_dump(SCENARIO))
    body.update(duration="2h", faults=[])
    body["tenants"][0]["bursts"] = []
    body["nodes"][0]["count"] = 1
    scenario = load_scenario(write(tmp_path, "s.yaml", body))
    run_offline(scenario, tmp_path / "out", start=P.TWIN_EPOCH, step=60.0, families=())
    read = P.traffic_from_openmetrics(tmp_path / "out" / "history.om")
    model = P.traffic_from_twin(scenario, 60.0, surprises=True)
    got = read.requests["llama-3-8b"]
    want = model.requests["llama-3-8b"][1 : len(got) + 1]
    assert len(got) > 100
    assert np.allclose(got, want, rtol=1e-6)
    assert read.output_tokens("llama-3-8b") == pytest.approx(256, rel=1e-6)
    assert P.hour_of_week(read.timestamps[0]) == 0  # the epoch is a Monday 00:00 UTC


def test_not_a_request_history_is_a_clear_error(tmp_path):
    path = tmp_path / "h.om"
    path.write_text("# TYPE x gauge\nx 1 100\n# EOF\n")
    with pytest.raises(SpecError, match="no gen_ai_server_requests_total samples"):
        P.traffic_from_openmetrics(path)


def test_small_replay_plan_beats_static_on_cost_with_every_slo_met(tmp_path):
    """A day on a small fleet, with a lost GPU and an unforeseen burst: the plan from the
    burst- and fault-free history costs much less than static provisioning for the peak, meets
    every SLO, and pages no more than reactive scaling."""
    scenario = load_scenario(write(tmp_path, "s.yaml", SCENARIO))
    prof = profiles(tmp_path)
    traffic = P.traffic_from_twin(scenario, 60.0)
    result = P.plan_and_prove(traffic, prof, [TTFT, AVAILABILITY], scenario, step=60.0)
    plan, static, reactive = (result.replay_of(n) for n in ("plan", "static", "reactive"))
    assert plan.cost < 0.75 * static.cost
    assert all(plan.met.values()), plan.attainment
    assert sum(plan.pages.values()) <= sum(reactive.pages.values())
    assert plan.interruptions >= 0 and static.interruptions == 0
    assert max(plan.warm["llama"]) >= 1  # it kept a warm pool
    # Measured matches the replicas it held: the cost is their GPU-hours at the prices.
    hours = 60.0 / 3600
    held = np.asarray(static.replicas["llama"])
    assert static.cost == pytest.approx(3.0 * hours * float(held[:-1].sum() + 8), rel=0.01)
    body = result.to_json()
    assert body["verdict"]["plan_meets_every_slo"] is True
    assert len(body["plans"][0]["schedule_by_hour_of_week"]) == 168


def test_traffic_from_prometheus_reads_request_and_token_rates_by_model():
    import json
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    queries: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            queries.append(q["query"][0])
            start, step = float(q["start"][0]), float(q["step"][0])
            per = 256.0 if "token_usage" in q["query"][0] else 1.0
            values = [[start + i * step, str(per * (10 + i))] for i in range(5)]
            body = {
                "status": "success",
                "data": {
                    "resultType": "matrix",
                    "result": [{"metric": {"model": "llama-3-8b"}, "values": values}],
                },
            }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        traffic = P.traffic_from_prometheus(url, 1_000_000.0, 1_000_240.0, 60.0)
    finally:
        server.shutdown()
    assert any("gen_ai_server_requests_total" in q for q in queries)
    assert any('token_type="output"' in q for q in queries)
    assert traffic.requests["llama-3-8b"].tolist() == [10, 11, 12, 13, 14]
    assert traffic.output_tokens("llama-3-8b") == pytest.approx(256)


def test_a_replay_scripted_as_a_scenario_does_the_same(tmp_path):
    """Each replay's actions (scale, promote_warm, warm, the reclaims drawn) written as the
    scenario's scripted actions: replayed without the controller, the fleet holds the same
    replicas at every step and the SLOs come out the same (new replicas serve one step
    later: a scripted action applies within the step, the controller's before it)."""
    body = yaml.safe_load(yaml.safe_dump(SCENARIO))
    body["duration"] = "12h"
    scenario = load_scenario(write(tmp_path, "s.yaml", body))
    prof = profiles(tmp_path, spot={"interruptions_per_hour": 0.5, "max_share": 0.5})
    result = P.plan_and_prove(
        P.traffic_from_twin(scenario, 60.0), prof, [TTFT], scenario, step=60.0
    )
    plan = result.replay_of("plan")
    kinds = {next(k for k in a if k != "at") for a in plan.actions}
    assert {"promote_warm", "warm", "reclaim"} <= kinds
    scripted = load_scenario(write(tmp_path, "scripted.yaml", P.scripted_scenario(scenario, plan)))
    again = P.replay(scripted, P.Controller(), [TTFT], step=60.0)
    assert again.replicas["llama"] == plan.replicas["llama"]
    assert again.warm["llama"] == plan.warm["llama"]
    assert again.attainment["ttft"] == pytest.approx(plan.attainment["ttft"], abs=2e-3)
