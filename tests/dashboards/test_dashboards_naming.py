"""Dashboards in both dcgm-exporter generations: with current (DCGM-4) names every GPU panel
and the node variable read only current names and the ``hostname`` label; legacy is as before."""

from __future__ import annotations

import json
import re
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from gpuslo.dashboards.generate import all_dashboards, panel_queries
from gpuslo.foundation import conventions as c
from gpuslo.slo_engine.model import SLO, AlertTier
from tests.conftest import run_gpuslo

ROOT = Path(__file__).resolve().parents[2]
CURRENT = c.gpu_naming("current")
LEGACY = c.gpu_naming("legacy")
RENAMED = [s for s in (*c.GPU_FIELDS, c.DCGM_XID_ERRORS) if CURRENT.name(s) != s.name]


def _slo() -> SLO:
    tier = AlertTier("page-fast", "page", 0.02, 3600.0, 300.0)
    return SLO("availability", "chat", 0.99, 30 * 86400.0, "e", "t", (tier,))


def _text(naming: c.GpuNaming) -> str:
    return "\n".join(JSONEncoder().encode(m) for m in all_dashboards([_slo()], naming).values())


def _has(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def test_current_dashboards_reference_only_current_names_and_hostname():
    text = _text(CURRENT)
    for spec in RENAMED:
        assert not _has(text, spec.name), spec.name
    assert not _has(text, c.LABEL_HOSTNAME)
    for spec in (c.DCGM_GPU_UTIL, c.DCGM_POWER_USAGE, c.DCGM_GPU_TEMP):
        assert _has(text, CURRENT.name(spec)), spec.name
    fleet = all_dashboards([_slo()], CURRENT)["gpuslo-gpu-fleet.json"]
    exprs = [e for _, e in panel_queries(fleet)]
    assert exprs and all('hostname=~"$node"' in e for e in exprs)
    node = next(
        v
        for v in json.loads(JSONEncoder().encode(fleet))["templating"]["list"]
        if v["name"] == "node"
    )
    assert node["query"].endswith(", hostname)")


def test_legacy_dashboards_keep_legacy_names_and_hostname_label():
    text = _text(LEGACY)
    assert _has(text, c.LABEL_HOSTNAME) and not _has(text, c.LABEL_HOSTNAME_CURRENT)
    for spec in RENAMED:
        assert not _has(text, CURRENT.name(spec)), spec.name
    assert _has(text, c.DCGM_GPU_UTIL.name)


def test_utilization_panel_unit_follows_the_generation_unit():
    def unit(naming: c.GpuNaming) -> str:
        fleet = json.loads(
            JSONEncoder().encode(all_dashboards([_slo()], naming)["gpuslo-gpu-fleet.json"])
        )
        panel = next(p for p in fleet["panels"] if p["title"] == "GPU utilization")
        return panel["fieldConfig"]["defaults"]["unit"]

    assert unit(LEGACY) == "percent"  # DCGM_FI_DEV_GPU_UTIL: 0-100
    assert unit(CURRENT) == "percentunit"  # DCGM_FI_DEV_GPU_UTIL_RATIO: 0-1


def test_generate_cli_writes_current_names_with_the_flag(tmp_path):
    spec = ROOT / "examples" / "slos" / "chat.yaml"
    out = tmp_path / "dash"
    proc = run_gpuslo(
        "dashboards", "generate", str(spec), "-o", str(out), "--dcgm-names", "current"
    )
    assert proc.returncode == 0, proc.stderr
    fleet = (out / "gpuslo-gpu-fleet.json").read_text()
    assert _has(fleet, "DCGM_FI_DEV_GPU_UTIL_RATIO") and not _has(fleet, "Hostname")
    legacy = tmp_path / "legacy"
    proc = run_gpuslo("dashboards", "generate", str(spec), "-o", str(legacy))
    assert proc.returncode == 0, proc.stderr
    assert _has((legacy / "gpuslo-gpu-fleet.json").read_text(), "DCGM_FI_DEV_GPU_UTIL")
