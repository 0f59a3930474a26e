"""The cost model in both dcgm-exporter generations: rules and the report read GPU series by
the generation's names and host label, so a fleet exporting DCGM-4 names (dcgm-exporter 4.9.0+)
costs the same as one exporting the legacy names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpuslo.cost_model.catalog import load_catalog
from gpuslo.cost_model.report import Window, build, load_fleet
from gpuslo.cost_model.rules import FLEET_COST, MODEL_COST, rule_groups
from gpuslo.foundation import conventions as c
from tests.conftest import need, run_gpuslo
from tests.naming import has_name as _has
from tests.naming import to_current

ROOT = Path(__file__).resolve().parents[2]
CURRENT = c.gpu_naming("current")
LEGACY = c.gpu_naming("legacy")
CATALOG = """\
apiVersion: gpuslo/v1
kind: PriceCatalog
currency: USD
as_of: "2026-11-01"
sources: ["test prices"]
gpus:
  A100: {on-demand: 1.80, spot: 0.72}
nodes:
  - {match: "mig-node-.*", gpu: A100, class: spot}
  - {match: "gpu-node-.*", gpu: A100, class: on-demand}
"""


@pytest.fixture
def catalog(tmp_path):
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    return load_catalog(tmp_path / "catalog.yaml")


def test_current_rules_match_nodes_on_hostname_and_legacy_on_hostname_label(catalog):
    current = str(rule_groups(catalog, CURRENT))
    legacy = str(rule_groups(catalog, LEGACY))
    assert 'hostname=~"mig-node-.*"' in current and "max by (UUID, hostname)" in current
    assert not _has(current, c.LABEL_HOSTNAME)
    assert 'Hostname=~"mig-node-.*"' in legacy and not _has(legacy, c.LABEL_HOSTNAME_CURRENT)
    assert rule_groups(catalog) == rule_groups(catalog, c.gpu_naming())


@pytest.mark.component
def test_report_and_rules_on_a_current_names_fleet_match_the_fleet_worked_out_by_hand(
    catalog, tmp_path
):
    from gpuslo.foundation.promlab import Prometheus
    from gpuslo.simulator.offline import run_offline
    from gpuslo.simulator.scenario import load_scenario

    start = 1_790_000_000.0
    run_offline(load_scenario(ROOT / "simulator/scenarios/noisy-neighbour.yaml"), tmp_path, start)
    current = tmp_path / "history.current.om"
    current.write_text(to_current((tmp_path / "history.om").read_text()))
    text = current.read_text()
    assert _has(text, "DCGM_FI_DEV_GPU_UTIL_RATIO") and not _has(text, "DCGM_FI_DEV_GPU_UTIL")
    hour = (start + 1800, start + 5400)
    with Prometheus(tmp_path / "prom") as prom:
        prom.backfill_openmetrics(current)
        prom.restart()
        prom.backfill_rules(
            rule_groups(catalog, CURRENT), start=hour[0] - 60, end=hour[1], interval="15s"
        )
        window = Window(hour[0], hour[1], 15.0)
        costs, _ = build(prom.url, catalog, window, naming=CURRENT)
        hours = window.seconds / 3600
        # the same hand-worked fleet as test_cost_component: 8 whole GPUs on demand, 4 MIG
        # 3g.40gb instances on spot, 1/7 of each of the two MIG GPUs idle
        assert costs.allocated["mistral-7b"] == pytest.approx(8 * 1.80 * hours)
        assert costs.allocated["phi-3-mini"] == pytest.approx(4 * 3 / 7 * 0.72 * hours)
        assert costs.bill == pytest.approx((8 * 1.80 + 2 * 0.72) * hours)
        # utilization read as a 0-1 ratio from DCGM_FI_DEV_GPU_UTIL_RATIO (not / 100 again)
        fleet = load_fleet(prom.url, catalog, window, CURRENT)
        util = np.concatenate([g.util for g in fleet])
        assert np.nanmax(util) <= 1.0 and np.nanmax(util) > 0.05
        assert {g.node for g in fleet} >= {"gpu-node-00"}
        # Prometheus's recording rules see the same fleet through the hostname label
        fleet_cost = prom.query(f"{FLEET_COST}", at=hour[1])
        assert fleet_cost and float(fleet_cost[0]["value"][1]) == pytest.approx(
            (8 * 1.80 + 2 * 0.72) / 3600
        )
        assert {r["metric"]["model"] for r in prom.query(MODEL_COST, at=hour[1])} >= {
            "mistral-7b",
            "phi-3-mini",
        }


@pytest.mark.component
def test_promtool_accepts_the_current_names_cost_rules(tmp_path):
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    out = tmp_path / "rules"
    proc = run_gpuslo(
        "cost", "rules", str(tmp_path / "catalog.yaml"), "-o", str(out), "--dcgm-names", "current"
    )
    assert proc.returncode == 0, proc.stderr
    rules = (out / "gpuslo-cost.rules.yaml").read_text()
    assert "hostname=~" in rules and not _has(rules, "Hostname")
    check = subprocess.run(
        [need("promtool"), "check", "rules", str(out / "gpuslo-cost.rules.yaml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
