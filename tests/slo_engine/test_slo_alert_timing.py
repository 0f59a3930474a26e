"""promtool test rules suites: each burn-rate tier fires at the minute the workbook math
predicts, not for an error rate just below its threshold, and resets after the errors stop.

The prediction: with steady traffic sampled every minute, the recorded 5m error ratio is the
mean of the last five one-minute error shares, and a W-window ratio is the mean of the last
W recorded 5m ratios (the rules' documented derivation). A tier fires when both its windows
exceed factor x budget, the workbook's condition. promtool evaluates the generated rules for
real; the annotations are dropped from the tested copy only because they template the live
burn rate, which is not what these tests are about.
"""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from gpuslo.slo_engine import load_specs, rule_groups
from tests.conftest import need

pytestmark = pytest.mark.component

SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: svc}
slos:
  - name: avail
    objective: 99.9
    selector: {model: m}
    availability: {}
  - name: ttft
    objective: 99
    selector: {model: m}
    latency: {metric: ttft, threshold: 500ms}
"""
RATE = 100  # requests per minute
HISTORY = 3 * 1440 + 30  # healthy minutes first: longer than the longest window (3d)


def tiers_of(slo):
    return [
        (
            t.name,
            round(t.long_window / 60),
            round(t.short_window / 60),
            Fraction(t.factor(slo.period)).limit_denominator(10**6)
            * Fraction(slo.budget).limit_denominator(10**9),
        )
        for t in slo.tiers
    ]


class Model:
    """Recorded error ratios per minute from a per-minute error share sequence."""

    def __init__(self, shares: list[Fraction]) -> None:
        self.shares = shares  # shares[i]: error share of the requests in minute i (i >= 1)
        self.r5 = [Fraction(0)] * len(shares)
        for t in range(5, len(shares)):
            self.r5[t] = sum(shares[t - 4 : t + 1], Fraction(0)) / 5

    def ratio(self, window: int, t: int) -> Fraction:
        if window == 5:
            return self.r5[t]
        assert t - window >= 5, "window must lie in clean history"
        return sum(self.r5[t - window + 1 : t + 1], Fraction(0)) / window

    def firing(self, tiers, t: int) -> set[str]:
        out = set()
        for name, long_w, short_w, threshold in tiers:
            for w in (long_w, short_w):
                gap = abs(self.ratio(w, t) - threshold)
                assert gap > Fraction(1, 10**9), f"{name} too close to its threshold at {t}m"
            if self.ratio(long_w, t) > threshold and self.ratio(short_w, t) > threshold:
                out.add(name)
        return out


def shares(phases: list[tuple[int, Fraction]]) -> list[Fraction]:
    out = [Fraction(0)]  # minute 0 has no increment
    for minutes, share in phases:
        out += [share] * minutes
    return out


def series_values(shares_: list[Fraction], good: bool) -> str:
    total, values = Fraction(0), []
    for s in shares_:
        total += RATE * ((1 - s) if good else s)
        values.append(format(float(total), ".10g"))
    return " ".join(values)


def input_series(slo_name: str, shares_: list[Fraction]) -> list[dict[str, str]]:
    if slo_name == "avail":
        return [
            {
                "series": 'gen_ai_server_requests_total{model="m",outcome="ok"}',
                "values": series_values(shares_, good=True),
            },
            {
                "series": 'gen_ai_server_requests_total{model="m",outcome="error"}',
                "values": series_values(shares_, good=False),
            },
        ]
    everything = " ".join(str(RATE * i) for i in range(len(shares_)))
    base = "gen_ai_server_time_to_first_token_seconds"
    return [
        {"series": f'{base}_bucket{{model="m",le="0.5"}}', "values": series_values(shares_, True)},
        {"series": f'{base}_bucket{{model="m",le="+Inf"}}', "values": everything},
        {"series": f'{base}_count{{model="m"}}', "values": everything},
    ]


def checkpoints(model: Model, tiers, start: int, end: int) -> list[int]:
    """Every minute a tier starts or stops firing, and the minute before it; plus the end."""
    points, before = {end}, model.firing(tiers, start)
    for t in range(start + 1, end + 1):
        now = model.firing(tiers, t)
        if now != before:
            points |= {t - 1, t}
        before = now
    return sorted(points)


def run_suite(tmp_path: Path, slo_name: str, phases, end_after: int):
    promtool = need("promtool")
    spec = tmp_path / "slos.yaml"
    spec.write_text(SPEC)
    slos, _ = load_specs([spec])
    slo = next(s for s in slos if s.name == slo_name)
    groups = rule_groups([slo])
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    seq = shares(phases)
    model, tiers = Model(seq), tiers_of(slo)
    end = HISTORY + end_after
    assert len(seq) > end
    points = checkpoints(model, tiers, HISTORY - 1, end)
    tests = []
    for t in points:
        expected = sorted(model.firing(tiers, t))
        tests.append(
            {
                "eval_time": f"{t}m",
                "alertname": "GpusloBudgetBurn",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": next(x.severity for x in slo.tiers if x.name == n),
                            "slo": slo.name,
                            "service": "svc",
                            "tier": n,
                        }
                    }
                    for n in expected
                ],
            }
        )
    suite = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series(slo_name, seq),
                "alert_rule_test": tests,
            }
        ],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    out = subprocess.run(
        [promtool, "test", "rules", "suite.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    return model, tiers, points


def onset(model: Model, tiers, tier: str) -> int:
    return next(t for t in range(HISTORY, len(model.shares)) if tier in model.firing(tiers, t))


def test_every_tier_fires_when_predicted_and_page_resets_within_its_short_window(tmp_path):
    # 10% errors for 90 minutes on a 99.9% SLO (burn rate 100x), then healthy again.
    model, tiers, points = run_suite(
        tmp_path,
        "avail",
        [(HISTORY, Fraction(0)), (90, Fraction(1, 10)), (120, Fraction(0))],
        end_after=200,
    )
    starts = {name: onset(model, tiers, name) - HISTORY for name, *_ in tiers}
    # Workbook: detection after long_window * threshold / error share, for page-fast
    # 60 min * 0.0144 / 0.1 = 8.64 min. The 60-sample 1h window and the 5m base rate's ramp
    # (two minutes' worth of errors missing from the sum) make it the first minute k with
    # 0.1 * (k - 2) / 60 > 0.0144.
    assert starts["page-fast"] == math.floor(2 + 60 * 0.0144 / 0.1) + 1 == 11
    assert (
        starts["page-fast"] < starts["page-slow"] and starts["ticket-fast"] <= starts["ticket-slow"]
    )
    stop = HISTORY + 90
    reset = next(
        t for t in range(stop, len(model.shares)) if "page-fast" not in model.firing(tiers, t)
    )
    assert reset - stop <= 5  # the page resets within its 5m short window
    assert reset in points and reset - 1 in points  # and promtool checked both minutes


def test_a_latency_tier_stays_silent_just_below_its_threshold(tmp_path):
    # 99% latency SLO: page-fast needs 14.4% slow requests; 14.3% for 3 hours never pages fast,
    # while the slower tiers (6x, 3x, 1x) do fire. Then 30% slow requests pages fast too.
    model, tiers, _points = run_suite(
        tmp_path,
        "ttft",
        [(HISTORY, Fraction(0)), (180, Fraction(143, 1000)), (60, Fraction(3, 10))],
        end_after=235,
    )
    during = range(HISTORY, HISTORY + 180)
    assert not any("page-fast" in model.firing(tiers, t) for t in during)
    assert any("page-slow" in model.firing(tiers, t) for t in during)
    assert "page-fast" in model.firing(tiers, HISTORY + 235)
