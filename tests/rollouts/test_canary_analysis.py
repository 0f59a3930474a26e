"""The canary analysis: statistics, histogram quantiles, checks, decisions, spec errors,
reports and the Argo/Flagger templates."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import jsonschema
import pytest

from gpuslo.foundation.errors import SpecError
from gpuslo.rollouts import report, stats, templates
from gpuslo.rollouts.analysis import Sample, analyze, cdf, quantile
from gpuslo.rollouts.prom import check_queries
from gpuslo.rollouts.spec import CanarySpec, load_spec

FIXTURES = Path(__file__).parent / "fixtures"
SPEC = FIXTURES / "twin-canary.yaml"
BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def exp_buckets(n: float, mean: float, bounds: tuple[float, ...] = BOUNDS) -> list:
    rows = [(le, n * (1 - math.exp(-le / mean))) for le in bounds]
    return [*rows, (math.inf, n)]


def side(n: float, mean: float = 0.3, errors: float = 0.0005, cost: float = 1.0) -> Sample:
    tokens = n * 640
    return Sample(
        outcomes={"success": n * (1 - errors), "error": n * errors, "rejected": 0.0},
        tokens=tokens,
        histograms={
            m: exp_buckets(n, mean * k) for m, k in (("ttft", 1), ("tpot", 0.1), ("e2e", 10))
        },
        dollars=tokens * cost * 1e-6,
        gpu_seconds=tokens * cost * 1e-3,
    )


# ---------------------------------------------------------------------------- statistics
def test_msprt_false_rejections_stay_under_alpha_with_many_looks() -> None:
    """Under H0, looking after every batch for 200 batches rejects at most alpha of the
    sequences: the always-valid property (a fixed-n z-test looked at this often would not)."""
    rng = random.Random(7)
    alpha, sequences, rejected, naive = 0.05, 400, 0, 0
    for _ in range(sequences):
        total, n = 0.0, 0
        hit = hit_naive = False
        for _ in range(200):
            for _ in range(10):
                total += rng.gauss(0.0, 1.0)
                n += 1
            d, v = total / n, 1.0 / n
            if stats.verdict(d, v, 0.0, 0.5, alpha) == "fail":
                hit = True
            if d / math.sqrt(v) > 1.645:
                hit_naive = True
        rejected += hit
        naive += hit_naive
    assert rejected / sequences <= alpha
    assert naive / sequences > 2 * alpha  # why the sequential test is needed


def test_msprt_detects_a_real_difference_and_the_radius_shrinks() -> None:
    assert stats.verdict(0.2, 1e-4, 0.0, 0.1, 0.01) == "fail"
    assert stats.verdict(-0.2, 1e-4, 0.0, 0.1, 0.01) == "pass"
    assert stats.verdict(0.01, 1e-2, 0.0, 0.1, 0.01) == "inconclusive"
    assert stats.radius(1e-6, 0.1, 0.05) < stats.radius(1e-4, 0.1, 0.05)
    assert stats.p_value(-1.0, 1e-4, 0.0, 0.1) == 1.0
    assert stats.p_value(0.2, 1e-4, 0.0, 0.1) < 1e-6


# ---------------------------------------------------------------------------- histograms
def test_quantile_and_cdf_interpolate_inside_buckets() -> None:
    buckets = [(0.1, 10.0), (0.5, 50.0), (1.0, 90.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == (pytest.approx(0.5), False)
    assert quantile(0.3, buckets) == (pytest.approx(0.3), False)  # 0.1 + 0.4 * (30-10)/40
    assert quantile(0.95, buckets) == (1.0, True)  # in the +Inf bucket
    assert cdf(0.3, buckets) == pytest.approx(0.3)
    assert cdf(5.0, buckets) == pytest.approx(0.9)  # past the last finite bound
    assert cdf(0.05, buckets) == pytest.approx(0.05)


# ---------------------------------------------------------------------------- decisions
def spec(**changes: object) -> CanarySpec:
    base = load_spec(SPEC)
    return base.model_copy(update=changes)


def test_identical_sides_with_enough_requests_promote() -> None:
    result = analyze(spec(), side(2_000_000), side(200_000))
    assert result.decision == "promote", report.text(result)
    assert {r.verdict for r in result.checks} == {"pass"}


def test_a_quiet_window_holds_whatever_the_values() -> None:
    result = analyze(spec(), side(1_000_000), side(500, cost=3.0))
    assert result.decision == "hold"
    assert "minimum sample" in result.reason


def test_costlier_canary_is_rolled_back_on_cost_alone() -> None:
    result = analyze(spec(), side(500_000), side(50_000, cost=1.3))
    assert result.decision == "rollback"
    failed = {r.check for r in result.checks if r.verdict == "fail"}
    assert failed == {"cost-per-1m-tokens", "gpu-seconds-per-token"}
    cost = next(r for r in result.checks if r.check == "cost-per-1m-tokens")
    assert cost.canary / cost.baseline == pytest.approx(1.3)


def test_slower_distribution_fails_the_latency_check() -> None:
    result = analyze(spec(), side(500_000), side(50_000, mean=0.4))
    failed = {r.what for r in result.checks if r.verdict == "fail"}
    assert "ttft p50" in failed and "ttft p90" in failed
    assert result.decision == "rollback"


def test_more_errors_fail_the_error_ratio() -> None:
    result = analyze(spec(), side(500_000), side(50_000, errors=0.03))
    check = next(r for r in result.checks if r.check == "error-ratio")
    assert check.verdict == "fail" and check.canary == pytest.approx(0.03)


def test_missing_cost_series_is_no_data_and_holds() -> None:
    can = side(200_000)
    can.dollars = can.gpu_seconds = None
    result = analyze(spec(), side(2_000_000), can)
    assert result.decision == "hold"
    assert any(r.verdict == "no data" for r in result.checks)


def test_step_alpha_spends_alpha_over_steps_and_tests() -> None:
    s = spec()
    assert s.tests == 10
    assert s.step_alpha() == pytest.approx(0.05 / (3 * 10))


# ---------------------------------------------------------------------------- spec errors
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    return path


def test_spec_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "apiVersion: gpuslo/v1\nkind: CanaryAnalysis\nname: x\n"
        "baseline: {selector: {model: a}}\ncanary: {selector: {model: b}}\n"
        "checks:\n  - {kind: latency, metric: ttft}\n  - {kind: error_ratio, tolerance: 0.1}\n"
        "steps: [5, 50, 25]\n",
    )
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = "\n".join(str(p) for p in err.value.problems)
    assert f"{path}:7:5: checks[0]: a latency check needs tolerance" in text
    assert f"{path}:8:5: checks[1]: error_ratio needs max_increase" in text
    assert f"{path}:9:8: steps: step weights must increase" in text


def test_cost_checks_need_pods(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "apiVersion: gpuslo/v1\nkind: CanaryAnalysis\nname: x\n"
        "baseline: {selector: {model: a}}\ncanary: {selector: {model: b}}\n",
    )
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert [p.field for p in err.value.problems] == ["baseline", "canary"]
    assert "cost checks need pods" in str(err.value.problems[0])


# ---------------------------------------------------------------------------- output
def test_reports_carry_every_check_with_its_promql(tmp_path: Path) -> None:
    s = spec()
    result = analyze(s, side(500_000), side(50_000, cost=1.3), queries=check_queries(s, 600))
    txt = report.text(result)
    assert txt.startswith("canary llama-8b-v2: ROLLBACK")
    assert "$ per 1M tokens" in txt and "fail" in txt
    body = json.loads(report.as_json(result))
    assert body["decision"] == "rollback" and len(body["checks"]) == 10
    cost = next(c for c in body["checks"] if c["check"] == "cost-per-1m-tokens")
    assert any('pod=~"llama-8b-v2-[0-9]+"' in q for q in cost["promql"])
    assert all("[600s" in q for q in cost["promql"])
    page = report.write_html(result, tmp_path / "a.html").read_text()
    assert "ROLLBACK" in page and "gpuslo:pod_cost:dollars_per_second" in page


def test_argo_and_flagger_templates_match_their_crd_schema_subsets() -> None:
    s = spec()
    argo = templates.argo_analysis_template(s, "http://prometheus:9090", "inference")
    jsonschema.validate(
        argo, json.loads((FIXTURES / "argo-analysistemplate.schema-subset.json").read_text())
    )
    names = [m["name"] for m in argo["spec"]["metrics"]]
    assert names[0] == "min-sample" and len(names) == 1 + s.tests
    assert len(set(names)) == len(names)
    cost = next(m for m in argo["spec"]["metrics"] if m["name"] == "cost-per-1m-tokens")
    assert cost["successCondition"] == "result[0] <= 1.1"
    schema = json.loads((FIXTURES / "flagger-metrictemplate.schema-subset.json").read_text())
    flagger = templates.flagger_metric_templates(s, "http://prometheus:9090")
    for obj in flagger:
        jsonschema.validate(obj, schema)
    refs = templates.flagger_canary_metrics(s)
    assert {r["templateRef"]["name"] for r in refs} == {o["metadata"]["name"] for o in flagger}
    bad = dict(argo, spec={"metrics": [{"name": "x"}]})  # no provider
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            bad, json.loads((FIXTURES / "argo-analysistemplate.schema-subset.json").read_text())
        )
