"""Sloth's own valid and invalid specs (its loader tests and examples), one fixture each.

The fixtures are written here from the upstream cases (tests/slo_engine/fixtures/sloth/README.md
maps each to its case); each test says what Sloth decides and what gpuslo does."""

import subprocess
from pathlib import Path

import pytest
import yaml

from gpuslo.foundation import conventions as c
from gpuslo.foundation.yamlpos import load_documents
from gpuslo.slo_engine import SpecError, load_specs, rule_groups, write_outputs
from gpuslo.slo_engine.sloth import load_alert_windows, load_sloth
from tests.conftest import need, run_gpuslo

FIX = Path(__file__).parent / "fixtures" / "sloth"
VALID = FIX / "valid"
INVALID = FIX / "invalid"
WINDOWS = FIX / "windows"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "slos" / "sloth"

# fixture -> (service, name, objective) of every SLO it holds, in file order
ACCEPTED = {
    "v1-correct": [("checkout", "orders-ok", 0.9995), ("checkout", "orders-ratio", 0.999)],
    "v1-camel-keys": [("search", "query-availability", 0.995)],
    "v1-28d": [("ledger", "writes-ratio", 0.99)],
    "v1-getting-started": [("shop", "requests-availability", 0.999)],
    "v1-multifile": [
        ("inventory", "reads-availability", 0.999),
        ("pricing", "quotes-availability", 0.99),
    ],
    "v1-same-name-two-services": [
        ("frontend", "requests-availability", 0.999),
        ("backend", "requests-availability", 0.99),
    ],
    "v1-no-alerts": [("batch", "jobs-success", 0.95)],
    "k8s-correct": [("payments", "charges-ok", 0.9999), ("payments", "charges-ratio", 0.999)],
    "k8s-multifile": [
        ("api", "requests-availability", 0.999),
        ("gateway", "requests-availability", 0.9999),
    ],
    "k8s-list": [("queue", "publish-availability", 0.999)],
    "openslo-v1alpha-correct": [("accounts", "ratio-0", 0.98), ("accounts", "ratio-1", 0.999)],
    "openslo-v1alpha-getting-started": [("storefront", "slo-storefront-0", 0.999)],
    "openslo-v1alpha-28-days": [("accounts", "ratio-28d-0", 0.98)],
    "openslo-v1alpha-no-time-window": [("accounts", "ratio-default-0", 0.98)],
}

# fixture -> every problem, as printed after the file name
REFUSED = {
    "empty": ["1:1: file: no YAML documents"],
    "colon": ["1:1: yaml: expected <block end>, but found ':'"],
    "v1-no-version": ["2:1: apiVersion: unsupported spec format None"],
    "v1-bad-version": ["3:10: version: Input should be 'prometheus/v1'"],
    "v1-no-slos": ["4:7: slos: List should have at least 1 item after validation, not 0"],
    "v1-unknown-plugin": ["11:9: slos[0].sli.plugin: Sloth SLI plugins (unknown_plugin) only run"],
    "v1-plugin": ["13:9: slos[0].sli.plugin: Sloth SLI plugins (test_plugin) only run inside"],
    "v1-many-problems": [
        "6:16: labels.bad-label: 'bad-label' is not a valid Prometheus label name",
        "9:16: slos[0].objective: Input should be less than 100",
        "17:7: slos[1].sli: give exactly one of events, raw or plugin",
        "27:21: slos[2].sli.events.totalQuery: unknown template '{{.range}}'",
        "30:19: slos[2].alerting.labels.__name__: '__name__' is not a valid Prometheus label",
    ],
    "k8s-invalid-format": ["2:1: apiVersion: unsupported spec format None"],
    "k8s-pod": ["2:1: apiVersion: unsupported spec format 'v1'"],
    "k8s-no-slos": ["8:3: spec.slos: Field required"],
    "k8s-alert-windows-as-spec": ["3:7: kind: an AlertWindows file is not an SLO spec"],
    "openslo-v1alpha-no-version": ["2:1: apiVersion: unsupported spec format None"],
    "openslo-v1alpha-bad-version": ["2:1: apiVersion: unsupported spec format 'openslo/v99alpha'"],
    "openslo-v1alpha-no-objectives": ["11:15: spec.objectives: List should have at least 1 item"],
    "openslo-v1alpha-hour-units": [
        "23:13: spec.timeWindows[0].unit: Sloth supports time windows in days only, not 'Hour'"
    ],
    "openslo-v1alpha-two-windows": ["21:5: spec.timeWindows: Sloth supports one time window"],
    "openslo-v1alpha-no-ratio": [
        "10:5: spec.objectives[0]: Sloth supports only ratioMetrics objectives"
    ],
    "openslo-v1alpha-no-good": [
        "11:7: spec.objectives[0].ratioMetrics: ratioMetrics.good is required"
    ],
    "openslo-v1alpha-no-total": [
        "11:7: spec.objectives[0].ratioMetrics: ratioMetrics.total is required"
    ],
}


def test_every_fixture_is_in_a_table():
    assert {p.stem for p in VALID.glob("*.yaml")} == set(ACCEPTED)
    assert {p.stem for p in INVALID.glob("*.yaml")} == set(REFUSED)


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_sloth_valid_specs_are_accepted(case):
    slos, _ = load_specs([VALID / f"{case}.yaml"])
    assert [(s.service, s.name, s.objective) for s in slos] == ACCEPTED[case]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sloth_invalid_specs_are_refused_with_every_problem_in_place(case):
    path = INVALID / f"{case}.yaml"
    with pytest.raises(SpecError) as err:
        load_specs([path])
    out = [str(p) for p in err.value.problems]
    assert len(out) == len(REFUSED[case]), out
    for got, want in zip(out, REFUSED[case], strict=True):
        assert got.startswith(f"{path}:{want}"), got


def test_every_invalid_file_at_once_reports_every_problem():
    paths = sorted(INVALID.glob("*.yaml"))
    with pytest.raises(SpecError) as err:
        load_specs(paths)
    assert len(err.value.problems) == sum(len(v) for v in REFUSED.values())


def groups_of(case):
    slos, _ = load_specs([VALID / f"{case}.yaml"])
    return {g["name"]: g["rules"] for g in rule_groups(slos)}


def test_ticket_alert_and_page_alert_in_either_spelling_keep_their_labels():
    for case, page, ticket in (
        ("v1-camel-keys", "critical", "warning"),
        ("k8s-multifile", "pageteam", "slack"),
        ("v1-correct", "slack", "slack"),
    ):
        alerts = [r for rules in groups_of(case).values() for r in rules if "alert" in r]
        severities = {
            r["labels"]["tier"]: r["labels"]["severity"]
            for r in alerts
            if r["labels"]["tier"] != "no-data"
        }
        assert severities["page-fast"] == page and severities["ticket-slow"] == ticket, case


def test_non_string_label_values_are_their_text():
    checkout = groups_of("v1-correct")["gpuslo-slo-orders-ok"]
    page = next(r for r in checkout if r.get("labels", {}).get("tier") == "page-fast")
    assert page["labels"]["channel"] == "#checkout-oncall"
    slos, _ = load_specs([VALID / "v1-correct.yaml"])
    assert dict(slos[0].severity_labels)["page"] == (
        ("channel", "#checkout-oncall"),
        ("severity", "slack"),
    )  # tier: 1 is read as "1", then dropped with a warning: `tier` is gpuslo's label
    warned = load_specs([VALID / "v1-correct.yaml"])[1]
    assert any(w.field == "slos[0].alerting.labels.tier" for w in warned)
    api = load_specs([VALID / "k8s-multifile.yaml"])[0][0]
    assert dict(api.labels)["tier"] == "2"
    spec = load_documents(INVALID / "v1-plugin.yaml")[0][0]
    assert spec["slos"][0]["sli"]["plugin"]["options"]["k2"] is True  # a YAML boolean...


def test_one_slo_name_under_two_services_gets_its_own_group_and_series():
    for case, services in (
        ("v1-same-name-two-services", ("backend", "frontend")),
        ("k8s-multifile", ("api", "gateway")),
    ):
        groups = groups_of(case)
        assert sorted(g for g in groups if not g.endswith("-dashboard")) == [
            f"gpuslo-slo-{s}-requests-availability" for s in services
        ]
        for service in services:
            sel = f'{{slo="requests-availability",service="{service}"}}'
            name = f"gpuslo-slo-{service}-requests-availability"
            rules = groups[name] + groups[f"{name}-dashboard"]
            derived = [r["expr"] for r in rules if r.get("record", "").startswith("gpuslo:slo_b")]
            assert derived and all(sel in e for e in derived)
            alerts = [r for r in rules if "alert" in r]
            assert all(sel in r["expr"] for r in alerts)
            assert all(r["labels"]["service"] == service for r in alerts)


def test_the_same_name_and_service_twice_is_still_an_error(tmp_path):
    one = (VALID / "v1-no-alerts.yaml").read_text()
    (tmp_path / "a.yaml").write_text(one)
    (tmp_path / "b.yaml").write_text(one)
    with pytest.raises(SpecError) as err:
        load_specs([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert [p.message for p in err.value.problems] == [
        f"SLO 'jobs-success' already defined at {tmp_path / 'a.yaml'}:5:5"
    ]


def test_a_key_given_in_both_spellings_is_refused(tmp_path):
    spec = tmp_path / "both.yaml"
    spec.write_text(
        'version: "prometheus/v1"\nservice: s\nslos:\n  - name: a\n    objective: 99\n'
        "    sli:\n      events:\n        error_query: x\n        errorQuery: y\n"
        "        total_query: z\n"
    )
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert [str(p) for p in err.value.problems] == [
        f"{spec}:9:9: slos[0].sli.events.errorQuery: Extra inputs are not permitted"
    ]


def test_two_sloth_repositories_with_the_same_file_names_get_distinct_outputs(tmp_path):
    sources = []
    for service in ("alpha", "beta"):
        folder = tmp_path / service
        folder.mkdir()
        text = (VALID / "v1-camel-keys.yaml").read_text().replace("service: search", "")
        (folder / "slos.yaml").write_text(f"service: {service}\n{text}")
        sources.append(str(folder / "slos.yaml"))
    slos, _ = load_specs(sources)
    written = write_outputs(slos, sources, tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "alertmanager-inhibit.yaml",
        "alpha-slos.rules.yaml",
        "beta-slos.rules.yaml",
    ]
    inhibit = yaml.safe_load(written[-1].read_text())["inhibit_rules"][0]
    assert inhibit["equal"] == ["slo", "service"]  # a page of alpha's SLO mutes only alpha's


def sloth_file(case):
    path = VALID / f"{case}.yaml"
    return [(path, data, node) for data, node in load_documents(path)]


def test_custom_alert_windows_set_the_period_and_the_burn_factors():
    w28 = load_alert_windows(WINDOWS / "google-28d-legacy.yaml")
    (path, data, node), *_ = sloth_file("v1-28d")
    slos, _ = load_sloth(path, data, node, windows=w28)
    assert slos[0].period == 28 * 86400
    assert [t.name for t in slos[0].tiers] == [
        "page-fast",
        "page-slow",
        "ticket-fast",
        "ticket-slow",
    ]
    assert [round(t.factor(slos[0].period), 4) for t in slos[0].tiers] == [13.44, 5.6, 2.8, 0.9333]
    w7 = load_alert_windows(WINDOWS / "custom-7d.yaml")
    (path, data, node), *_ = sloth_file("v1-camel-keys")
    slo = load_sloth(path, data, node, windows=w7)[0][0]
    groups = rule_groups([slo])
    rules = groups[0]["rules"]
    # The period ratio no alert reads may sit in a later group of the SLO (the group limit).
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    assert "gpuslo:slo_error_ratio:ratio_rate7d" in recorded
    alerts = [r for r in rules if "alert" in r and " > " in r["expr"]]
    factors = {r["labels"]["tier"]: r["expr"].split(" > ")[1].split("\n")[0] for r in alerts}
    assert factors == {
        "page-fast": "13.44",
        "page-slow": "3.5",
        "ticket-fast": "1.4",
        "ticket-slow": "0.98",
    }


def test_the_default_windows_are_sloths_google_30d():
    (path, data, node), *_ = sloth_file("v1-camel-keys")
    slo = load_sloth(path, data, node)[0][0]
    assert slo.period == 30 * 86400
    assert [t.factor(slo.period) for t in slo.tiers] == pytest.approx([14.4, 6, 3, 1])


def test_bad_alert_windows_are_located():
    path = WINDOWS / "bad.yaml"
    with pytest.raises(SpecError) as err:
        load_alert_windows(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:7:49: spec.page.quick.shortWindow: must be shorter than longWindow",
        f"{path}:11:49: spec.ticket.slow.shortWindow: must be shorter than longWindow",
    ]
    bad = WINDOWS.parent / "invalid" / "empty.yaml"
    with pytest.raises(SpecError):
        load_alert_windows(bad)


def test_openslo_v1alpha_periods_are_sloths():
    periods = {
        case: load_specs([VALID / f"{case}.yaml"])[0][0].period / 86400
        for case in ("openslo-v1alpha-28-days", "openslo-v1alpha-no-time-window")
    }
    assert periods == {"openslo-v1alpha-28-days": 28, "openslo-v1alpha-no-time-window": 30}
    (path, data, node), *_ = sloth_file("openslo-v1alpha-no-time-window")
    seven = load_alert_windows(WINDOWS / "custom-7d.yaml")
    assert load_sloth(path, data, node, windows=seven)[0][0].period == 7 * 86400
    spec = VALID / "openslo-v1alpha-28-days.yaml"
    data = yaml.safe_load(spec.read_text().replace("count: 28", "count: 14"))
    with pytest.raises(SpecError) as err:
        load_sloth(spec, data, load_documents(spec)[0][1])
    assert "no alert windows for a 14-day period" in str(err.value)


def test_openslo_v1alpha_is_read_as_sloth_reads_it():
    slos, warnings = load_specs([VALID / "openslo-v1alpha-correct.yaml"])
    first = slos[0]
    good = 'sum(rate(probe_total{outcome="good",service="accounts"}[5m]))'
    total = 'sum(rate(probe_total{service="accounts"}[5m]))'
    assert first.total_query == total
    assert first.errors_query == f"({total}) - ({good})"
    assert first.description == "Good over total events of a test service"
    assert first.disabled_severities == {"page", "ticket"}  # Sloth alerts on none
    assert {w.field for w in warnings[:2]} == {"kind", "spec.budgetingMethod"}
    alerts = [r["alert"] for g in rule_groups(slos) for r in g["rules"] if "alert" in r]
    assert alerts == [c.ALERT_SLI_NO_DATA] * 2


@pytest.mark.component
def test_rules_of_every_sloth_example_pass_promtool(tmp_path, golden):
    promtool = need("promtool")
    paths = sorted(VALID.glob("*.yaml"))
    slos, _ = load_specs(paths)
    written = write_outputs(slos, [str(p) for p in paths], tmp_path)
    rules = [p for p in written if p.name.endswith(".rules.yaml")]
    assert len(rules) == len(paths)
    for path in sorted(WINDOWS.glob("custom-7d.yaml")):
        (src, data, node), *_ = sloth_file("v1-correct")
        custom, _ = load_sloth(src, data, node, windows=load_alert_windows(path))
        extra = tmp_path / "custom" / "v1-correct-7d.rules.yaml"
        extra.parent.mkdir()
        extra.write_text(yaml.safe_dump({"groups": rule_groups(custom)}))
        rules.append(extra)
    shipped = sorted(EXAMPLES.glob("*.yaml"))  # examples/slos/sloth/, generated together
    ex_slos, _ = load_specs(shipped)
    ex_written = write_outputs(ex_slos, [str(p) for p in shipped], tmp_path / "examples")
    rules += [p for p in ex_written if p.name.endswith(".rules.yaml")]
    assert len(rules) == len(paths) + 1 + len(shipped)
    out = subprocess.run(
        [promtool, "check", "rules", *map(str, rules)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    by_name = {p.name: p for p in rules}
    golden("sloth_k8s_multifile.rules.yaml", by_name["k8s-multifile.rules.yaml"].read_text())
    golden(
        "sloth_openslo_v1alpha.rules.yaml",
        by_name["openslo-v1alpha-getting-started.rules.yaml"].read_text(),
    )


def test_the_sloth_windows_flag_sets_the_period_of_generated_rules(tmp_path):
    spec = FIX / "valid" / "v1-correct.yaml"
    default = run_gpuslo("slo", "generate", str(spec), "-o", str(tmp_path / "a"))
    custom = run_gpuslo(
        "slo",
        "generate",
        str(spec),
        "--sloth-windows",
        str(WINDOWS / "custom-7d.yaml"),
        "-o",
        str(tmp_path / "b"),
    )
    assert default.returncode == 0 and custom.returncode == 0, custom.stderr
    a = (tmp_path / "a" / f"{spec.stem}.rules.yaml").read_text()
    b = (tmp_path / "b" / f"{spec.stem}.rules.yaml").read_text()
    assert "ratio_rate30d" in a and "ratio_rate7d" in b and "ratio_rate30d" not in b
    bad = run_gpuslo("slo", "validate", str(spec), "--sloth-windows", str(WINDOWS / "bad.yaml"))
    assert bad.returncode == 1 and "bad.yaml:" in bad.stderr and "Traceback" not in bad.stderr
