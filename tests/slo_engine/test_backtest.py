"""``gpuslo backtest``: the twin's offline history and ground truth through the alert policy,
alternatives side by side, scores by hand, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gpuslo.cli.backtest_cmd import parse_time
from gpuslo.slo_engine.backtest import Incident, Policy, load_incidents, run, score
from gpuslo.slo_engine.evaluator import Episode, SliData
from gpuslo.slo_engine.model import SLO, AlertTier
from tests.conftest import run_gpuslo

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.05, long_window: 5m, short_window: 1m}
  - {name: ticket-slow, severity: ticket, budget_fraction: 0.2, long_window: 30m, short_window: 5m}
"""
SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults:
  service: chat
  window: 1h
  alerting: {base_window: 1m, windows: windows.yaml}
slos:
  - name: chat-ttft
    objective: 99
    selector: {model: llama-3-70b}
    latency: {metric: ttft, threshold: 5s}
"""


@pytest.fixture(scope="module")
def spike(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backtest")
    proc = run_gpuslo(
        "twin", "offline", str(ROOT / "simulator/scenarios/traffic-spike.yaml"), "-o", str(tmp)
    )
    assert proc.returncode == 0, proc.stderr
    (tmp / "windows.yaml").write_text(WINDOWS)
    (tmp / "slos.yaml").write_text(SPEC)
    return tmp


@pytest.mark.component
def test_the_twins_traffic_spike_pages_once_and_alternatives_line_up(spike):
    out = spike / "report"
    proc = run_gpuslo(
        "backtest",
        str(spike / "slos.yaml"),
        "--data",
        str(spike / "history.om"),
        "--incidents",
        str(spike / "incidents.json"),
        "--step",
        "15s",
        "--compare",
        "strict:objective=99.9",
        "--compare",
        "pages-only:tiers=page-fast,min_events=1000000",
        "--explain",
        "-o",
        str(out),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    incident = load_incidents(spike / "incidents.json")[0]
    by_policy = {s["policy"]: s for s in report["slos"]}
    assert set(by_policy) == {"as-specified", "strict", "pages-only"}
    spec = by_policy["as-specified"]
    pages = [e for e in spec["episodes"] if e["tier"] == "page-fast"]
    assert len(pages) == 1
    # the spike (3x one tenant's traffic over capacity) pages within two minutes of starting
    assert incident.start <= pages[0]["start"] <= incident.start + 120
    assert pages[0]["end"] <= incident.end + 5 * 60
    # --explain: the page names the tenant whose traffic tripled
    cause = pages[0]["causes"][0]
    assert (cause["kind"], cause["entity"]) == ("traffic_spike", {"tenant": "acme"})
    scores = {s["tier"]: s for s in spec["scores"]}
    assert scores["page-fast"]["recall"] == 1.0 and scores["page-fast"]["precision"] == 1.0
    # a guard no traffic can meet silences everything: the comparison can tell policies apart
    assert by_policy["pages-only"]["episodes"] == []
    assert [t["name"] for t in by_policy["pages-only"]["tiers"]] == ["page-fast"]
    assert by_policy["strict"]["objective"] == pytest.approx(0.999)
    html = (out / "report.html").read_text()
    assert "chat-ttft" in html and "<img src='slo-0.png'" in html
    assert "traffic spike: requests/s by tenant on tenant=acme rose" in html
    assert (out / "slo-0.png").stat().st_size > 10_000
    # the table on stdout: one row per policy and tier
    assert sum(1 for line in proc.stdout.splitlines() if line.startswith("chat-ttft")) == 5


def tier(name: str, severity: str = "page") -> AlertTier:
    return AlertTier(name, severity, 0.02, 3600, 300)


def test_scores_by_hand():
    t = tier("page-fast")
    episodes = [
        Episode("page-fast", "page", 1000, 1600, 0.1, 20),  # incident 1, 100 s late
        Episode("page-fast", "page", 1700, 1800, 0.2, 15),  # incident 1 still (within grace)
        Episode("page-fast", "page", 9000, 9100, 0.3, 15),  # nothing: false positive
    ]
    incidents = [Incident("a", 900, 1500), Incident("b", 5000, 6000)]
    (s,) = score(episodes, [t], incidents)
    assert (s.episodes, s.true_positives, s.detected, s.incidents) == (3, 2, 1, 2)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == 0.5
    assert s.mean_detection == 100
    assert s.mean_reset == 300  # the last overlapping episode ends 300 s after the incident
    (none,) = score([], [t], [])
    assert math.isnan(none.precision) and math.isnan(none.recall)


def test_run_limits_episodes_to_the_range_and_applies_policies():
    fast = AlertTier("page-fast", "page", 0.5, 900, 60)  # burn-rate threshold 2 over 1h
    slo = SLO("x", "svc", 0.99, 3600.0, "e", "r", (fast,), base_window=60.0)
    n = 240
    requests = np.full(n, 10.0)
    errors = np.full(n, 0.01)
    errors[150:180] = 5.0  # half the requests fail for 30 minutes
    data = SliData(0.0, 60.0, errors, requests)
    results = run(
        slo,
        data,
        60 * 100,
        60 * 239,
        [Incident("k", 9000, 10800)],
        [Policy("loose", objective=0.5)],
    )
    spec, loose = results
    assert [e.tier for e in spec.evaluation.episodes] == ["page-fast"]
    assert spec.scores[0].recall == 1.0
    assert loose.evaluation.episodes == []  # a 50% objective never burns at 50% errors


def test_parse_time_forms():
    now = 1_800_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("now-1h", now) == now - 3600
    assert parse_time("1700000000", now) == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20Z", now) == 1_700_000_000
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday", now)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--slo", "nope"], "--slo: no SLO named nope"),
        (["--compare", "x:speed=2"], "--compare x: speed: unknown key"),
        (["--compare", "noname"], "expected NAME:key=value"),
        (["--from", "yesterday"], "not a time"),
        (["--step", "fast"], "--step"),
        (["--incidents", "slos.yaml"], "not JSON"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(spike, extra, message):
    rates = spike / "rates.csv"
    rates.write_text("timestamp,slo,errors,requests\n0,chat-ttft,0,1\n60,chat-ttft,0,1\n")
    args = [str(spike / "slos.yaml"), "--data", str(rates)]
    args += [str(spike / e) if e == "slos.yaml" else e for e in extra]
    proc = run_gpuslo("backtest", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_base_rate_table_is_a_history_too(spike, tmp_path):
    rows = ["timestamp,slo,errors,requests"]
    for k in range(180):
        err = 0.5 if 100 <= k < 130 else 0.0
        rows.append(f"{1_700_000_000 + 60 * k},chat-ttft,{err},1.0")
    (tmp_path / "rates.csv").write_text("\n".join(rows) + "\n")
    proc = run_gpuslo("backtest", str(spike / "slos.yaml"), "--data", str(tmp_path / "rates.csv"))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert {r[2]: int(r[3]) for r in rows} == {"page-fast": 1, "ticket-slow": 1}
