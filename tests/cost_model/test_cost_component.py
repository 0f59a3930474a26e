"""The twin's offline history in a real Prometheus: the cost recording rules, evaluated by
promtool, and the chargeback report give the same dollars for the same window, and both
match the fleet's shape worked out by hand (whole GPUs on-demand, MIG instances on spot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuslo.cost_model.catalog import load_catalog
from gpuslo.cost_model.report import Window, build
from gpuslo.cost_model.rules import (
    FLEET_COST,
    IDLE_COST,
    MODEL_COST,
    UNATTRIBUTED_COST,
    rule_groups,
)
from gpuslo.foundation.durations import format_range
from gpuslo.foundation.promlab import Prometheus
from gpuslo.simulator.offline import run_offline
from gpuslo.simulator.scenario import load_scenario
from tests.conftest import H100_CATALOG, run_gpuslo

ROOT = Path(__file__).resolve().parents[2]
CATALOG = """\
apiVersion: gpuslo/v1
kind: PriceCatalog
currency: USD
as_of: "2026-11-01"
sources: ["test prices"]
gpus:
  A100: {on-demand: 1.80, spot: 0.72}
nodes:
  - {match: "mig-node-.*", gpu: A100, class: spot}
  - {match: "gpu-node-.*", gpu: A100, class: on-demand}
"""
STEP = 15.0
pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cost")
    (tmp / "catalog.yaml").write_text(CATALOG)
    catalog = load_catalog(tmp / "catalog.yaml")
    scenario = load_scenario(ROOT / "simulator/scenarios/noisy-neighbour.yaml")
    start = 1_790_000_000.0
    run_offline(scenario, tmp / "run", start)
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(tmp / "run" / "history.om")
        prom.restart()
        hour = (start + 1800, start + 5400)  # the hour in the middle of the run
        prom.backfill_rules(rule_groups(catalog), start=hour[0] - 60, end=hour[1], interval="15s")
        yield prom, catalog, hour, tmp


def recorded_dollars(prom, series: str, hour) -> dict[str, float]:
    """Σ of a $/s recording over the hour, times the evaluation interval, by model."""
    # One millisecond short of the hour: exactly 240 recordings whatever second of the
    # interval each staged rule group landed on (its offset hashes the rule file's path).
    span = format_range(hour[1] - hour[0])
    out = {}
    for r in prom.query(f"sum_over_time({series}[{span}])", at=hour[1]):
        out[r["metric"].get("model", "")] = float(r["value"][1]) * STEP
    return out


def test_rules_and_report_agree_and_match_the_fleet_worked_out_by_hand(lab):
    prom, catalog, hour, _ = lab
    # The report on the same grid as the rules: the samples each rule evaluation saw.
    times = sorted(
        float(t) for t, _ in prom.query(f"{FLEET_COST}[59m59s999ms]", at=hour[1])[0]["values"]
    )
    assert len(times) == 240
    window = Window(times[0], times[-1], STEP)
    costs, table = build(prom.url, catalog, window)
    hours = window.seconds / 3600
    # mistral-7b: 8 replicas on the 8 whole GPUs of gpu-node-00, on demand
    assert costs.allocated["mistral-7b"] == pytest.approx(8 * 1.80 * hours)
    # phi-3-mini: 4 MIG 3g.40gb instances (3/7 of a GPU each) on spot mig-node GPUs
    assert costs.allocated["phi-3-mini"] == pytest.approx(4 * 3 / 7 * 0.72 * hours)
    # each MIG GPU leaves 1/7 idle
    assert costs.idle == pytest.approx(2 / 7 * 0.72 * hours)
    assert costs.unattributed == pytest.approx(0.0)
    assert costs.bill == pytest.approx((8 * 1.80 + 2 * 0.72) * hours)
    assert costs.reconciles()
    # Prometheus computed the same, rule by rule
    by_model = recorded_dollars(prom, MODEL_COST, hour)
    for model in ("mistral-7b", "phi-3-mini"):
        assert by_model[model] == pytest.approx(costs.allocated[model], rel=1e-9)
    assert recorded_dollars(prom, FLEET_COST, hour)[""] == pytest.approx(costs.bill, rel=1e-9)
    assert recorded_dollars(prom, IDLE_COST, hour)[""] == pytest.approx(costs.idle, rel=1e-9)
    unattributed = recorded_dollars(prom, UNATTRIBUTED_COST, hour)[""]
    assert abs(unattributed) < 1e-9
    tenants = {(r["model"], r["tenant"]) for r in table}
    assert ("mistral-7b", "acme") in tenants and ("phi-3-mini", "globex") in tenants


def test_cost_cli_writes_rules_promtool_accepts_and_a_report(lab, tmp_path):
    from tests.conftest import need

    prom, _, hour, tmp = lab
    out = tmp_path / "rules"
    proc = run_gpuslo("cost", "rules", str(tmp / "catalog.yaml"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    import subprocess

    check = subprocess.run(
        [need("promtool"), "check", "rules", str(out / "gpuslo-cost.rules.yaml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    report = tmp_path / "report"
    proc = run_gpuslo(
        "cost",
        "report",
        str(tmp / "catalog.yaml"),
        "--prometheus",
        prom.url,
        "--from",
        str(hour[0]),
        "--to",
        str(hour[1]),
        "--step",
        "15s",
        "--goodput-ttft",
        "5s",
        "-o",
        str(report),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((report / "report.json").read_text())
    assert data["summary"]["reconciles"] is True
    rows = {(r["model"], r["tenant"]): r for r in data["rows"]}
    acme = rows[("mistral-7b", "acme")]
    assert acme["requests"] > 0 and acme["dollars_per_1k_requests"] > 0
    assert acme["dollars_per_1k_good_requests"] >= acme["dollars_per_1k_requests"]
    assert (report / "report.parquet").stat().st_size > 0
    assert "cost.png" in (report / "report.html").read_text()


def test_cost_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text(CATALOG.replace("class: spot}", "class: cheap}"))
    proc = run_gpuslo("cost", "validate", str(bad))
    assert proc.returncode == 1
    assert "nodes[0].class" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_gpuslo("cost", "validate", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "no such file" in proc.stderr


COST_SLO = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat, window: 1h, alerting: {base_window: 1m, windows: windows.yaml}}
slos:
  - name: llama-70b-cost
    objective: 95
    selector: {model: llama-3-70b}
    cost: {per_million_tokens: 2.5}
"""
COST_WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.05, long_window: 5m, short_window: 1m}
"""


def test_a_cost_slo_burns_when_traffic_falls_back_and_the_backtest_shows_why(tmp_path):
    """16 H100s at $2.95/h serve ~7,700 tokens/s: about $1.7 per 1M tokens. At minute 40 half
    the traffic goes to the CPU fallback and the GPUs stay: about $3.4, over the $2.5
    ceiling. The cost rules, backfilled with the history, feed the cost SLI."""
    run = tmp_path / "run"
    proc = run_gpuslo(
        "twin",
        "offline",
        str(ROOT / "simulator/scenarios/cost-fallback.yaml"),
        "-o",
        str(run),
        "--start",
        "1790000000",
    )
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "catalog.yaml").write_text(H100_CATALOG)
    (tmp_path / "slos.yaml").write_text(COST_SLO)
    (tmp_path / "windows.yaml").write_text(COST_WINDOWS)
    proc = run_gpuslo("cost", "rules", str(tmp_path / "catalog.yaml"), "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    start = 1_790_000_000
    proc = run_gpuslo(
        "backtest",
        str(tmp_path / "slos.yaml"),
        "--data",
        str(run / "history.om"),
        "--rules",
        str(tmp_path / "gpuslo-cost.rules.yaml"),
        "--step",
        "15s",
        "--from",
        str(start + 600),
        "-o",
        str(tmp_path / "report"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    pages = [e for e in report["slos"][0]["episodes"] if e["tier"] == "page-fast"]
    assert len(pages) == 1
    assert start + 40 * 60 <= pages[0]["start"] <= start + 50 * 60  # after the shift, not before
    cause = pages[0]["causes"][0]
    assert (cause["kind"], cause["entity"]) == ("traffic_drop", {"tenant": "acme"})
    # The chargeback for the hour after the shift: the CPU fallback's two replicas pay their
    # requests (16 vCPUs, 64 GiB each), the GPU pool its 16 GPUs.
    out = tmp_path / "chargeback"
    proc = run_gpuslo(
        "cost",
        "report",
        str(tmp_path / "catalog.yaml"),
        "--data",
        str(run / "history.om"),
        "--from",
        str(start + 3600),
        "--to",
        str(start + 7200 - 15),
        "--step",
        "15s",
        "-o",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "report.json").read_text())
    hours = (data["summary"]["to"] - data["summary"]["from"] + 15) / 3600
    by_model: dict[str, float] = {}
    for row in data["rows"]:
        by_model[row["model"]] = by_model.get(row["model"], 0.0) + row["allocated_dollars"]
    assert by_model["llama-3-8b"] == pytest.approx(2 * (16 * 0.012 + 64 * 0.0032) * hours)
    assert by_model["llama-3-70b"] == pytest.approx(16 * 2.95 * hours)
    assert data["summary"]["reconciles"] is True
