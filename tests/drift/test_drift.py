"""Drift on the twin's traffic: a tenant's prompts double in length; the drift job (Evidently)
flags prompt_tokens and not output_tokens, stays quiet on two windows from before the shift,
and its series reach the agent's /metrics through OTLP."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from gpuslo.drift.job import alert_rules, exposition, load_frame, run, split_windows
from gpuslo.simulator.offline import run_offline
from gpuslo.simulator.scenario import load_scenario
from tests.conftest import need, otlp_agent, run_gpuslo

ROOT = Path(__file__).resolve().parents[2]
START = 1_790_000_000.0
MIN = 60


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    scenario = load_scenario(ROOT / "simulator/scenarios/prompt-shift.yaml")
    run_offline(scenario, tmp, START, samples_per_step=5)
    return tmp / "samples.parquet"


def test_the_prompt_shift_is_found_and_only_there(samples):
    frame = load_frame([samples])
    assert len(frame) == 480 * 5
    ref, cur = split_windows(
        frame, (START, START + 55 * MIN), (START + 65 * MIN, START + 120 * MIN)
    )
    result = run(ref, cur, model="llama-3-8b")
    drifted = {f.feature: f.drifted for f in result.features}
    assert drifted == {"prompt_tokens": True, "output_tokens": False}
    assert result.share == 0.5 and result.detected  # half the features: at the 0.5 share
    # the same job on two windows before the shift says nothing
    ref, cur = split_windows(frame, (START, START + 25 * MIN), (START + 30 * MIN, START + 55 * MIN))
    calm = run(ref, cur)
    assert not any(f.drifted for f in calm.features) and not calm.detected
    text = exposition([result])
    assert 'gpuslo_drift_detected{model="llama-3-8b",feature="prompt_tokens"} 1' in text


@pytest.mark.component
def test_cli_pushes_to_the_agent_writes_reports_and_rules(samples, tmp_path):
    with otlp_agent() as (metrics_url, otlp_url):
        proc = run_gpuslo(
            "drift",
            "run",
            "--data",
            str(samples),
            "--reference",
            f"{START},{START + 55 * MIN}",
            "--current",
            f"{START + 65 * MIN},{START + 120 * MIN}",
            "--model",
            "llama-3-8b",
            "--push",
            otlp_url,
            "-o",
            str(tmp_path / "report"),
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "llama-3-8b: DRIFT" in proc.stdout
        deadline = time.monotonic() + 5
        while True:
            with urllib.request.urlopen(metrics_url, timeout=5) as r:
                text = r.read().decode()
            if "gpuslo_drift_dataset_detected" in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert 'gpuslo_drift_detected{feature="prompt_tokens",model="llama-3-8b"} 1\n' in text
    assert 'gpuslo_drift_dataset_detected{model="llama-3-8b"} 1\n' in text
    html = (tmp_path / "report" / "drift-llama-3-8b.html").read_text()
    assert "prompt_tokens" in html
    summary = json.loads((tmp_path / "report" / "gpuslo.drift.json").read_text())
    assert summary[0]["detected"] is True
    proc = run_gpuslo("drift", "rules", "-o", str(tmp_path / "rules"))
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run(
        [need("promtool"), "check", "rules", str(tmp_path / "rules" / "gpuslo-drift.rules.yaml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_drift_runbook_exists_and_bad_input_is_one_line(tmp_path):
    url = alert_rules()[0]["rules"][0]["annotations"]["runbook_url"]
    assert (ROOT / "runbooks" / url.rsplit("/", 1)[1]).is_file()
    proc = run_gpuslo(
        "drift",
        "run",
        "--data",
        str(tmp_path / "missing.parquet"),
        "--reference",
        "1,2",
        "--current",
        "3,4",
    )
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_gpuslo("drift", "run", "--reference-file", str(tmp_path / "x.csv"))
    assert proc.returncode == 2 and "--current-file" in proc.stderr
