"""End to end on the live twin and a real Prometheus: the twin serves the costlier canary
scenario, Prometheus scrapes it and evaluates the cost recording rules, and the canary
controller (``gpuslo canary run``'s loop) steps the route's weights through the twin's route
API until it rolls the canary back, one journal entry per step."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from gpuslo.cli import canary_cmd
from gpuslo.cost_model.catalog import load_catalog
from gpuslo.cost_model.rules import rule_groups
from gpuslo.foundation import prometheus
from gpuslo.foundation.resources import data_path
from gpuslo.remediation.actuators import TwinActuator
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import Route
from gpuslo.rollouts import templates
from gpuslo.rollouts.controller import CanaryController
from gpuslo.rollouts.prom import PrometheusSource
from gpuslo.rollouts.spec import load_spec
from gpuslo.simulator.live import LiveTwin
from gpuslo.simulator.scenario import load_scenario, resolve_scenario
from tests.conftest import free_port, need, wait_http

from .test_canary_analysis import SPEC

pytestmark = pytest.mark.component


def start_prometheus_with_rules(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], target: str
) -> str:
    catalog = load_catalog(data_path("gpuslo.examples", "cost/catalog.yaml"))
    groups = [{**g, "interval": "1s"} for g in rule_groups(catalog)]
    (tmp_path / "cost.rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{tmp_path / 'cost.rules.yaml'}']\n"
        "scrape_configs:\n"
        f"- job_name: twin\n  honor_labels: true\n  static_configs: [{{targets: ['{target}']}}]\n"
    )
    procs.append(
        subprocess.Popen(
            [
                need("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", timeout=30)
    return url


def test_controller_rolls_the_costlier_canary_back_on_the_live_twin(
    tmp_path: Path, process: list[subprocess.Popen[bytes]]
) -> None:
    scenario = load_scenario(resolve_scenario("canary-costlier"))
    twin = LiveTwin(scenario, speed=20.0, tick=0.5, agents=False).start()
    try:
        url = start_prometheus_with_rules(tmp_path, process, f"127.0.0.1:{twin.port}")
        spec = load_spec(SPEC).model_copy(
            update={
                "rule_interval": "1s",
                "min_requests": 1000,
                "analysis": load_spec(SPEC).analysis.model_copy(
                    update={"interval": "2s", "settle": "3s", "max_duration": "2m"}
                ),
            }
        )
        source = PrometheusSource(url)
        journal = Journal(tmp_path / "journal.db")
        actuator = TwinActuator(f"http://127.0.0.1:{twin.port}")
        ctl = CanaryController(
            spec, lambda side, w, end: source.sample(spec, side, w, end), actuator, journal
        )
        deadline = time.monotonic() + 120
        status = ctl.tick()
        while status.state == "progressing" and time.monotonic() < deadline:
            time.sleep(2)
            status = ctl.tick()
        assert status.state == "rolled_back", status.result and status.result.reason
        route = Route(namespace="inference", name="llama-8b")
        assert actuator.weights(route) == {"llama-8b": 100, "llama-8b-v2": 0}
        entries = ctl.entries()
        assert [e.kind for e in entries][-1] == "canary_rollback"
        assert all(e.status == "acted" for e in entries)
        steps = [e.plan["weight"] for e in entries if e.kind == "canary_step"]
        assert steps == spec.steps[: len(steps)] and max(steps) < 50
        assert status.result is not None
        failed = {r.check for r in status.result.checks if r.verdict == "fail"}
        assert "cost-per-1m-tokens" in failed
        cost = next(r for r in status.result.checks if r.check == "cost-per-1m-tokens")
        assert cost.baseline and cost.canary and cost.canary / cost.baseline > 1.2
        journal.close()
        # `gpuslo canary analyze` over the same Prometheus: the evidence in three formats.
        spec_file = tmp_path / "canary.yaml"
        spec_file.write_text(SPEC.read_text().replace("rule_interval: 15s", "rule_interval: 1s"))
        out = tmp_path / "analysis"
        args = ["canary", "analyze", str(spec_file), "--prometheus", url, "--window", "20s"]
        assert canary_cmd.main([*args, "-o", str(out), "--format", "json"]) == 0
        body = json.loads((out / "analysis.json").read_text())
        assert body["decision"] in ("hold", "rollback") and body["requests"]["baseline"] > 0
        ttft = next(c for c in body["checks"] if c["what"] == "ttft p50")
        assert ttft["baseline"] > 0 and ttft["promql"][0].startswith("sum by (le) (increase(")
        assert "gen_ai_server_time_to_first_token_seconds_bucket" in ttft["promql"][0]
        assert "Canary analysis: llama-8b-v2" in (out / "analysis.html").read_text()
        # The Argo/Flagger templates' queries run in this Prometheus and give one value each.
        short = spec.model_copy(update={"window": "20s"})
        for metric in templates.metrics(short):
            found = prometheus.instant(url, metric["query"], time.time())
            assert len(found) == 1, (metric["name"], found)
            value = float(found[0]["value"][1])
            if metric["name"].startswith(("cost", "gpu-seconds")):
                assert value > 1.0, metric  # the canary was costlier per token

    finally:
        twin.stop()
