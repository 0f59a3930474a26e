import subprocess
from pathlib import Path

import pytest
import yaml

from gpuslo.slo_engine import SpecError, load_specs, rule_groups, write_outputs
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
SLOTH = ROOT / "examples" / "slos" / "sloth" / "embeddings.yaml"


def alerts(slos, name):
    groups = rule_groups(slos)
    rules = next(g for g in groups if g["name"] == f"gpuslo-slo-{name}")["rules"]
    return [r for r in rules if "alert" in r]


@pytest.mark.component
def test_a_sloth_spec_imports_unchanged_and_generates_golden_rules(tmp_path, golden):
    slos, _ = load_specs([SLOTH])
    rules, inhibit = write_outputs(slos, [str(SLOTH)], tmp_path)
    golden("sloth_embeddings.rules.yaml", rules.read_text())
    golden("sloth_inhibit.yaml", inhibit.read_text())
    promtool = need("promtool")
    out = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_sloth_alert_names_labels_and_annotations_are_kept_for_routing():
    slos, _ = load_specs([SLOTH])
    avail = next(s for s in slos if s.name == "requests-availability")
    assert avail.objective == 0.995 and avail.period == 30 * 86400
    assert "[5m]" in avail.errors_query and "{{.window}}" not in avail.errors_query
    rules = alerts(slos, "requests-availability")
    burn = [r for r in rules if r["alert"] == "EmbeddingsHighErrorRate"]
    assert len(burn) == 4
    page = next(r for r in burn if r["labels"]["tier"] == "page-fast")
    ticket = next(r for r in burn if r["labels"]["tier"] == "ticket-slow")
    assert (
        page["labels"]["severity"] == "pageteam" and page["labels"]["routing_key"] == "search-team"
    )
    assert ticket["labels"]["severity"] == "slack"
    assert ticket["labels"]["slack_channel"] == "#alerts-search"
    assert page["labels"]["owner"] == "search-team" and page["labels"]["category"] == "availability"
    assert page["annotations"]["summary"] == "High error rate on embedding requests"


def test_a_disabled_page_alert_leaves_only_tickets_and_raw_ratios_warn():
    slos, warnings = load_specs([SLOTH])
    tiers = [r["labels"]["tier"] for r in alerts(slos, "requests-latency-ratio")]
    assert tiers == ["ticket-fast", "ticket-slow", "no-data"]
    assert [w.field for w in warnings] == ["slos[1].sli.raw"]
    ratio = next(s for s in slos if s.name == "requests-latency-ratio")
    assert ratio.total_query == "vector(1)"


@pytest.mark.component
def test_the_inhibition_covers_imported_alert_names(tmp_path):
    amtool = need("amtool")
    slos, _ = load_specs([SLOTH])
    _, inhibit = write_outputs(slos, [str(SLOTH)], tmp_path)
    rule = yaml.safe_load(inhibit.read_text())["inhibit_rules"][0]
    assert 'alertname=~"EmbeddingsHighErrorRate|GpusloBudgetBurn"' in rule["source_matchers"]
    assert 'tier=~"page-fast|page-slow"' in rule["source_matchers"]
    config = tmp_path / "am.yml"
    config.write_text(
        yaml.safe_dump(
            {"route": {"receiver": "r"}, "receivers": [{"name": "r"}], "inhibit_rules": [rule]}
        )
    )
    out = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_sloth_plugins_and_unknown_fields_are_refused_with_their_place(tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text(
        'version: "prometheus/v1"\nservice: s\nslos:\n  - name: a\n    objective: 99\n'
        "    sli:\n      plugin:\n        id: sloth-common/kubernetes/apiserver/availability\n"
        "  - name: b\n    objective: 99\n    sli: {events: {error_query: x, total_query: y}}\n"
        "    alertng: {}\n"
    )
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    out = [str(p) for p in err.value.problems]
    assert len(out) == 2  # every SLO is checked: both problems at once
    assert out[0].startswith(f"{spec}:8:9: slos[0].sli.plugin: Sloth SLI plugins")
    assert out[1] == f"{spec}:12:5: slos[1].alertng: Extra inputs are not permitted"
    spec.write_text(spec.read_text().replace("    alertng: {}\n", ""))
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert str(err.value.problems[0]).startswith(
        f"{spec}:8:9: slos[0].sli.plugin: Sloth SLI plugins (sloth-common/kubernetes/apiserver/"
        "availability) only run inside Sloth"
    )


def test_the_crd_and_v1alpha_examples_import():
    folder = SLOTH.parent
    slos, warnings = load_specs([folder / "kubernetes.yaml", folder / "openslo-v1alpha.yaml"])
    assert [(s.service, s.name) for s in slos] == [
        ("rerank", "requests-availability"),
        ("tokenizer", "requests-availability"),
        ("vector-search", "vector-search-0"),
    ]
    names = [g["name"] for g in rule_groups(slos) if not g["name"].endswith("-dashboard")]
    assert names == [
        "gpuslo-slo-rerank-requests-availability",
        "gpuslo-slo-tokenizer-requests-availability",
        "gpuslo-slo-vector-search-0",
    ]
    assert dict(slos[0].labels)["tier"] == "1"
    # the rerank object's `tier` label stays on its series only; v1alpha: no alerts
    assert sorted(w.field for w in warnings) == ["kind", "spec.labels.tier"]
