"""OpenSLO budgeting methods and threshold SLIs, evaluated by promtool's real rule engine.

Seventy minutes of traffic sampled every 15 s, ten requests per sample, with a busy, bad stretch
in the middle; the recorded 1h error ratio at minute 70 must be what each method's definition
gives (the window starts and ends in steady traffic, where the 5m base rates sum exactly):

- Occurrences over a ratio: bad requests / requests.
- Timeslices: the share of one-minute slices whose good ratio is under timeSliceTarget.
- RatioTimeslices: the mean of the slices' bad ratios.
- thresholdMetric, Occurrences: the share of evaluations where the metric breaks op/value.
- thresholdMetric, Timeslices: the share of 5m slices with under timeSliceTarget good points.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from gpuslo.slo_engine import load_specs, rule_groups
from gpuslo.slo_engine.rules import error_ratio
from tests.conftest import need

pytestmark = pytest.mark.component

EVAL = 70  # minutes: the 1h window (10m, 70m] starts and ends in steady traffic
STEPS = 4 * EVAL  # 15 s samples
BAD_REQUESTS = range(81, 105)  # samples (20m, 26m]: twice the traffic, half of it failing
SLOW = range(121, 169)  # samples (30m, 42m]: the gauge reads 0.9 instead of 0.2

SLI_RATIO = """\
apiVersion: openslo/v1
kind: SLI
metadata: {name: reqs}
spec:
  ratioMetric:
    counter: true
    good: {metricSource: {type: Prometheus, spec: {query: 'reqs_total{outcome="ok"}'}}}
    total: {metricSource: {type: Prometheus, spec: {query: reqs_total}}}
---
apiVersion: openslo/v1
kind: SLI
metadata: {name: p99}
spec:
  thresholdMetric: {metricSource: {type: Prometheus, spec: {query: queue_p99_seconds}}}
"""


def slo(name: str, sli: str, method: str, objective: str) -> str:
    return f"""---
apiVersion: openslo/v1
kind: SLO
metadata: {{name: {name}}}
spec:
  service: svc
  indicatorRef: {sli}
  timeWindow: [{{duration: 30d, isRolling: true}}]
  budgetingMethod: {method}
  objectives:
    - {objective}
"""


SPEC = (
    SLI_RATIO
    + slo("occurrences", "reqs", "Occurrences", "{target: 0.99}")
    + slo(
        "timeslices",
        "reqs",
        "Timeslices",
        "{target: 0.9, timeSliceTarget: 0.95, timeSliceWindow: 1m}",
    )
    + slo("ratio-timeslices", "reqs", "RatioTimeslices", "{target: 0.9, timeSliceWindow: 1m}")
    + slo("threshold", "p99", "Occurrences", "{target: 0.9, op: lte, value: 0.5}")
    + slo(
        "threshold-slices",
        "p99",
        "Timeslices",
        "{target: 0.9, op: lte, value: 0.5, timeSliceTarget: 0.8, timeSliceWindow: 5m}",
    )
)


def cumulative(per_step) -> str:
    total, out = 0, []
    for k in range(STEPS + 1):
        total += per_step(k) if k else 0
        out.append(str(total))
    return " ".join(out)


def expected() -> dict[str, float]:
    """Each method's definition applied to the input, per one-minute evaluation."""
    minutes = range(EVAL - 59, EVAL + 1)

    def errors(k: int) -> int:
        return 10 if k in BAD_REQUESTS else 0

    def bad_share(t: int) -> float:  # bad requests among the samples of slice (t-1m, t]
        steps = range(4 * t - 3, 4 * t + 1)
        return sum(errors(k) for k in steps) / sum(10 + errors(k) for k in steps)

    def slow_at(t: int) -> bool:  # the gauge's last sample at minute t
        return 4 * t in SLOW

    # Promtool evaluates a 5m subquery at the 1m steps in [t-5m, t], both ends included.
    def slice_good(t: int) -> float:
        points = range(t - 5, t + 1)
        return sum(not slow_at(p) for p in points if p >= 0) / len([p for p in points if p >= 0])

    steps = range(4 * (EVAL - 60) + 1, STEPS + 1)
    return {
        "occurrences": sum(errors(k) for k in steps) / sum(10 + errors(k) for k in steps),
        "timeslices": sum(1 - bad_share(t) < 0.95 for t in minutes) / 60,
        "ratio-timeslices": sum(bad_share(t) for t in minutes) / 60,
        "threshold": sum(slow_at(t) for t in minutes) / 60,
        "threshold-slices": sum(slice_good(t) < 0.8 for t in minutes) / 60,
    }


def test_each_budgeting_method_records_what_its_definition_says(tmp_path):
    spec = tmp_path / "slos.yaml"
    spec.write_text(SPEC)
    slos, _ = load_specs([spec])
    units = {s.name: s.unit for s in slos}
    assert units["occurrences"] == "requests" and units["timeslices"] == "time slices"
    groups = rule_groups(slos)
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    want = expected()
    # The cases differ from each other, so a method mixed up with another would show.
    assert len({round(v, 9) for v in want.values()}) == len(want), want
    assert all(0 < v < 1 for v in want.values()), want
    suite = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {
                        "series": 'reqs_total{outcome="ok"}',
                        "values": cumulative(lambda k: 10),
                    },
                    {
                        "series": 'reqs_total{outcome="error"}',
                        "values": cumulative(lambda k: 10 if k in BAD_REQUESTS else 0),
                    },
                    {
                        "series": "queue_p99_seconds",
                        "values": " ".join("0.9" if k in SLOW else "0.2" for k in range(STEPS + 1)),
                    },
                ],
                "promql_expr_test": [
                    {
                        # promtool compares values exactly; allow for float rounding.
                        "expr": f'abs({error_ratio("1h")}{{slo="{name}"}} - {value!r}) '
                        "< bool 1e-12",
                        "eval_time": f"{EVAL}m",
                        "exp_samples": [{"labels": f'{{service="svc",slo="{name}"}}', "value": 1}],
                    }
                    for name, value in want.items()
                ],
            }
        ],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    out = subprocess.run(
        [need("promtool"), "test", "rules", "suite.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
