"""``gpuslo plan``: the report files and their verdict, and bad input as one line per problem
(file:line:col: field: message) with a non-zero exit, no traceback."""

from __future__ import annotations

import argparse
import importlib
import json

import pytest
import yaml

from gpuslo.cli import plan_cmd
from tests.simulator.test_plan import PROFILES, SCENARIO

cli_main = importlib.import_module("gpuslo.cli.main")

SLOS = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {window: 30d}
slos:
  - name: assist-ttft
    service: assist
    objective: 99
    selector: {model: llama-3-8b}
    latency: {metric: ttft, threshold: 1s}
  - name: assist-availability
    service: assist
    objective: 99.9
    selector: {model: llama-3-8b}
    availability: {}
"""


@pytest.fixture
def gpuslo(monkeypatch):
    """``gpuslo`` with ``plan`` registered (the lead registers it in main.py)."""
    build = cli_main.build_parser

    def with_plan() -> argparse.ArgumentParser:
        parser = build()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and "plan" not in action.choices:
                plan_cmd.add_parser(action)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", with_plan)
    return cli_main.main


@pytest.fixture
def inputs(tmp_path):
    body = yaml.safe_load(yaml.safe_dump(SCENARIO))
    body["duration"] = "12h"
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(body))
    (tmp_path / "pools.yaml").write_text(yaml.safe_dump(PROFILES, sort_keys=False))
    (tmp_path / "slos.yaml").write_text(SLOS)
    return tmp_path


def args(d, *extra):
    return [
        "plan",
        "--twin",
        str(d / "twin.yaml"),
        "--pools",
        str(d / "pools.yaml"),
        "--slo",
        str(d / "slos.yaml"),
        "-o",
        str(d / "report"),
        *extra,
    ]


def test_plan_writes_the_report_and_the_verdict(gpuslo, inputs, capsys):
    assert gpuslo(args(inputs, "--format", "json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert {m["policy"] for m in out["measured"]} == {"plan", "static", "reactive"}
    body = json.loads((inputs / "report" / "plan.json").read_text())
    assert body["verdict"] == out["verdict"]
    assert body["plans"][0]["pool"] == "llama"
    html = (inputs / "report" / "index.html").read_text()
    assert "Measured in the twin" in html and "replicas-llama.png" in html
    assert (inputs / "report" / "replicas-llama.png").stat().st_size > 1000


def test_bad_pool_profile_is_one_line_per_problem(gpuslo, inputs, capsys):
    body = yaml.safe_load((inputs / "pools.yaml").read_text())
    body["pools"][0]["min_replicas"] = 20
    body["pools"][0]["gpus_per_replica"] = "four"
    (inputs / "pools.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    assert gpuslo(args(inputs)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{inputs / 'pools.yaml'}:" in err and "pools[0].gpus_per_replica" in err


def test_profile_pool_missing_from_the_twin_is_a_usage_error(gpuslo, inputs, capsys):
    body = yaml.safe_load((inputs / "pools.yaml").read_text())
    body["pools"][0]["name"] = "other"
    (inputs / "pools.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    assert gpuslo(args(inputs)) == 2
    assert "has no pool other" in capsys.readouterr().err


def test_each_policy_is_written_as_a_scenario_the_twin_runs_with_its_agents(gpuslo, inputs):
    from gpuslo.simulator.offline import run_offline
    from gpuslo.simulator.scenario import load_scenario

    assert gpuslo(args(inputs)) == 0
    for policy in ("plan", "static", "reactive"):
        scenario = load_scenario(inputs / "report" / f"scenario-{policy}.yaml")
        assert scenario.pools[0].name == "llama"
    plan = load_scenario(inputs / "report" / "scenario-plan.yaml")
    assert plan.pools[0].warm_replicas >= 1 and plan.actions
    short = plan.model_copy(update={"duration": "20m"})
    run_offline(short, inputs / "history", start=1_794_787_200.0, step=60.0)
    text = (inputs / "history" / "history.om").read_text()
    assert 'gpuslo_twin_pool_replicas{pool="llama"' in text and "DCGM_FI_DEV_GPU_UTIL{" in text
