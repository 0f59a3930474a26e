import subprocess
from pathlib import Path

import yaml

from gpuslo.slo_engine import load_specs, rule_groups, write_outputs
from tests.conftest import need, run_gpuslo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "slos" / "chat.yaml"


def generate(tmp_path, fmt="rules"):
    slos, _ = load_specs([EXAMPLE])
    return write_outputs(slos, [str(EXAMPLE)], tmp_path / fmt, fmt)


def test_generated_rules_match_golden(tmp_path, golden):
    rules, inhibit = generate(tmp_path)
    header, _, body = rules.read_text().partition("groups:")
    golden("slo_chat.rules.yaml", "groups:" + body)
    assert "Do not edit" in header
    golden("slo_alertmanager_inhibit.yaml", inhibit.read_text())


def test_the_same_specs_give_byte_identical_files(tmp_path):
    first = [p.read_bytes() for p in generate(tmp_path / "a")]
    second = [p.read_bytes() for p in generate(tmp_path / "b")]
    assert first == second


def test_promtool_accepts_every_generated_rule_file(tmp_path):
    promtool = need("promtool")
    rules, _ = generate(tmp_path)
    out = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 75 rules found" in out.stdout


def test_prometheusrule_wraps_the_same_groups_and_promtool_accepts_them(tmp_path):
    promtool = need("promtool")
    (pr, _) = generate(tmp_path, "prometheusrule")
    doc = yaml.safe_load(pr.read_text())
    assert doc["kind"] == "PrometheusRule" and doc["apiVersion"] == "monitoring.coreos.com/v1"
    slos, _ = load_specs([EXAMPLE])
    assert doc["spec"]["groups"] == rule_groups(slos)
    plain = tmp_path / "spec-groups.yaml"
    plain.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(plain)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheusrule_names_are_valid_kubernetes_names(tmp_path):
    odd = tmp_path / "Team_SLOs.v2.yaml"
    odd.write_text(EXAMPLE.read_text())
    slos, _ = load_specs([odd])
    (pr, _) = write_outputs(slos, [str(odd)], tmp_path / "out", "prometheusrule")
    assert yaml.safe_load(pr.read_text())["metadata"]["name"] == "gpuslo-team-slos-v2"


def test_amtool_accepts_the_inhibition_rules_in_an_alertmanager_config(tmp_path):
    amtool = need("amtool")
    _, inhibit = generate(tmp_path)
    config = {
        "route": {"receiver": "hook", "group_by": ["slo", "severity"]},
        "receivers": [{"name": "hook"}],
        **yaml.safe_load(inhibit.read_text()),
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert " - 1 inhibit rules" in out.stdout


def alerts(groups, slo):
    rules = next(g for g in groups if g["name"] == f"gpuslo-slo-{slo}")["rules"]
    return {r["labels"]["tier"]: r for r in rules if "alert" in r}


def test_burn_factors_follow_the_workbook_for_30_days_and_rescale_for_28():
    slos, _ = load_specs([EXAMPLE])
    groups = rule_groups(slos)
    thirty = alerts(groups, "chat-availability")
    assert [
        thirty[t]["expr"].split(" > ")[1].split()[0]
        for t in ("page-fast", "page-slow", "ticket-fast", "ticket-slow")
    ] == ["14.4", "6", "3", "1"]
    eight = alerts(groups, "chat-e2e-premium")
    assert (
        "> 13.44" in eight["page-fast"]["expr"]
        and "> 0.933333333333" in eight["ticket-slow"]["expr"]
    )
    page = thirty["page-fast"]
    assert page["labels"] == {
        "severity": "page",
        "slo": "chat-availability",
        "service": "chat",
        "tier": "page-fast",
    }
    assert "2% of the 30d budget in 1h" in page["annotations"]["summary"]
    assert page["annotations"]["runbook_url"].startswith("https://")
    assert "* 300 >= 100" in page["expr"]  # minimum events over the 5m short window
    assert alerts(groups, "chat-ttft")["no-data"]["for"] == "10m"


def test_long_windows_are_ratios_of_sums_of_the_recorded_base_rates():
    slos, _ = load_specs([EXAMPLE])
    sli = rule_groups(slos)[0]["rules"]
    by_record = {r["record"]: r["expr"] for r in sli if "record" in r}
    one_day = by_record["gpuslo:slo_error_ratio:ratio_rate1d"]
    assert one_day == (
        'sum_over_time(gpuslo:slo_errors:rate5m{slo="chat-availability"}[23h59m59s999ms]) / '
        'sum_over_time(gpuslo:slo_requests:rate5m{slo="chat-availability"}[23h59m59s999ms])'
    )  # one day of samples recorded every interval, counting neither end twice
    raw = [e for r, e in by_record.items() if "gen_ai_server" in e]
    assert len(raw) == 2 and all("[5m]" in e for e in raw)  # raw series read once, over 5m


def test_cli_generate_writes_nothing_when_a_spec_is_invalid(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: gpuslo/v1\nkind: SLOs\nslos: []\n")
    out_dir = tmp_path / "out"
    out = run_gpuslo("slo", "generate", str(bad), "-o", str(out_dir))
    assert out.returncode == 1 and "slos: List should have at least 1 item" in out.stderr
    assert not out_dir.exists()


def test_a_shorter_base_window_names_and_feeds_every_derived_window(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        EXAMPLE.read_text().replace(
            "    min_events: 100", "    min_events: 100\n    base_window: 30s"
        )
    )
    slos, _ = load_specs([spec])
    records = {r["record"]: r["expr"] for r in rule_groups(slos)[0]["rules"] if "record" in r}
    assert "gpuslo:slo_requests:rate30s" in records and "gpuslo:slo_requests:rate5m" not in records
    assert "[30s]" in records["gpuslo:slo_requests:rate30s"]
    assert "gpuslo:slo_errors:rate30s" in records["gpuslo:slo_error_ratio:ratio_rate1h"]
