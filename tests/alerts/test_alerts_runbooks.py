"""Runbooks for every generated alert, and the Alertmanager configuration checked by the real
amtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from gpuslo import runbooks
from gpuslo.slo_engine import load_specs, rule_groups
from gpuslo.slo_engine.rules import DEFAULT_RUNBOOK_BASE
from tests.conftest import need, run_gpuslo

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "examples" / "slos").rglob("*.yaml"))
COST = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat}
slos:
  - name: chat-cost
    objective: 95
    selector: {model: llama}
    cost: {per_million_tokens: 2}
"""


def all_alerts(tmp_path: Path) -> list[dict]:
    cost = tmp_path / "cost.yaml"
    cost.write_text(COST)
    alerts = []
    for spec in [*SPECS, cost]:
        slos, _ = load_specs([spec])
        for group in rule_groups(slos):
            alerts += [r for r in group["rules"] if "alert" in r]
    from gpuslo.alerts.health import health_rules
    from gpuslo.drift.job import alert_rules

    alerts += [r for g in alert_rules() + health_rules() for r in g["rules"]]
    return alerts


def test_every_generated_alert_links_a_runbook_that_exists(tmp_path):
    alerts = all_alerts(tmp_path)
    kinds = {a["annotations"]["runbook_url"] for a in alerts}
    assert len(alerts) > 10 and len(kinds) >= 4  # availability, latency, ratio, cost, no-data
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        if not url.startswith(DEFAULT_RUNBOOK_BASE):
            continue  # an imported spec's own runbook
        name = url.removeprefix(DEFAULT_RUNBOOK_BASE + "/").removesuffix(".md")
        # the runbooks the wheel ships (importlib.resources), not just the checkout's files
        assert name in runbooks.names(), f"{alert['alert']} ({alert['labels'].get('slo')}): {url}"
        text = runbooks.read(name)
        for section in (
            "What it means",
            "Confirm",
            "What may already have run",
            "Roll back",
            "Whom to tell",
        ):
            assert f"**{section}" in text, f"{name}.md: no '{section}' section"


@pytest.mark.component
def test_alertmanager_config_passes_amtool_and_routes_pages_and_tickets(tmp_path):
    amtool = need("amtool")
    out = tmp_path / "alertmanager.yml"
    proc = run_gpuslo(
        "alerts",
        "config",
        *map(str, SPECS),
        "--hook-url",
        "http://127.0.0.1:9836",
        "--hook-token-file",
        "/etc/alertmanager/gpuslo-token",
        "--pages-webhook",
        "http://127.0.0.1:9999/pages",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([amtool, "check-config", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    def route(*labels: str) -> str:
        res = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={out}", *labels],
            capture_output=True,
            text=True,
        )
        return res.stdout.strip()

    page = ("alertname=GpusloBudgetBurn", "severity=page", "slo=chat-ttft", "tier=page-fast")
    assert route(*page) == "gpuslo-remediation,pages"
    assert route("alertname=GpusloBudgetBurn", "severity=ticket", "tier=ticket-slow") == (
        "gpuslo-remediation,tickets"
    )
    assert route("alertname=SomethingElse", "severity=page") == "pages"
    config = yaml.safe_load(out.read_text())
    hook = next(r for r in config["receivers"] if r["name"] == "gpuslo-remediation")
    assert hook["webhook_configs"][0]["url"] == "http://127.0.0.1:9836/v1/alerts"
    assert hook["webhook_configs"][0]["http_config"]["authorization"]["type"] == "Bearer"
    # The Sloth examples name one SLO under two services, so a page silences the tickets
    # of the same SLO of the same service only.
    assert config["inhibit_rules"][0]["equal"] == ["slo", "service"]


def test_alerts_config_refuses_a_bad_hook_url():
    proc = run_gpuslo("alerts", "config", str(SPECS[0]), "--hook-url", "ftp://x")
    assert proc.returncode == 2 and "--hook-url" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.component
def test_health_alerts_pass_promtool_and_fire_on_a_lost_gpu_and_a_down_port(tmp_path):
    promtool = need("promtool")
    proc = run_gpuslo("alerts", "rules", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rules = tmp_path / "gpuslo-health.rules.yaml"
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    gpu = 'gpuslo_gpu_up{gpu="3",UUID="GPU-x",Hostname="n1"}'
    port = 'node_infiniband_state_id{device="mlx5_0",port="1",Hostname="n1"}'
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": gpu, "values": "1 1 0 0 0 0 0"},
                    {"series": port, "values": "4 4 4 1 1 1 1"},
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "GpusloGpuLost", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "GpusloGpuLost",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "page",
                                    "tier": "health",
                                    "gpu": "3",
                                    "UUID": "GPU-x",
                                    "Hostname": "n1",
                                },
                                "exp_annotations": {
                                    "summary": "GPU 3 on n1 is lost.",
                                    "description": "gpuslo_gpu_up is 0: the GPU stopped "
                                    "answering NVML (XID 79, fell off the bus, or failing). "
                                    "The pods on it are degraded or down.",
                                    "runbook_url": f"{DEFAULT_RUNBOOK_BASE}/gpu-health.md",
                                },
                            }
                        ],
                    },
                    {"eval_time": "4m", "alertname": "GpusloInfinibandPortDown", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "GpusloInfinibandPortDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "page",
                                    "tier": "health",
                                    "device": "mlx5_0",
                                    "port": "1",
                                    "Hostname": "n1",
                                },
                                "exp_annotations": {
                                    "summary": "InfiniBand port mlx5_0/1 is not active.",
                                    "description": "The port's state is not ACTIVE (4) for 2 "
                                    "minutes: multi-node replicas stall.",
                                    "runbook_url": f"{DEFAULT_RUNBOOK_BASE}/fabric-health.md",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    run = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "test.yaml")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("target", "smtp", "kind", "warns"),
    [
        ("oncall@example.com", True, "email_configs", False),
        ("mailto:oncall@example.com", True, "email_configs", False),
        ("oncall@example.com", False, None, True),
        ("https://hooks.slack.com/services/T0/B0/x", False, "slack_configs", False),
        ("pagerduty:0123456789abcdef", False, "pagerduty_configs", False),
        ("http://hooks.example:9000/gpu", False, "webhook_configs", False),
        ("email", False, None, True),
    ],
)
def test_openslo_notification_targets_map_to_receivers(target, smtp, kind, warns):
    from gpuslo.alerts.config import notification_receiver

    receiver, warning = notification_receiver("oncall", target, smtp)
    assert receiver["name"] == "openslo-oncall"
    assert [k for k in receiver if k != "name"] == ([kind] if kind else [])
    assert (warning is not None) == warns


@pytest.mark.component
def test_openslo_targets_become_receivers_that_amtool_accepts_and_routes(tmp_path):
    amtool = need("amtool")
    spec = tmp_path / "mail.yaml"
    spec.write_text(
        (ROOT / "examples" / "slos" / "openslo" / "search.yaml")
        .read_text()
        .replace("target: http://pager.example:9099/hook", "target: oncall@example.com")
    )
    out = tmp_path / "alertmanager.yml"
    args = ["alerts", "config", str(spec), str(ROOT / "examples/slos/openslo/list.yaml")]
    args += ["--hook-url", "http://127.0.0.1:9836", "-o", str(out)]
    without = run_gpuslo(*args)
    assert without.returncode == 0, without.stderr
    assert "warning: spec.target: email target 'oncall@example.com'" in without.stderr
    proc = run_gpuslo(*args, "--smtp-smarthost", "smtp.example:587", "--smtp-from", "am@x.io")
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([amtool, "check-config", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(out.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["openslo-search-pager"]["email_configs"] == [
        {"to": "oncall@example.com", "send_resolved": True}
    ]
    assert "slack_configs" in receivers["openslo-rerank-slack"]
    assert "webhook_configs" in receivers["openslo-search-tickets"]
    routed = subprocess.run(
        [
            amtool,
            *("config", "routes", "test", f"--config.file={out}"),
            *("alertname=GpusloBudgetBurn", "severity=page"),
            *("slo=search-availability-great", "tier=search-fast-burn"),
        ],
        capture_output=True,
        text=True,
    )
    assert routed.stdout.strip() == "gpuslo-remediation,openslo-search-pager,pages"
