"""Rule targets and grouping: every target's files against the ruler's documented format and
evaluation semantics, the group size limit, and the ordering rule (an alert reads only what
its own group recorded earlier in the same evaluation).

Mimir, Thanos Ruler and vmalert cannot run here, so their files are checked against what
their documentation specifies (named per test); Prometheus is checked with promtool here and
with a real Prometheus in test_slo_rule_ordering.py.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from gpuslo.foundation.durations import parse_duration
from gpuslo.slo_engine import load_specs, rule_groups, write_outputs
from gpuslo.slo_engine.rules import Layout, LayoutError
from gpuslo.slo_engine.targets import (
    MIMIR_MAX_RULES_PER_GROUP,
    TARGETS,
    layout_for,
    ordering_problems,
)
from tests.conftest import need, run_gpuslo
from tests.slo_engine.test_slo_rules import EXAMPLE

# Group fields each ruler documents (the rule fields are Prometheus's in all of them).
PROMETHEUS_GROUP_KEYS = {"name", "interval", "rules", "limit", "query_offset", "labels"}
# mimirtool rules load: a file holds `namespace:` and `groups:`; a group may also carry
# source_tenants (federated rules) and evaluation_delay / query_offset.
MIMIR_GROUP_KEYS = PROMETHEUS_GROUP_KEYS | {"source_tenants", "evaluation_delay"}
# Thanos Ruler: Prometheus groups plus partial_response_strategy (warn | abort).
THANOS_GROUP_KEYS = PROMETHEUS_GROUP_KEYS | {"partial_response_strategy"}
# vmalert groups: name, interval, eval_offset, limit, type, concurrency, labels, params,
# headers, notifier_headers, eval_delay, eval_alignment, debug, rules.
VMALERT_GROUP_KEYS = {
    "name", "interval", "eval_offset", "limit", "type", "concurrency", "labels", "params",
    "headers", "notifier_headers", "eval_delay", "eval_alignment", "debug", "rules",
}  # fmt: skip


def many_slos(tmp_path, n: int):
    spec = {
        "apiVersion": "gpuslo/v1",
        "kind": "SLOs",
        "defaults": {"service": "fleet", "window": "30d"},
        "slos": [
            {
                "name": f"model-{i:04d}",
                "objective": 99.9,
                "selector": {"model": f"m{i}"},
                "availability": {},
            }
            for i in range(n)
        ],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_specs([path])[0], path


def generated(tmp_path, target, **layout):
    slos, _ = load_specs([EXAMPLE])
    out = write_outputs(slos, [str(EXAMPLE)], tmp_path / target, target, Layout(**layout))
    return yaml.safe_load(out[0].read_text()), out[0]


def groups_of(doc):
    return doc["spec"]["groups"] if "spec" in doc else doc["groups"]


@pytest.mark.parametrize("target", TARGETS)
def test_default_output_fits_mimirs_default_group_size_for_every_target(tmp_path, target):
    doc, _ = generated(tmp_path, target)
    sizes = [len(g["rules"]) for g in groups_of(doc)]
    assert max(sizes) <= MIMIR_MAX_RULES_PER_GROUP, sizes
    every = {r.get("record") or r.get("alert") for g in groups_of(doc) for r in g["rules"]}
    assert {
        "GpusloBudgetBurn",
        "GpusloSLINoData",
        "gpuslo:slo_error_budget_remaining:ratio",
    } <= every


@pytest.mark.parametrize("target", ["prometheus", "prometheusrule", "mimir", "thanos"])
def test_alerts_read_only_recordings_made_earlier_in_their_own_group(tmp_path, target):
    doc, _ = generated(tmp_path, target)
    assert ordering_problems(groups_of(doc), chained=True) == []


def test_vmalert_rules_never_read_their_own_groups_recordings(tmp_path):
    """vmalert docs (Limitations): recording results are persisted asynchronously, so a rule
    must not rely on a recording of its own group."""
    doc, _ = generated(tmp_path, "vmalert")
    assert ordering_problems(groups_of(doc), chained=False) == []
    # What it gives up, stated: alerts read base rates from another group (one interval old).
    lagged = ordering_problems(groups_of(doc), chained=True)
    assert lagged and all("of another group" in p for p in lagged)


def test_the_ordering_check_catches_an_alert_moved_before_its_recordings(tmp_path):
    slos, _ = load_specs([EXAMPLE])
    groups = rule_groups(slos)
    rules = groups[0]["rules"]
    alert = next(i for i, r in enumerate(rules) if "alert" in r)
    moved = [{**groups[0], "rules": [rules[alert], *rules[:alert], *rules[alert + 1 :]]}]
    assert any("recorded after it" in p for p in ordering_problems(moved, chained=True))
    split = [
        {**groups[0], "name": "recordings", "rules": [r for r in rules if "record" in r]},
        {**groups[0], "name": "alerts", "rules": [r for r in rules if "alert" in r]},
    ]
    assert any("of another group" in p for p in ordering_problems(split, chained=True))
    assert ordering_problems(split, chained=False)  # the recordings chain within their group


@pytest.mark.parametrize("limit", [19, 15, 13])
def test_a_lower_group_limit_moves_what_no_alert_reads_and_keeps_the_ordering(tmp_path, limit):
    slos, _ = load_specs([EXAMPLE])
    groups = rule_groups(slos, layout=Layout(max_rules_per_group=limit))
    assert max(len(g["rules"]) for g in groups) <= limit
    assert ordering_problems(groups, chained=True) == []
    records = [r["record"] for g in groups for r in g["rules"] if "record" in r]
    assert len(records) == len(set(zip(records, range(len(records)), strict=True)))
    full = rule_groups(slos)
    key = lambda g: sorted(r.get("record") or r["alert"] for r in g["rules"])  # noqa: E731
    assert sorted(x for g in groups for x in key(g)) == sorted(x for g in full for x in key(g))


def test_a_limit_below_what_the_alerts_need_is_one_clear_error(tmp_path):
    slos, _ = load_specs([EXAMPLE])
    with pytest.raises(LayoutError, match="need 13 rules in one group, more than the limit of 6"):
        rule_groups(slos, layout=Layout(max_rules_per_group=6))
    out = run_gpuslo(
        "slo", "generate", str(EXAMPLE), "-o", str(tmp_path / "o"), "--max-rules-per-group", "6"
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith("(raise --max-rules-per-group)")
    assert not (tmp_path / "o").exists()
    bad = run_gpuslo("slo", "generate", str(EXAMPLE), "-o", str(tmp_path / "b"), "--interval", "7m")
    assert bad.returncode == 2 and "must divide one hour" in bad.stderr


def test_every_group_carries_the_interval_the_hourly_sums_assume(tmp_path):
    doc, _ = generated(tmp_path, "prometheus", interval=30)
    assert {g["interval"] for g in doc["groups"]} == {"30s"}
    rules = doc["groups"][0]["rules"]
    hour = next(r for r in rules if r["record"].endswith("_sum_hour"))
    assert "% 3600 < 30" in hour["expr"] and "offset -29s999ms)" in hour["expr"]
    block = next(r for r in rules if r["record"].endswith("_sum_5m_block"))
    assert "% 300 < 30" in block["expr"] and ":30s] offset -29s999ms)" in block["expr"]


def test_mimir_files_are_namespaces_mimirtool_rules_load_accepts(tmp_path):
    """mimirtool docs (rules load): each file holds `namespace:` and `groups:`, group names
    unique within the namespace, groups in Prometheus's format."""
    doc, path = generated(tmp_path, "mimir")
    assert set(doc) == {"namespace", "groups"} and doc["namespace"] == "gpuslo-chat"
    names = [g["name"] for g in doc["groups"]]
    assert len(names) == len(set(names))
    assert all(set(g) <= MIMIR_GROUP_KEYS for g in doc["groups"])
    assert path.name == "chat.mimir.yaml"


def test_mimir_summary_names_the_limits_to_raise_for_a_fleet(tmp_path):
    _, spec = many_slos(tmp_path, 40)
    out = run_gpuslo("slo", "generate", str(spec), "-o", str(tmp_path / "m"), "--target", "mimir")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load((tmp_path / "m" / "fleet.mimir.yaml").read_text())
    groups, biggest = len(doc["groups"]), max(len(g["rules"]) for g in doc["groups"])
    assert groups == 80 and biggest <= 20
    assert f"ruler_max_rule_groups_per_tenant >= {groups}" in out.stderr
    assert f"ruler_max_rules_per_rule_group >= {biggest}" in out.stderr
    assert "above Mimir's defaults: groups (default 70)" in out.stderr


def test_thanos_groups_abort_on_partial_responses(tmp_path):
    """Thanos Ruler docs: a group may set partial_response_strategy to warn or abort."""
    doc, _ = generated(tmp_path, "thanos")
    assert {g["partial_response_strategy"] for g in doc["groups"]} == {"abort"}
    assert all(set(g) <= THANOS_GROUP_KEYS for g in doc["groups"])


def test_vmalert_groups_run_their_rules_one_at_a_time(tmp_path):
    """vmalert docs (Groups): concurrency 1 evaluates a group's rules sequentially."""
    doc, _ = generated(tmp_path, "vmalert")
    assert all(set(g) <= VMALERT_GROUP_KEYS for g in doc["groups"])
    assert {g["concurrency"] for g in doc["groups"]} == {1}
    assert all(parse_duration(g["interval"]) == 60 for g in doc["groups"])
    assert not layout_for("vmalert").tiled


@pytest.mark.component
@pytest.mark.parametrize("target", ["prometheus", "prometheusrule", "mimir", "thanos", "vmalert"])
def test_promtool_accepts_every_targets_groups(tmp_path, target):
    promtool = need("promtool")
    doc, _ = generated(tmp_path, target)
    # Ruler-specific group fields are not Prometheus's; the rules themselves must be.
    extra = {"partial_response_strategy", "concurrency"}
    groups = [{k: v for k, v in g.items() if k not in extra} for g in groups_of(doc)]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"groups": groups}))
    out = subprocess.run(
        [promtool, "check", "rules", str(plain)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.component
def test_two_thousand_slos_generate_within_limits_and_pass_promtool(tmp_path):
    promtool = need("promtool")
    slos, spec = many_slos(tmp_path, 2000)
    (rules, _) = write_outputs(slos, [str(spec)], tmp_path / "out")
    doc = yaml.safe_load(rules.read_text())
    assert len(doc["groups"]) == 4000
    assert max(len(g["rules"]) for g in doc["groups"]) <= 20
    out = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"SUCCESS: {sum(len(g['rules']) for g in doc['groups'])} rules found" in out.stdout


def alerts_of(doc):
    return [r for g in groups_of(doc) for r in g["rules"] if "alert" in r]


def test_incident_url_links_every_burn_alert_to_its_incident_page(tmp_path):
    """``--incident-url``: each burn-rate alert's annotation opens the hook's newest incident
    of that SLO and tier (docs/incidents.md); without it, no link; vmalert keeps it too."""
    url = "https://hook.example.org/"
    out = tmp_path / "o"
    done = run_gpuslo("slo", "generate", str(EXAMPLE), "-o", str(out), "--incident-url", url)
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load((out / "chat.rules.yaml").read_text())
    burns = [r for r in alerts_of(doc) if r["labels"]["tier"] != "no-data"]
    assert burns
    for rule in burns:
        link = rule["annotations"]["incident_url"]
        labels = rule["labels"]
        assert link.startswith("https://hook.example.org/incidents/open?"), link
        assert f"slo={labels['slo']}" in link and f"tier={labels['tier']}" in link
    plain, _ = generated(tmp_path, "prometheus")
    assert all("incident_url" not in r["annotations"] for r in alerts_of(plain))
    vm, _ = generated(tmp_path, "vmalert", incident_url=url)
    assert all(
        "incident_url" in r["annotations"]
        for r in alerts_of(vm)
        if r["labels"]["tier"] != "no-data"
    )
