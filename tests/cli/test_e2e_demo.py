"""End to end, shortened: the twin and its agents, a real Prometheus with the generated SLO
rules, a real Alertmanager and the remediation hook with the twin actuator, on loopback. The
demo scenario's fault comes after 20 s instead of 60, and the run stops once the SLI has
recovered: the page fired, exactly one scale action happened, and the burn came back down."""

from __future__ import annotations

import json

import pytest
import yaml

from gpuslo.cli.demo import run_demo
from gpuslo.foundation.resources import data_path
from gpuslo.simulator.scenario import Scenario

pytestmark = [pytest.mark.component, pytest.mark.e2e]


def test_the_loop_closes_one_page_one_action_recovery(tmp_path):
    data = yaml.safe_load(data_path("gpuslo.cli.demo_data", "scenario.yaml").read_text())
    data["duration"] = "150s"
    for fault in data["faults"]:
        fault["at"] = "20s"
    lines: list[str] = []
    result = run_demo(
        tmp_path / "work",
        tmp_path / "report",
        scenario=Scenario.model_validate(data),
        stop_when_recovered=True,
        echo=lines.append,
    )
    log = "\n".join(lines)
    assert result.alert_at is not None, log
    assert result.fault_at <= result.alert_at < result.fault_end, log
    scaled = [a for a in result.actions if a["kind"] == "scale_pool" and a["status"] == "acted"]
    assert len(scaled) == 1, result.actions
    assert scaled[0]["plan"]["before"] == 3 and scaled[0]["plan"]["after"] == 8
    assert result.action_at is not None and result.action_at >= result.alert_at - 1
    assert result.recovered_at is not None and result.recovered_at < result.fault_end, log
    # The price of the action: the scaled-out pool costs more than the cost SLO's $30/h, so
    # that SLO pages after the scale-out (never before), and the evaluator over the run's
    # recordings, as a backtest would, finds the same page.
    assert result.cost_alert_at is not None, log
    assert result.cost_alert_at >= result.action_at - 2, (result.cost_alert_at, result.action_at)
    assert result.cost_episodes, log
    assert all(e["start"] >= result.action_at - 4 for e in result.cost_episodes)
    report = (tmp_path / "report" / "index.html").read_text()
    assert "the loop closing" in report and "burn-rate.png" in report
    assert (tmp_path / "report" / "burn-rate.png").stat().st_size > 1000
    # The page became one incident, explained while the run went on, with the injected fault
    # (tenant acme's traffic spike, or the throttled GPU) among its top causes; printed, in the
    # report and in result.json.
    ttft = [i for i in result.incidents if i["slo"] == "chat-ttft"]
    assert len(ttft) == 1, result.incidents
    assert ttft[0]["explained_at"] is not None and ttft[0]["explained_at"] >= ttft[0]["started_at"]
    injected = {
        ("thermal_throttle", (("Hostname", "gpu-node-00"), ("gpu", "0"))),
        ("traffic_spike", (("tenant", "acme"),)),
    }
    named = [(x["kind"], tuple(sorted(x["entity"].items()))) for x in ttft[0]["causes"]]
    assert named and named[0] in injected, named
    assert any(line.startswith("  incident ") for line in lines), log
    assert "Incidents" in report
    saved = json.loads((tmp_path / "report" / "result.json").read_text())
    assert [i["slo"] for i in saved["incidents"]].count("chat-ttft") == 1
