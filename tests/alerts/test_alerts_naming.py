"""Health alerts in both dcgm-exporter generations: group and describe GPUs by the
generation's host label (``hostname`` for dcgm-exporter 4.8.3 and later)."""

from __future__ import annotations

import re
import subprocess

import pytest

from gpuslo.alerts.health import health_rules
from gpuslo.foundation import conventions as c
from tests.conftest import need, run_gpuslo


def _has(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def test_current_health_alerts_use_only_hostname():
    rules = [r for g in health_rules(c.gpu_naming("current")) for r in g["rules"]]
    text = str(rules)
    assert not _has(text, c.LABEL_HOSTNAME)
    nvlink = next(r for r in rules if r["alert"] == c.ALERT_NVLINK_CRC_ERRORS)
    assert nvlink["expr"].startswith("sum by (hostname, gpu) (")
    lost = next(r for r in rules if r["alert"] == c.ALERT_GPU_LOST)
    assert (
        lost["annotations"]["summary"] == "GPU {{ $labels.gpu }} on {{ $labels.hostname }} is lost."
    )


def test_legacy_health_alerts_keep_hostname_label_and_are_the_default():
    legacy = health_rules(c.gpu_naming("legacy"))
    assert health_rules() == legacy
    assert "{{ $labels.Hostname }}" in str(legacy) and not _has(str(legacy), "hostname")


@pytest.mark.component
def test_promtool_accepts_the_current_names_health_rules(tmp_path):
    proc = run_gpuslo("alerts", "rules", "-o", str(tmp_path), "--dcgm-names", "current")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "gpuslo-health.rules.yaml"
    assert "$labels.hostname" in path.read_text()
    check = subprocess.run(
        [need("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
