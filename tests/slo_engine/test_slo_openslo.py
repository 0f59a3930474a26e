import subprocess
from pathlib import Path

import pytest

from gpuslo.slo_engine import SpecError, load_specs, rule_groups, write_outputs
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "slos" / "openslo" / "search.yaml"


@pytest.mark.component
@pytest.mark.parametrize(
    "example", [EXAMPLE, EXAMPLE.with_name("queue.yaml")], ids=lambda p: p.stem
)
def test_openslo_example_generates_golden_rules_that_promtool_accepts(tmp_path, golden, example):
    slos, warnings = load_specs([example])
    assert warnings == []
    rules, _ = write_outputs(slos, [str(example)], tmp_path)
    golden(f"openslo_{example.stem}.rules.yaml", rules.read_text())
    out = subprocess.run(
        [need("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_each_objective_is_an_slo_and_burnrate_conditions_are_its_tiers():
    slos, _ = load_specs([EXAMPLE])
    by_name = {s.name: s for s in slos}
    assert sorted(by_name) == ["search-availability-good", "search-availability-great"]
    good = by_name["search-availability-good"]
    assert (good.objective, good.period) == (0.995, 28 * 86400)
    assert by_name["search-availability-great"].objective == 0.999
    assert good.total_query == 'sum(rate(gen_ai_server_requests_total{model="bge-large"}[5m]))'
    assert good.errors_query.startswith("(sum(rate(gen_ai_server_requests_total{model=")
    assert [
        (t.name, t.severity, round(t.factor(good.period), 9), t.long_window, t.short_window)
        for t in good.tiers
    ] == [
        ("search-fast-burn", "page", 14.4, 3600, 300),
        ("search-slow-burn", "ticket", 1.0, 259200, 21600),
    ]
    assert good.labels == (("team", "search"),)
    alerts = [r for r in rule_groups([good])[0]["rules"] if "alert" in r]
    assert [r["labels"]["tier"] for r in alerts] == [
        "search-fast-burn",
        "search-slow-burn",
        "no-data",
    ]


def split(tmp_path):
    """The example's documents spread over two files: references resolve across files."""
    docs = EXAMPLE.read_text().split("\n---\n")
    a, b = tmp_path / "defs.yaml", tmp_path / "slo.yaml"
    a.write_text("\n---\n".join(docs[:-1]))
    b.write_text(docs[-1])
    return a, b


def test_references_resolve_across_files(tmp_path):
    a, b = split(tmp_path)
    slos, _ = load_specs([a, b])
    assert len(slos) == 2
    with pytest.raises(SpecError) as err:
        load_specs([b])
    assert [str(p) for p in err.value.problems] == [
        f"{b}:9:17: spec.indicatorRef: no SLI named 'search-requests-ok'",
        f"{b}:20:7: spec.alertPolicies[0]: no AlertPolicy named 'search-burn'",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("budgetingMethod: Occurrences", "budgetingMethod: Timeslices"),
            "spec.objectives[0]: Timeslices budgeting needs timeSliceWindow",
        ),
        (
            ("      target: 0.995", "      target: 0.995\n      timeSliceWindow: 1m"),
            "spec.objectives[0]: timeSliceTarget and timeSliceWindow need Timeslices budgeting",
        ),
        (
            ("      target: 0.995", "      target: 0.995\n      op: lt\n      value: 1"),
            "spec.objectives[0]: op and value apply to thresholdMetric SLIs only",
        ),
        (
            ("      isRolling: true", "      isRolling: false"),
            "spec.timeWindow[0].duration: calendar window '28d' is not supported; use 1M",
        ),
        (
            (
                "    - duration: 28d\n      isRolling: true",
                "    - duration: 1M\n      isRolling: false\n"
                "      calendar: {startTime: '2026-01-01 00:00:00', timeZone: Europe/Amsterdam}",
            ),
            "spec.timeWindow[0].calendar.timeZone: time zone 'Europe/Amsterdam' is not supported",
        ),
        (
            (
                "    - duration: 28d\n      isRolling: true",
                "    - duration: 1w\n      isRolling: false\n"
                "      calendar: {startTime: '2026-01-01 00:00:00', timeZone: UTC}",
            ),
            "spec.timeWindow[0].calendar.startTime: calendar weeks start at 00:00 UTC on a Monday",
        ),
        (
            ("  service: search", "  service: search\n  owner: me"),
            "spec.owner: Extra inputs are not permitted",
        ),
        (("    - search-burn", "    - nope"), "spec.alertPolicies[0]: no AlertPolicy named 'nope'"),
    ],
)
def test_unsupported_and_unknown_fields_are_reported_at_their_place(tmp_path, change, expected):
    spec = tmp_path / "s.yaml"
    spec.write_text(EXAMPLE.read_text().replace(*change))
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    messages = [str(p) for p in err.value.problems]
    assert any(expected in m and m.startswith(f"{spec}:") for m in messages), messages


def test_non_prometheus_sources_and_two_slis_at_once_are_refused(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(EXAMPLE.read_text().replace("  type: Prometheus", "  type: Datadog"))
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert "metric source type 'Datadog' is not supported" in str(err.value)
    spec.write_text(
        EXAMPLE.read_text().replace(
            "  ratioMetric:",
            "  thresholdMetric: {metricSource: {type: Prometheus}}\n  ratioMetric:",
        )
    )
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert "give exactly one of ratioMetric or thresholdMetric" in str(err.value)


def test_notification_targets_are_reported_not_silently_dropped(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        EXAMPLE.read_text().replace(
            "  conditions:\n    - conditionRef",
            "  notificationTargets:\n    - targetRef: pager\n  conditions:\n    - conditionRef",
        )
    )
    _, warnings = load_specs([spec])
    assert [w.field for w in warnings] == ["spec.notificationTargets"]
    assert "route notifications with Alertmanager" in warnings[0].message
