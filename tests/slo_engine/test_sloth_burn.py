"""Sloth-equivalent inputs page (and ticket) at the same burn as Sloth's own rules.

``sloth_rules`` writes the rules Sloth generates for a prometheus/v1 SLO, from the shapes of
Sloth's output (``slo:sli_error:ratio_rate<W>`` per window from the templated queries, labels
``sloth_id``/``sloth_service``/``sloth_slo``/``sloth_window``, one page and one ticket alert,
each ``(short > f * budget and long > f * budget) or (...)`` over the quick and slow windows
with ``f = errorBudgetPercent / 100 * period / longWindow``). promtool then runs both rule sets
over the same series, and the tests assert both page and ticket at the same evaluation times.

Steady error ratios just above and just below each threshold pin the burn factor; a step
change pins the timing: gpuslo derives its long windows from the recorded 5m rates, so its
onset lags Sloth's raw ``rate(x[1h])`` by at most a few minutes (rules.py), and the step tests
check the minutes before the step and once both have settled.
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from gpuslo.foundation.durations import format_duration
from gpuslo.foundation.yamlpos import load_documents
from gpuslo.slo_engine import load_specs, rule_groups
from gpuslo.slo_engine.sloth import SlothWindows, default_windows, load_alert_windows, load_sloth
from tests.conftest import need

FIX = Path(__file__).parent / "fixtures" / "sloth"
SPEC = FIX / "burn" / "availability.yaml"
CRD = FIX / "burn" / "availability-crd.yaml"
SEVEN_DAYS = FIX / "windows" / "custom-7d.yaml"
GPUSLO_ALERT = "ApiAvailability"
SLOTH_ALERT = "SlothApiAvailability"  # Sloth's alert, renamed so both run in one promtool test
PER_MINUTE = 1000  # requests a minute in every scenario


def sloth_rules(
    service: str,
    name: str,
    objective: float,
    error_query: str,
    total_query: str,
    windows: SlothWindows,
    alert: str,
) -> dict:
    """The SLI recordings and the two alerts Sloth generates for one events SLO (one group,
    recordings first, so promtool evaluates them in order)."""
    ids = {"sloth_id": f"{service}-{name}", "sloth_service": service, "sloth_slo": name}
    sel = "{" + ", ".join(f'{k}="{v}"' for k, v in ids.items()) + "}"
    budget = (100 - objective) / 100
    needed = sorted({w for t in windows.tiers for w in (t.short_window, t.long_window)})
    rules: list[dict] = []
    for seconds in needed:
        w = format_duration(seconds)
        err, tot = (q.replace("{{.window}}", w) for q in (error_query, total_query))
        rules.append(
            {
                "record": f"slo:sli_error:ratio_rate{w}",
                "expr": f"({err})\n/\n({tot})\n",
                "labels": {**ids, "sloth_window": w},
            }
        )

    def cond(tier) -> str:
        f = tier.budget_fraction * windows.period / tier.long_window
        short, long_ = format_duration(tier.short_window), format_duration(tier.long_window)
        return (
            f"(\n    (slo:sli_error:ratio_rate{short}{sel} > ({f:g} * {budget!r}))\n"
            "    and ignoring (sloth_window)\n"
            f"    (slo:sli_error:ratio_rate{long_}{sel} > ({f:g} * {budget!r}))\n)"
        )

    for severity in ("page", "ticket"):
        quick, slow = (t for t in windows.tiers if t.severity == severity)
        rules.append(
            {
                "alert": alert,
                "expr": f"{cond(quick)}\nor ignoring (sloth_window)\n{cond(slow)}\n",
                "labels": {"sloth_severity": severity},
            }
        )
    return {"name": f"sloth-slo-{service}-{name}", "rules": rules}


def series(ratio_by_minute: list[tuple[int, float]], minutes: int) -> list[dict]:
    """Counters of good (200) and failed (500) requests: ``ratio_by_minute`` lists (from
    minute, error ratio) steps; PER_MINUTE requests a minute."""
    bad, good, b, g = [], [], 0.0, 0.0
    steps = dict(ratio_by_minute)
    ratio = 0.0
    for m in range(minutes + 1):
        ratio = steps.get(m, ratio)
        bad.append(b)
        good.append(g)
        b += PER_MINUTE * ratio
        g += PER_MINUTE * (1 - ratio)

    def values(xs: list[float]) -> str:
        return " ".join(f"{x:g}" for x in xs)

    return [
        {"series": 'http_requests_total{job="api",code="500"}', "values": values(bad)},
        {"series": 'http_requests_total{job="api",code="200"}', "values": values(good)},
    ]


def firing(alert: str, severity: str) -> str:
    """1 when an alert of the severity fires, else 0 (gpuslo: by tier; Sloth: sloth_severity)."""
    match = f'sloth_severity="{severity}"' if alert == SLOTH_ALERT else f'tier=~"{severity}-.*"'
    alerts = f'ALERTS{{alertname="{alert}",alertstate="firing",{match}}}'
    return f"(count({alerts}) > bool 0) or vector(0)"


def case(steps: list[tuple[int, float]], minutes: int, expect: dict[int, tuple[int, int]]) -> dict:
    """One promtool test: at each minute in ``expect``, (page, ticket) for both rule sets."""
    checks = []
    for minute, (page, ticket) in sorted(expect.items()):
        for alert in (GPUSLO_ALERT, SLOTH_ALERT):
            for severity, want in (("page", page), ("ticket", ticket)):
                checks.append(
                    {
                        "expr": firing(alert, severity),
                        "eval_time": f"{minute}m",
                        "exp_samples": [{"labels": "{}", "value": want}],
                    }
                )
    return {
        "interval": "1m",
        "input_series": series(steps, minutes),
        "promql_expr_test": checks,
    }


def run_promtool(tmp_path: Path, gpuslo_groups: list, sloth_group: dict, tests: list) -> None:
    promtool = need("promtool")
    (tmp_path / "gpuslo.rules.yaml").write_text(yaml.safe_dump({"groups": gpuslo_groups}))
    (tmp_path / "sloth.rules.yaml").write_text(yaml.safe_dump({"groups": [sloth_group]}))
    (tmp_path / "test.yaml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["gpuslo.rules.yaml", "sloth.rules.yaml"],
                "evaluation_interval": "1m",
                "tests": tests,
            }
        )
    )
    out = subprocess.run(
        [promtool, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]


def sloth_for(path: Path, windows: SlothWindows) -> tuple[list, dict]:
    (data, node), *_ = load_documents(path)
    slos, _ = load_sloth(path, data, node, windows=windows)
    spec = yaml.safe_load(SPEC.read_text())
    s = spec["slos"][0]
    reference = sloth_rules(
        spec["service"],
        s["name"],
        s["objective"],
        s["sli"]["events"]["error_query"],
        s["sli"]["events"]["total_query"],
        windows,
        SLOTH_ALERT,
    )
    return rule_groups(slos), reference


# Thresholds at 99.9% over 30 days: page 14.4x (1.44%) or 6x (0.6%), ticket 3x (0.3%) or 1x
# (0.1%). Each steady case runs 8 hours and is checked after the windows have filled.
STEADY_30D = [
    (0.02, (1, 1)),  # far above everything
    (0.0065, (1, 1)),  # just above the page-slow burn
    (0.0055, (0, 1)),  # just below it: tickets only
    (0.0011, (0, 1)),  # just above the ticket-slow burn
    (0.0009, (0, 0)),  # just below it: nothing
]


@pytest.mark.component
@pytest.mark.parametrize("spec", [SPEC, CRD], ids=["prometheus-v1", "k8s-crd"])
def test_steady_burn_pages_and_tickets_at_sloths_thresholds(tmp_path, spec):
    groups, reference = sloth_for(spec, default_windows())
    tests = [
        case([(0, ratio)], 480, {m: expect for m in (120, 240, 480)})
        for ratio, expect in STEADY_30D
    ]
    run_promtool(tmp_path, groups, reference, tests)


@pytest.mark.component
def test_a_step_pages_in_both_and_neither_pages_before_it(tmp_path):
    groups, reference = sloth_for(SPEC, default_windows())
    # 3 h clean, then every request fails for 40 minutes, then clean again. Measured: Sloth
    # pages from 3h1m to 4h9m, gpuslo from 3h3m to 4h13m; both ticket from 3h1m on (the
    # ticket's short window is 6h).
    steps = [(0, 0.0), (180, 1.0), (220, 0.0)]
    expect = {m: (0, 0) for m in range(170, 181)}
    expect |= {m: (1, 1) for m in range(185, 246, 5)}
    expect |= {m: (0, 1) for m in range(255, 311, 5)}
    run_promtool(tmp_path, groups, reference, [case(steps, 310, expect)])


@pytest.mark.component
def test_custom_alert_windows_page_at_the_same_burn(tmp_path):
    windows = load_alert_windows(SEVEN_DAYS)
    groups, reference = sloth_for(SPEC, windows)
    # 7 days at 99.9%: page 13.44x (1.344%) or 3.5x (0.35%); ticket 1.4x or 0.98x (0.098%).
    tests = [
        case([(0, ratio)], 480, {m: expect for m in (240, 480)})
        for ratio, expect in (
            (0.0037, (1, 1)),
            (0.0033, (0, 1)),
            (0.00105, (0, 1)),
            (0.0009, (0, 0)),
        )
    ]
    run_promtool(tmp_path, groups, reference, tests)


def test_the_reference_rules_follow_sloths_shapes():
    _, reference = sloth_for(SPEC, default_windows())
    records = [r["record"] for r in reference["rules"] if "record" in r]
    assert records == [
        f"slo:sli_error:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    ]
    page = next(r for r in reference["rules"] if r.get("labels") == {"sloth_severity": "page"})
    assert "(14.4 * 0.000999" in page["expr"] and "(6 * 0.000999" in page["expr"]
    assert load_specs([SPEC])[0][0].alert_name == GPUSLO_ALERT


@pytest.mark.component
def test_one_slo_name_under_two_services_burns_and_pages_apart(tmp_path):
    promtool = need("promtool")
    spec = FIX / "valid" / "v1-same-name-two-services.yaml"
    slos, _ = load_specs([spec])
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(slos)}))

    def counters(job: str, ratio: float) -> list[dict]:
        out = series([(0, ratio)], 240)
        for s in out:
            s["series"] = s["series"].replace('job="api"', f'job="{job}"')
        return out

    def value(expr: str, want: float) -> dict:
        return {
            "expr": expr,
            "eval_time": "3h",
            "exp_samples": [{"labels": "{}", "value": want}],
        }

    burn = "gpuslo:slo_burn_rate:ratio_rate1h"
    test = {
        "interval": "1m",
        # frontend: 2% errors at 99.9% (burn 20: pages); backend: 0.5% at 99% (burn 0.5)
        "input_series": counters("frontend", 0.02) + counters("backend", 0.005),
        "promql_expr_test": [
            value(f"count({burn})", 2),
            value(f'sum({burn}{{service="frontend"}})', 20),
            value(f'sum({burn}{{service="backend"}})', 0.5),
            value('count(ALERTS{alertname="RequestsFailing",service="frontend"})', 4),
            value('count(ALERTS{alertname="RequestsFailing",service="backend"}) or vector(0)', 0),
        ],
    }
    (tmp_path / "test.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [test]})
    )
    out = subprocess.run(
        [promtool, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
