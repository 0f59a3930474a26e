"""OpenSLO v1 conformance: one fixture per document of OpenSLO's own schema tests
(``schema-test/spec-files/`` and ``schema-test/schema_test.go`` in github.com/OpenSLO/OpenSLO),
each written here from the spec (the upstream files are not copied). ``slo validate`` must
judge each as upstream does: valid documents pass (with warnings where gpuslo cannot make
rules of them), invalid ones fail with the field at fault.

The same table is in docs/slo.md ("Conformance")."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuslo.cli.main import main
from gpuslo.slo_engine import SpecError, load_specs
from gpuslo.slo_engine.model import Calendar
from tests.conftest import run_gpuslo

FIXTURES = Path(__file__).parent / "fixtures" / "openslo"
UPSTREAM = "schema-test/spec-files/"

# (fixture, upstream case, verdict, the field at fault for an invalid case / what gpuslo says)
CASES: list[tuple[str, str, str, str]] = [
    ("invalid-apiversion.yaml", "v1/invalid-apiversion.yaml", "invalid", "kind"),
    ("alert-condition/alert-condition.yaml", "", "valid", "unused AlertCondition"),
    ("alert-condition/alert-condition-no-description.yaml", "", "valid", "unused"),
    ("alert-condition/alert-condition-no-condition.yaml", "", "invalid", "spec.condition"),
    ("alert-condition/alert-condition-no-sev.yaml", "", "invalid", "spec.severity"),
    ("alert-notification-target/alert-notification-target.yaml", "", "valid", ""),
    ("alert-notification-target/alert-notification-target-no-description.yaml", "", "valid", ""),
    (
        "alert-notification-target/alert-notification-target-no-target.yaml",
        "",
        "invalid",
        "spec.target",
    ),
    ("alert-policy/alert-policy.yaml", "", "valid", "unused AlertPolicy"),
    ("alert-policy/alert-policy-inline-cond.yaml", "", "valid", "unused AlertPolicy"),
    ("alert-policy/alert-policy-many-notificationref.yaml", "", "valid", "unused AlertPolicy"),
    ("alert-policy/alert-policy-malformed-cond.yaml", "", "invalid", "spec.conditions[0]"),
    (
        "alert-policy/alert-policy-malformed-targetref.yaml",
        "",
        "invalid",
        "spec.notificationTargets[0]",
    ),
    ("alert-policy/alert-policy-many-cond.yaml", "", "invalid", "spec.conditions"),
    ("alert-policy/alert-policy-no-cond.yaml", "", "invalid", "spec.conditions"),
    ("alert-policy/alert-policy-no-notification.yaml", "", "invalid", "spec.notificationTargets"),
    ("data-source/data-source.yaml", "", "valid", "Datadog: no rules"),
    ("service/service.yaml", "", "valid", "unused Service"),
    ("service/service-no-displayname.yaml", "", "valid", "unused Service"),
    ("service/service-long-description.yaml", "", "invalid", "spec.description"),
    *(
        (f"sli/sli-{d}-{m}.yaml", "", "valid", "unused SLI")
        for d in ("description", "no-description")
        for m in (
            "ratio-bad-inline-metricsource",
            "ratio-bad-metricsourceref",
            "ratio-good-inline-metricsource",
            "ratio-good-metricsourceref",
            "threshold-inline-metricsource",
            "threshold-metricsourceref",
        )
    ),
    ("sli/sli-ratio-good-and-bad.yaml", "", "invalid", "spec.ratioMetric"),
    *(
        (f"slo/slo-{i}-{w}-{a}.yaml", "", "valid", "SLI/DataSource/AlertPolicy not given")
        for i in ("indicatorref", "no-indicatorref")
        for w in ("calendar", "rolling")
        for a in ("alerts", "no-alerts")
    ),
]


def upstream(case: tuple[str, str, str, str]) -> str:
    return UPSTREAM + (case[1] or "v1/" + case[0])


def test_every_fixture_is_a_case_and_every_case_has_a_fixture():
    files = sorted(
        str(p.relative_to(FIXTURES))
        for p in FIXTURES.rglob("*.yaml")
        if not p.is_relative_to(FIXTURES / "examples")
    )
    assert sorted(c[0] for c in CASES) == files
    assert len(CASES) == 41


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_validate_judges_each_upstream_schema_case_as_upstream_does(case):
    fixture, _, verdict, why = case
    path = FIXTURES / fixture
    if verdict == "valid":
        _, warnings = load_specs([path], unsupported="warn")
        assert all(w.severity == "warning" for w in warnings)
        # A valid document gpuslo makes no rules of says so, at its place.
        if "unused" in why or "not given" in why or "Datadog" in why:
            assert warnings and all(w.path == str(path) and w.line >= 1 for w in warnings)
    else:
        with pytest.raises(SpecError) as err:
            load_specs([path], unsupported="warn")
        fields = [p.field for p in err.value.problems]
        assert why in fields, [str(p) for p in err.value.problems]
        assert all(str(p).startswith(f"{path}:") for p in err.value.problems)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_cli_exit_codes_follow_the_verdicts(case, capsys):
    fixture, _, verdict, _ = case
    path = str(FIXTURES / fixture)
    code = main(["slo", "validate", path])
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert code == (0 if verdict == "valid" else 1), lines
    problems = [ln for ln in lines if ln.startswith(f"{path}:")]
    if verdict == "invalid":
        # one line per problem, file:line:col: field: message
        assert problems and all(ln.split(":")[1].isdigit() for ln in problems), lines
    elif problems:  # warnings only: --strict turns them into a failure
        assert all(": warning: " in ln for ln in problems)
        assert main(["slo", "validate", "--strict", path]) == 1


def test_the_cli_runs_without_a_traceback():
    bad = run_gpuslo("slo", "validate", str(FIXTURES / "alert-policy/alert-policy-many-cond.yaml"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == [
        f"{FIXTURES / 'alert-policy/alert-policy-many-cond.yaml'}:12:5: spec.conditions: "
        "List should have at most 1 item after validation, not 2"
    ]


EXAMPLES = FIXTURES / "examples"
# OpenSLO's own example files (pkg/openslo/<version>/examples/*.yaml, each a YAML list of
# documents), one fixture each, written here with the same kinds and fields.
EXAMPLE_CASES = [
    (f"{version}/{name}.yaml", f"pkg/openslo/{version}/examples/{name}.yaml")
    for version, names in (
        (
            "v1",
            (
                "alert_conditions",
                "alert_notification_targets",
                "alert_policies",
                "data_sources",
                "services",
                "slis",
                "slos",
            ),
        ),
        ("v2alpha", ("data_sources", "slis", "slos")),
    )
    for name in names
]


@pytest.mark.parametrize("case", EXAMPLE_CASES, ids=[c[0] for c in EXAMPLE_CASES])
def test_each_upstream_example_file_is_valid(case):
    path = EXAMPLES / case[0]
    _, warnings = load_specs([path], unsupported="warn")
    assert all(w.severity == "warning" and w.path == str(path) for w in warnings)
    assert main(["slo", "validate", str(path)]) == 0


@pytest.mark.parametrize("version", ["v1", "v2alpha"])
def test_the_upstream_examples_together_give_their_slo_and_calendar(version):
    files = sorted((EXAMPLES / version).glob("*.yaml"))
    assert sorted(str(p.relative_to(EXAMPLES)) for p in files) == sorted(
        c[0] for c in EXAMPLE_CASES if c[0].startswith(version + "/")
    )
    (slo,), _ = load_specs(files, unsupported="warn")
    assert slo.name == "chat-availability" and slo.objective == 0.995
    assert slo.calendar == Calendar("week", 1, "2022-01-01T12:00:00", "America/New_York")
    assert slo.period == 7 * 86400 and slo.unit == "time slices"


def test_upstream_examples_gpuslo_cannot_make_rules_of_fail_generate(tmp_path, capsys):
    slis = EXAMPLES / "v1" / "slis.yaml"
    slo = tmp_path / "slo.yaml"
    slo.write_text(
        (EXAMPLES / "v1" / "slos.yaml")
        .read_text()
        .split("    indicator:")[0]
        .replace(
            "    description: Chat", "    indicatorRef: chat-availability\n    description: Chat"
        )
        + "    timeWindow:\n      - duration: 1w\n        isRolling: true\n"
        "    budgetingMethod: Occurrences\n    objectives:\n      - target: 0.995\n"
    )
    sources = EXAMPLES / "v1" / "data_sources.yaml"
    files = [str(slis), str(sources), str(slo)]
    assert main(["slo", "validate", *files]) == 0
    assert main(["slo", "generate", *files, "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert (
        f"{slis}:16:17: spec.ratioMetric.good.metricSource.type: metric source type 'Datadog' "
        "cannot become Prometheus rules; use Prometheus"
    ) in err.splitlines()


def test_the_docs_table_lists_every_case_with_its_verdict():
    text = (Path(__file__).resolve().parents[2] / "docs" / "slo.md").read_text()
    for case in CASES:
        assert f"| `{case[0]}` | `{upstream(case)}` | {case[2]} |" in text, case[0]
    for example in EXAMPLE_CASES:
        assert f"| `{example[0]}` | `{example[1]}` |" in text, example[0]


@pytest.mark.component
@pytest.mark.parametrize("version", ["v1", "v2alpha"])
def test_rules_from_the_upstream_example_slos_pass_promtool(tmp_path, version):
    import subprocess

    from gpuslo.slo_engine import write_outputs
    from tests.conftest import need

    files = [EXAMPLES / version / "slos.yaml", EXAMPLES / version / "data_sources.yaml"]
    slos, _ = load_specs([p for p in files if p.exists()])
    rules, _ = write_outputs(slos, [str(files[0])], tmp_path)
    # OpenSLO's example counters are aggregated (sum(x_total{...})): rated by a subquery.
    assert "sum(rate((sum(gen_ai_server_requests_total{" in rules.read_text()
    out = subprocess.run(
        [need("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
