import subprocess
from pathlib import Path

import pytest

from gpuslo.cli.main import main
from gpuslo.slo_engine import SpecError, load_specs, rule_groups, write_outputs
from gpuslo.slo_engine.model import Calendar
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
        f"{b}:9:17: spec.indicatorRef: no SLI named 'search-requests-ok' is given",
        f"{b}:20:7: spec.alertPolicies[0]: no AlertPolicy named 'search-burn' is given",
        f"{b}:21:7: spec.alertPolicies[1]: no AlertPolicy named 'search-slow-burn' is given",
    ]
    # Valid OpenSLO all the same: validate warns at the same places.
    slos, warnings = load_specs([b], unsupported="warn")
    assert slos == [] and [w.line for w in warnings] == [9, 20, 21]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("budgetingMethod: Occurrences", "budgetingMethod: Timeslices"),
            "spec: objectives[0]: Timeslices needs timeSliceWindow",
        ),
        (
            ("  service: search", "  service: Search"),
            "spec.service: 'Search' is not a name",
        ),
        (
            ("      isRolling: true", "      isRolling: false"),
            "spec.timeWindow[0]: a window that is not rolling",
        ),
        (
            ("    - duration: 28d", "    - duration: 28days"),
            "spec.timeWindow[0].duration: '28days' is not a duration shorthand",
        ),
        (
            (
                "    - duration: 28d\n      isRolling: true",
                "    - duration: 1M\n      isRolling: false\n"
                "      calendar: {startTime: '2026-01-01 00:00:00', timeZone: UTC}",
            ),
            "spec.timeWindow[0].calendar.timeZone: String should match pattern",
        ),
        (
            (
                "    - duration: 28d\n      isRolling: true",
                "    - duration: 1M\n      isRolling: false\n"
                "      calendar: {startTime: '2026-01-01T00:00:00Z', timeZone: Etc/UTC}",
            ),
            "spec.timeWindow[0].calendar.startTime: String should match pattern",
        ),
        (
            ("      target: 0.995", "      target: 1.5"),
            "spec.objectives[0].target: Input should be less than 1",
        ),
        (
            ("  severity: page", "  severity: page\n  description: " + "x" * 1051),
            "spec.description: at most 1050 characters (this description has 1051)",
        ),
        (
            ("    team: search", "    team: " + "s" * 64),
            "metadata.labels: label team",
        ),
        (
            ("    op: gte\n    threshold: 14.4", "    op: above\n    threshold: 14.4"),
            "spec.condition.op: Input should be 'lt', 'lte', 'gt' or 'gte'",
        ),
        (
            ("    - conditionRef: search-fast-burn", "    - operator: xor\n      conditionRef: x"),
            "spec.conditions[0].operator: Input should be 'and' or 'or'",
        ),
    ],
)
def test_schema_problems_are_errors_at_their_place(tmp_path, change, expected):
    spec = tmp_path / "s.yaml"
    text = EXAMPLE.read_text()
    assert change[0] in text
    spec.write_text(text.replace(*change, 1))
    with pytest.raises(SpecError) as err:
        load_specs([spec], unsupported="warn")
    messages = [str(p) for p in err.value.problems]
    assert any(expected in m and m.startswith(f"{spec}:") for m in messages), messages


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("      target: 0.995", "      target: 0.995\n      timeSliceWindow: 1m"),
            "spec.objectives[0]: timeSliceTarget and timeSliceWindow need Timeslices budgeting",
        ),
        (
            ("      target: 0.995", "      target: 0.995\n      op: lt\n      value: 1"),
            "spec.objectives[0]: op and value apply to thresholdMetric SLIs only",
        ),
        (
            ("    - search-burn\n", "    - nope\n"),
            "spec.alertPolicies[0]: no AlertPolicy named 'nope' is given",
        ),
        (
            ("    op: gte\n    threshold: 14.4", "    op: lte\n    threshold: 14.4"),
            "spec.condition.op: a burn-rate alert fires above its threshold; op 'lte'",
        ),
        (
            (
                "    - duration: 28d\n      isRolling: true",
                "    - duration: 1M\n      isRolling: false\n"
                "      calendar: {startTime: '2026-01-01 00:00:00', timeZone: Mars/Olympus}",
            ),
            "spec.timeWindow[0].calendar.timeZone: 'Mars/Olympus' is not an IANA time zone",
        ),
        (
            (
                "    - duration: 28d\n      isRolling: true",
                "    - duration: 12h\n      isRolling: false\n"
                "      calendar: {startTime: '2026-01-01 00:00:00', timeZone: Etc/UTC}",
            ),
            "spec.timeWindow[0].duration: a calendar window counts days, weeks, months",
        ),
        (
            ("  type: Prometheus", "  type: Datadog"),
            "metric source type 'Datadog' cannot become Prometheus rules",
        ),
    ],
)
def test_what_cannot_become_rules_warns_on_validate_and_fails_generate(tmp_path, change, expected):
    spec = tmp_path / "s.yaml"
    text = EXAMPLE.read_text()
    assert change[0] in text
    spec.write_text(text.replace(*change, 1))
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    messages = [str(p) for p in err.value.problems]
    assert any(expected in m and m.startswith(f"{spec}:") for m in messages), messages
    _, warnings = load_specs([spec], unsupported="warn")
    assert any(expected in str(w) and ": warning: " in str(w) for w in warnings), warnings


def test_unknown_fields_are_allowed_by_the_schema_and_warned_about_at_their_key(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        EXAMPLE.read_text().replace("  service: search", "  service: search\n  owner: me")
    )
    slos, warnings = load_specs([spec])
    assert len(slos) == 2
    assert [str(w) for w in warnings] == [
        f"{spec}:108:3: warning: spec.owner: not a field of OpenSLO; ignored"
    ]


def test_notification_targets_become_routes_not_warnings():
    from gpuslo.slo_engine.specs import openslo_routes

    _, warnings = load_specs([EXAMPLE])
    assert warnings == []
    routes = openslo_routes([EXAMPLE])
    assert [(r.policy, r.target, r.address, r.slos, r.tiers) for r in routes] == [
        (
            "search-burn",
            "search-pager",
            "http://pager.example:9099/hook",
            ("search-availability-good", "search-availability-great"),
            ("search-fast-burn",),
        ),
        (
            "search-slow-burn",
            "search-tickets",
            "http://tickets.example:8080/alertmanager",
            ("search-availability-good", "search-availability-great"),
            ("search-slow-burn",),
        ),
    ]


CALENDAR_SLO = """\
apiVersion: openslo/v1
kind: SLO
metadata:
  name: cal
spec:
  service: svc
  indicator:
    metadata: {{name: cal-sli}}
    spec:
      ratioMetric:
        counter: true
        good: {{metricSource: {{type: Prometheus, spec: {{query: ok_total}}}}}}
        total: {{metricSource: {{type: Prometheus, spec: {{query: all_total}}}}}}
  timeWindow:
    - duration: {duration}
      isRolling: false
      calendar:
        startTime: {start}
        timeZone: {zone}
  budgetingMethod: Occurrences
  objectives:
    - target: 0.99
"""


@pytest.mark.parametrize(
    ("duration", "start", "zone", "calendar"),
    [
        ("1M", "2026-01-01 00:00:00", "Etc/UTC", Calendar("month")),
        ("1w", "2026-01-05 00:00:00", "Etc/UTC", Calendar("week")),
        (
            "1d",
            "2020-01-21 12:30:00",
            "America/New_York",
            Calendar("day", 1, "2020-01-21T12:30:00", "America/New_York"),
        ),
        (
            "1d",
            "2026-03-29 00:00:00",
            "Europe/Amsterdam",
            Calendar("day", 1, "", "Europe/Amsterdam"),
        ),
        (
            "2w",
            "2026-01-05 00:00:00",
            "Europe/Berlin",
            Calendar("week", 2, "2026-01-05T00:00:00", "Europe/Berlin"),
        ),
        ("1Q", "2026-04-01 00:00:00", "Asia/Tokyo", Calendar("quarter", 1, "", "Asia/Tokyo")),
        (
            "3M",
            "2026-02-01 00:00:00",
            "Australia/Sydney",
            Calendar("month", 3, "2026-02-01T00:00:00", "Australia/Sydney"),
        ),
        (
            "1Y",
            "2026-07-01 00:00:00",
            "America/Sao_Paulo",
            Calendar("year", 1, "2026-07-01T00:00:00", "America/Sao_Paulo"),
        ),
        (
            "1M",
            "'2026-01-15 09:00:00'",
            "Europe/London",
            Calendar("month", 1, "2026-01-15T09:00:00", "Europe/London"),
        ),
    ],
)
def test_calendar_windows_become_calendars(tmp_path, duration, start, zone, calendar):
    spec = tmp_path / "s.yaml"
    spec.write_text(CALENDAR_SLO.format(duration=duration, start=start, zone=zone))
    (slo,), _ = load_specs([spec])
    assert slo.calendar == calendar
    assert slo.period == calendar.nominal


def test_rolling_windows_of_months_quarters_and_years_are_nominal(tmp_path):
    spec = tmp_path / "s.yaml"
    for duration, days in (("1M", 30), ("1Q", 91), ("1Y", 365), ("7d", 7), ("2w", 14)):
        spec.write_text(
            EXAMPLE.read_text().replace("    - duration: 28d", f"    - duration: {duration}")
        )
        slos, _ = load_specs([spec])
        assert [s.period for s in slos] == [days * 86400.0] * 2
        assert all(s.calendar is None for s in slos)


def test_burnrate_condition_ops_gt_and_gte_make_tiers(tmp_path):
    spec = tmp_path / "s.yaml"
    for op in ("gt", "gte"):
        spec.write_text(
            EXAMPLE.read_text().replace(
                "    op: gte\n    threshold: 14.4", f"    op: {op}\n    threshold: 14.4"
            )
        )
        slos, _ = load_specs([spec])
        assert [t.name for t in slos[0].tiers] == ["search-fast-burn", "search-slow-burn"]


LIST_FILE = ROOT / "examples" / "slos" / "openslo" / "list.yaml"
V2 = ROOT / "examples" / "slos" / "openslo" / "v2alpha.yaml"


def test_a_file_holding_a_list_of_documents_is_read_with_positions(tmp_path):
    (slo,), warnings = load_specs([LIST_FILE])
    assert warnings == []
    assert slo.name == "rerank-availability"
    assert slo.labels == (("pools", "h100-a,l40s-b"), ("team", "retrieval"))
    assert slo.source == (str(LIST_FILE), 60, 3)
    assert [(t.name, t.severity) for t in slo.tiers] == [("rerank-fast-burn", "page")]
    broken = tmp_path / "l.yaml"
    broken.write_text(LIST_FILE.read_text().replace("      - target: 0.99", "      - target: 2"))
    with pytest.raises(SpecError) as err:
        load_specs([broken])
    assert [str(p) for p in err.value.problems] == [
        f"{broken}:75:17: spec.objectives[0].target: Input should be less than 1"
    ]


def test_several_documents_and_lists_mix_across_files(tmp_path):
    slos, _ = load_specs([LIST_FILE, EXAMPLE, V2])
    assert len(slos) == 5


def test_unquoted_timestamps_are_read_as_written(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        CALENDAR_SLO.format(duration="1d", start="2020-01-21 12:30:00", zone="America/New_York")
    )
    (slo,), _ = load_specs([spec])
    assert slo.calendar is not None and slo.calendar.start == "2020-01-21T12:30:00"
    # an unquoted ISO timestamp is not the schema's form either
    spec.write_text(
        CALENDAR_SLO.format(duration="1d", start="2020-01-21T12:30:00Z", zone="Etc/UTC")
    )
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert "calendar.startTime: String should match pattern" in str(err.value)


def test_v2alpha_reads_into_the_same_model():
    slos, warnings = load_specs([V2])
    assert [(s.name, s.objective, s.unit) for s in slos] == [
        ("vision-success-good", 0.99, "time slices"),
        ("vision-success-great", 0.999, "time slices"),
    ]
    assert all(s.calendar == Calendar("month") for s in slos)
    assert "[1m]" in slos[0].errors_query and "[5m]" in slos[1].errors_query
    assert [w.field for w in warnings] == [
        "spec.objectives[0].compositeWeight",
        "spec.objectives[1].compositeWeight",
    ]


def test_v2alpha_refuses_v1_field_names(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(V2.read_text().replace("  sli:\n", "  indicator:\n"))
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert "indicator is not a field of openslo.com/v2alpha; use sli/sliRef" in str(err.value)


EXAMPLES = sorted((ROOT / "examples" / "slos" / "openslo").glob("*.yaml"))


@pytest.mark.component
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_rules_from_every_openslo_example_pass_promtool(tmp_path, example):
    slos, _ = load_specs([example])
    assert slos
    rules, _ = write_outputs(slos, [str(example)], tmp_path)
    out = subprocess.run(
        [need("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_validate_warns_where_generate_fails_and_strict_fails(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(EXAMPLE.read_text().replace("  type: Prometheus", "  type: Datadog"))
    assert main(["slo", "validate", str(spec)]) == 0
    assert main(["slo", "validate", "--strict", str(spec)]) == 1
    assert main(["slo", "generate", str(spec), "-o", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main(["slo", "generate", str(EXAMPLE), "-o", str(tmp_path / "ok")]) == 0


def test_cli_generate_skips_documents_nothing_needs_with_a_warning(tmp_path, capsys):
    service = tmp_path / "svc.yaml"
    service.write_text(
        "apiVersion: openslo/v1\nkind: Service\nmetadata: {name: lonely}\nspec: {}\n"
    )
    assert main(["slo", "generate", str(EXAMPLE), str(service), "-o", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"{service}:1:1: warning: (document): no SLO given uses Service 'lonely'" in err


def test_every_error_of_every_document_is_reported_at_once(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        EXAMPLE.read_text()
        .replace("  severity: page\n", "")
        .replace("      target: 0.995", "      target: 2")
        .replace("name: search-pager", "name: Search_Pager")
    )
    with pytest.raises(SpecError) as err:
        load_specs([spec], unsupported="warn")
    assert [p.field for p in err.value.problems] == [
        "spec.severity",
        "metadata.name",
        "spec.objectives[0].target",
    ]


def test_label_keys_must_be_prometheus_label_names_to_generate(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(EXAMPLE.read_text().replace("    team: search", "    team-name: search"))
    _, warnings = load_specs([spec], unsupported="warn")
    assert [w.field for w in warnings] == ["metadata.labels.team-name"]
    with pytest.raises(SpecError, match="'team-name' is not a Prometheus label name"):
        load_specs([spec])


@pytest.mark.parametrize(
    ("window", "calendar", "warned"),
    [
        (
            "    - duration: 1M\n      calendar: {startTime: '2026-01-01 00:00:00', "
            "timeZone: Etc/UTC}",
            Calendar("month"),
            [],
        ),
        ("    - duration: 28d", None, []),
        (
            "    - duration: 28d\n      isRolling: true\n      calendar: {startTime: "
            "'2026-01-01 00:00:00', timeZone: Etc/UTC}",
            None,
            ["spec.timeWindow[0].calendar"],
        ),
    ],
)
def test_is_rolling_may_be_omitted(tmp_path, window, calendar, warned):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        EXAMPLE.read_text().replace("    - duration: 28d\n      isRolling: true", window)
    )
    slos, warnings = load_specs([spec])
    assert [s.calendar for s in slos] == [calendar] * 2
    assert [w.field for w in warnings] == warned
