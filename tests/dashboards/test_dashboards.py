"""Dashboards against a real Prometheus holding the twin's backfilled history, the generated
SLO rules and the cost rules: every panel's every query returns data; a panel referencing a
missing series is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuslo.cost_model.catalog import load_catalog
from gpuslo.cost_model.rules import rule_groups as cost_rule_groups
from gpuslo.dashboards.generate import all_dashboards, check, panel_queries, substitute
from gpuslo.foundation.promlab import Prometheus
from gpuslo.simulator.offline import run_offline
from gpuslo.simulator.scenario import load_scenario
from gpuslo.slo_engine import load_specs, rule_groups
from tests.conftest import H100_CATALOG, run_gpuslo

ROOT = Path(__file__).resolve().parents[2]
START = 1_790_000_000.0
SLOS = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat, window: 1h, alerting: {base_window: 1m, windows: windows.yaml}}
slos:
  - name: chat-ttft
    objective: 99
    selector: {model: llama-3-70b}
    latency: {metric: ttft, threshold: 5s}
  - name: chat-availability
    objective: 99.5
    selector: {model: llama-3-70b}
    availability: {}
  - name: chat-cost
    objective: 95
    selector: {model: llama-3-70b}
    cost: {per_million_tokens: 1.0}
"""
WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.05, long_window: 5m, short_window: 1m}
  - {name: ticket-slow, severity: ticket, budget_fraction: 0.2, long_window: 30m, short_window: 5m}
"""
SCENARIO = """\
apiVersion: gpuslo/v1
kind: TwinScenario
duration: 2h
step: 15s
nodes:
  - {prefix: gpu-node, count: 2, gpus: 8, profile: H100, ib_ports: 1}
pools:
  - {name: llama-70b, model: llama-3-70b, replicas: 3, gpus_per_replica: 4, tokens_per_second: 2400}
fallback:
  {name: llama-8b-cpu, model: llama-3-8b, replicas: 1, tokens_per_second: 600, serves: llama-70b}
tenants:
  - {name: acme, model: llama-3-70b, requests_per_second: 12, diurnal: 0}
  - {name: globex, model: llama-3-70b, requests_per_second: 8, diurnal: 0}
faults:
  - {at: 30m, for: 15m, kind: traffic_spike, tenant: acme, factor: 3}
  - {at: 60m, for: 1m, kind: xid48, node: gpu-node-00, gpu: 1}
  - {at: 70m, for: 5m, kind: ib_flap, node: gpu-node-01}
actions:
  - {at: 85m, fallback: {pool: llama-70b, percent: 60}}
"""
VALUES = {
    "model": "llama-3-70b",
    "tenant": ".*",
    "node": ".*",
    "cluster": ".*",
    "__rate_interval": "1m",
}
pytestmark = pytest.mark.component


def drift_history(samples: Path) -> str:
    from gpuslo.drift.job import exposition, load_frame, run, split_windows

    frame = load_frame([samples])
    lines: dict[str, list[str]] = {}
    for at in range(int(START) + 3600, int(START) + 7200, 300):
        ref, cur = split_windows(frame, (START, START + 1800), (at - 1800, at))
        for line in exposition([run(ref, cur, "llama-3-70b")]).splitlines():
            if not line.startswith("#"):
                name = line.split("{", 1)[0]
                lines.setdefault(name, []).append(f"{line} {at}")
    body = "".join(f"# TYPE {n} gauge\n" + "\n".join(v) + "\n" for n, v in lines.items())
    return body + "# EOF\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboards")
    (tmp / "slos.yaml").write_text(SLOS)
    (tmp / "windows.yaml").write_text(WINDOWS)
    (tmp / "catalog.yaml").write_text(H100_CATALOG)
    slos, _ = load_specs([tmp / "slos.yaml"])
    # Everything a panel shows happens at least once: a traffic spike (latency pages), an
    # XID, a link flap, and traffic shifted to the fallback (the cost SLO burns).
    (tmp / "scenario.yaml").write_text(SCENARIO)
    run_offline(load_scenario(tmp / "scenario.yaml"), tmp / "run", START, samples_per_step=3)
    # A drift job every 5 minutes over the run's samples: its series, as the agent would hold
    # them, for the drift dashboard.
    drift_om = tmp / "gpuslo.drift.om"
    drift_om.write_text(drift_history(tmp / "run" / "samples.parquet"))
    recordings = [
        {"name": g["name"], "rules": [r for r in g["rules"] if "record" in r]}
        for g in rule_groups(slos)
    ]
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(tmp / "run" / "history.om")
        prom.backfill_openmetrics(drift_om)
        prom.restart()
        groups = cost_rule_groups(load_catalog(tmp / "catalog.yaml")) + recordings
        prom.backfill_rules(groups, start=START + 60, end=START + 7200, interval="15s")
        yield prom, slos, tmp


def test_every_panel_query_returns_data(lab):
    prom, slos, _ = lab
    dashboards = all_dashboards(slos)
    assert len(dashboards) == 6 + len(slos)
    queries = sum(len(panel_queries(m)) for m in dashboards.values())
    assert queries > 40
    missing = check(prom.url, dashboards, VALUES, START + 900, START + 7200)
    assert missing == [], "\n".join(f"{d}: {p}: {e}" for d, p, e in missing)


def test_a_panel_on_a_missing_series_is_caught(lab):
    prom, _, _ = lab
    from gpuslo.dashboards.generate import Query, _dashboard, _panel

    broken = _dashboard("broken", "broken", []).with_panel(
        _panel("typo", [Query('gen_ai_server_request_total{model=~"$model"}')])
    )
    missing = check(prom.url, {"broken.json": broken.build()}, VALUES, START + 900, START + 7200)
    assert missing == [("broken.json", "typo", 'gen_ai_server_request_total{model=~"llama-3-70b"}')]


def test_variables_are_substituted_like_grafana():
    assert substitute('x{a=~"$model",b="${node}"}[$__rate_interval]', VALUES) == (
        'x{a=~"llama-3-70b",b=".*"}[1m]'
    )


def test_cli_writes_dashboards_and_provisioning(lab, tmp_path):
    _, _, tmp = lab
    proc = run_gpuslo("dashboards", "generate", str(tmp / "slos.yaml"), "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    overview = json.loads((tmp_path / "gpuslo-slo-overview.json").read_text())
    names = {v["name"] for v in overview["templating"]["list"]}
    assert "datasource" in names
    fleet = json.loads((tmp_path / "gpuslo-gpu-fleet.json").read_text())
    assert {v["name"] for v in fleet["templating"]["list"]} >= {"cluster", "node"}
    assert (tmp_path / "provisioning.yaml").read_text().count('"type": "file"') == 1
    detail = json.loads((tmp_path / "gpuslo-slo-chat-ttft.json").read_text())
    assert any(
        "threshold" in (t.get("legendFormat") or "")
        for p in detail["panels"]
        for t in p.get("targets", [])
    )


def test_current_names_gpu_and_fabric_panels_return_data_from_a_current_names_fleet(lab):
    """The same run as a fleet exporting DCGM-4 names (dcgm-exporter 4.9.0, or agents with
    ``--dcgm-names current``): every GPU and fabric panel generated with that naming finds its
    series, selected through the ``hostname`` label."""
    from gpuslo.dashboards.generate import fabric, gpu_fleet
    from gpuslo.foundation import conventions as c
    from tests.naming import has_name, to_current

    _, _, tmp = lab
    history = tmp / "history.current.om"
    history.write_text(to_current((tmp / "run" / "history.om").read_text()))
    naming = c.gpu_naming("current")
    built = {"fleet.json": gpu_fleet(naming).build(), "fabric.json": fabric(naming).build()}
    exprs = " ".join(e for m in built.values() for _, e in panel_queries(m))
    assert has_name(exprs, "DCGM_FI_DEV_GPU_UTIL_RATIO") and not has_name(exprs, "Hostname")
    values = {**VALUES, "node": "gpu-node-.*"}  # an empty host label would not match
    with Prometheus(tmp / "prom-current") as prom:
        prom.backfill_openmetrics(history)
        prom.restart()
        missing = check(prom.url, built, values, START + 900, START + 7200)
    assert missing == [], "\n".join(f"{d}: {p}: {e}" for d, p, e in missing)
