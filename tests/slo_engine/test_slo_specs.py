from pathlib import Path

import pytest

from gpuslo.slo_engine import SpecError, load_specs, load_tiers
from tests.conftest import run_gpuslo

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "slos" / "chat.yaml"


def spec(tmp_path, body, name="s.yaml"):
    path = tmp_path / name
    path.write_text(body)
    return path


HEAD = "apiVersion: gpuslo/v1\nkind: SLOs\ndefaults: {service: chat}\nslos:\n"


def problems(*paths):
    with pytest.raises(SpecError) as err:
        load_specs(paths)
    return [str(p) for p in err.value.problems]


def test_the_example_specs_load_with_objectives_as_ratios_and_periods_in_seconds():
    slos, warnings = load_specs([EXAMPLE])
    by_name = {s.name: s for s in slos}
    assert by_name["chat-availability"].objective == 0.999
    assert by_name["chat-e2e-premium"].period == 28 * 86400
    assert by_name["chat-e2e-premium"].labels == (("team", "inference"),)
    assert 'le=~"4|4.0"' in by_name["chat-e2e-premium"].errors_query
    assert 'le="0.5"' in by_name["chat-ttft"].errors_query
    assert 'outcome=~"error|rejected"' in by_name["chat-availability"].errors_query
    assert warnings == []


def test_a_bad_value_is_reported_at_its_line_and_column(tmp_path):
    p = spec(tmp_path, HEAD + "  - name: a\n    objective: 120\n    availability: {}\n")
    assert problems(p) == [f"{p}:6:16: slos[0].objective: Input should be less than 100"]


def test_an_unknown_field_is_reported_at_its_key_never_ignored(tmp_path):
    p = spec(
        tmp_path, HEAD + "  - name: a\n    objective: 99\n    objectve: 98\n    availability: {}\n"
    )
    assert problems(p) == [f"{p}:7:5: slos[0].objectve: Extra inputs are not permitted"]


def test_every_problem_in_every_file_is_reported_at_once(tmp_path):
    a = spec(
        tmp_path,
        HEAD + "  - name: a\n    objective: 99\n    window: 30 days\n    availability: {}\n",
        "a.yaml",
    )
    b = spec(
        tmp_path,
        HEAD + "  - name: b\n    objective: 99\n    selector: {region: eu}\n"
        "    latency: {metric: ttft, threshold: 500ms}\n    availability: {}\n",
        "b.yaml",
    )
    out = problems(a, b)
    assert len(out) == 3
    assert out[0].startswith(f"{a}:7:13: slos[0].window: not a duration like 5m")
    assert any(x.startswith(f"{b}:7:15: slos[0].selector: unknown label 'region'") for x in out)
    assert any(x.startswith(f"{b}:5:5: slos[0]: give exactly one SLI") for x in out)


def test_the_same_slo_name_in_two_files_is_an_error(tmp_path):
    body = HEAD + "  - name: dup\n    objective: 99\n    availability: {}\n"
    a, b = spec(tmp_path, body, "a.yaml"), spec(tmp_path, body, "b.yaml")
    out = problems(a, b)
    assert out == [f"{b}:5:5: name: SLO 'dup' already defined at {a}:5:5"]


def test_yaml_syntax_errors_and_unknown_formats_are_located(tmp_path):
    broken = spec(tmp_path, HEAD + "  - name: [a\n", "broken.yaml")
    other = spec(tmp_path, "apiVersion: v9\nkind: X\n", "other.yaml")
    out = problems(broken, other)
    assert out[0].startswith(f"{broken}:6:1: yaml:")
    assert out[1] == (
        f"{other}:1:1: apiVersion: unsupported spec format 'v9'; expected gpuslo/v1, "
        "openslo/v1 or Sloth prometheus/v1"
    )


def test_a_missing_file_is_one_clear_problem(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert problems(missing) == [f"{missing}:1:1: file: No such file or directory"]


def test_a_cost_sli_is_time_slices_over_the_cost_rules_and_needs_a_model(tmp_path):
    p = spec(tmp_path, HEAD + "  - name: c\n    objective: 99\n    cost: {per_million_tokens: 2}\n")
    assert problems(p) == [f"{p}:5:5: slos[0].selector: a cost SLO needs selector.model"]
    p = spec(
        tmp_path,
        HEAD
        + "  - name: c\n    objective: 95\n    selector: {model: llama}\n"
        + "    cost: {dollars_per_hour: 40}\n",
    )
    (slo,) = load_specs([p])[0]
    assert slo.kind == "cost" and slo.unit == "time slices"
    assert slo.errors_query == (
        '(max(gpuslo:model_cost:dollars_per_second{model="llama"}) * 3600) > bool 40'
    )
    assert slo.total_query == 'count(gpuslo:model_cost:dollars_per_second{model="llama"})'
    both = spec(
        tmp_path,
        HEAD
        + "  - name: c\n    objective: 95\n    selector: {model: llama}\n"
        + "    cost: {dollars_per_hour: 40, per_million_tokens: 2}\n",
    )
    assert "give exactly one of" in problems(both)[0]


def test_lint_warns_about_tiers_that_can_never_fire_and_budgets_gone_in_seconds(tmp_path):
    p = spec(
        tmp_path,
        HEAD + "  - name: loose\n    objective: 80\n    availability: {}\n"
        "  - name: tight\n    objective: 99.9999\n    window: 1d\n    availability: {}\n",
    )
    _, warnings = load_specs([p])
    text = [str(w) for w in warnings]
    # 80% objective: a total outage burns at 5x, so the 14.4x and 6x page tiers cannot fire.
    assert sum("loose" in s or ":5:5:" in s for s in text if "can never fire" in s) == 2
    assert any("tier page-fast can never fire" in s for s in text)
    assert any(
        s.startswith(f"{p}:8:5: warning: objective: a full outage spends the whole budget in 0 s")
        for s in text
    )


def test_windows_files_are_validated_like_specs(tmp_path):
    w = spec(
        tmp_path,
        "version: 1\ntiers:\n  - name: fast\n    severity: page\n"
        "    budget_fraction: 0.02\n    long_window: 5m\n    short_window: 1h\n",
        "w.yaml",
    )
    with pytest.raises(SpecError) as err:
        load_tiers(w)
    assert [str(p) for p in err.value.problems] == [
        f"{w}:7:19: tiers[0].short_window: must be shorter than long_window"
    ]


def test_cli_validate_prints_problems_one_per_line_and_exits_1(tmp_path):
    p = spec(tmp_path, HEAD + "  - name: a\n    objective: 120\n    availability: {}\n")
    out = run_gpuslo("slo", "validate", str(p))
    assert out.returncode == 1
    assert out.stderr.strip() == f"{p}:6:16: slos[0].objective: Input should be less than 100"
    ok = run_gpuslo("slo", "validate", str(EXAMPLE))
    assert ok.returncode == 0 and "3 SLO(s) valid" in ok.stdout


def test_range_selectors_hold_a_whole_number_of_intervals():
    from gpuslo.foundation.durations import format_range, parse_duration

    assert format_range(3600) == "59m59s999ms"
    assert format_range(30 * 86400) == "29d23h59m59s999ms"
    assert parse_duration(format_range(300)) == 300 - 0.001
