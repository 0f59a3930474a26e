"""The end-to-end demo: twin -> agents -> Prometheus (generated SLO rules) -> Alertmanager ->
remediation hook (twin actuator) -> twin recovers. Everything runs on loopback and is stopped
at the end, also on Ctrl-C.

Time is compressed (a one-hour SLO period, 10 s base rates, one-minute alert windows) so the
loop closes in minutes; the report says so.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpuslo.cost_model.catalog import load_catalog
from gpuslo.cost_model.rules import rule_groups as cost_rule_groups
from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import format_duration, parse_duration
from gpuslo.foundation.promlab import Alertmanager, Prometheus
from gpuslo.foundation.report import Page, subplots
from gpuslo.foundation.resources import data_path
from gpuslo.remediation.actuators import TwinActuator
from gpuslo.remediation.engine import DataCheck, Remediator
from gpuslo.remediation.incidents import Explainer, Incidents, IncidentStore
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import IncidentSettings, load_policy
from gpuslo.remediation.server import Hook, Metrics
from gpuslo.simulator.live import LiveTwin
from gpuslo.simulator.scenario import Scenario, load_scenario
from gpuslo.slo_engine import load_specs, write_outputs
from gpuslo.slo_engine.correlate import Config
from gpuslo.slo_engine.evaluator import evaluate
from gpuslo.slo_engine.history import sli_from_prometheus
from gpuslo.slo_engine.rules import Layout, burn_rate

EVALUATION_INTERVAL_S = 2.0  # Prometheus's and every rule group's, in the compressed demo
# The demo's page windows are a sixtieth of the SRE workbook's (1 m against 1 h): the
# correlator's baselines and search windows shrink alike.
TIME_SCALE = 1 / 60
SLO = "chat-ttft"
COST_SLO = "chat-cost"
POOL = "llama-70b"
JOURNAL_COLUMNS = ("created", "policy", "kind", "status", "reason", "target")
# The twin's agents serve the default dcgm-exporter generation; the demo reads GPU series so.
NAMING = c.gpu_naming()


@dataclass
class DemoResult:
    started: float
    fault_at: float
    fault_end: float
    alert_at: float | None = None
    action_at: float | None = None
    recovered_at: float | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    threshold: float = 0.0
    report: Path | None = None
    cost_alert_at: float | None = None  # the cost SLO's page: the price of scaling out
    cost_episodes: list[dict[str, Any]] = field(default_factory=list)  # from the evaluator
    # every page the hook received, explained: {slo, started_at, explained_at, causes}
    incidents: list[dict[str, Any]] = field(default_factory=list)
    incident_records: list[dict[str, Any]] = field(default_factory=list)  # the hook's JSON

    def summary(self) -> str:
        def rel(t: float | None) -> str:
            return "never" if t is None else f"{t - self.started:.0f} s"

        parts = [
            f"The fault (traffic spike on tenant acme plus a throttled GPU) started at "
            f"{rel(self.fault_at)}."
        ]
        if self.alert_at is not None:
            parts.append(
                f"The TTFT SLO's page-fast alert fired {self.alert_at - self.fault_at:.0f} s "
                "after the fault"
            )
            if self.action_at is not None:
                parts[-1] += (
                    "; the remediation hook scaled the pool "
                    f"{self.action_at - self.alert_at:.0f} s after the alert"
                )
                if self.recovered_at is not None:
                    parts[-1] += (
                        f", and the SLI recovered {self.recovered_at - self.action_at:.0f} s after "
                        "the action (short-window burn rate back under 1)"
                    )
            parts[-1] += "."
        else:
            parts.append("No page fired.")
        if self.cost_alert_at is not None and self.action_at is not None:
            parts.append(
                f"The cost SLO paged {self.cost_alert_at - self.action_at:.0f} s after the "
                "scale-out (the pool then cost more than its $30/h budget); a backtest of the "
                f"run finds {len(self.cost_episodes)} cost page episode(s)."
            )
        scaled = [a for a in self.actions if a["kind"] == "scale_pool" and a["status"] == "acted"]
        parts.append(
            f"Scale actions taken: {len(scaled)}. Time is compressed: a one-hour SLO period, "
            "10 s base rates and a 1 m / 10 s page window stand in for 30 days, 5 m and 1 h / 5 m."
        )
        return " ".join(parts)


def _prometheus_config(twin: LiveTwin, alertmanager: str) -> str:
    targets = [f"127.0.0.1:{twin.port}"]
    return yaml.safe_dump(
        {
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [
                {
                    "job_name": "twin",
                    "scrape_interval": "1s",
                    "static_configs": [{"targets": targets}],
                    "metric_relabel_configs": [
                        {"action": "labeldrop", "regex": "instance"},
                    ],
                },
                {
                    "job_name": "gpuslo-agent",
                    "scrape_interval": "2s",
                    "static_configs": [{"targets": twin.agent_targets}],
                },
            ],
        }
    )


def run_demo(
    workdir: Path,
    out: Path | None,
    scenario: Scenario | None = None,
    stop_when_recovered: bool = False,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    scenario = scenario or load_scenario(data_path("gpuslo.cli.demo_data", "scenario.yaml"))
    workdir.mkdir(parents=True, exist_ok=True)
    slos, _ = load_specs([data_path("gpuslo.cli.demo_data", "slos.yaml")])
    # the rule groups are evaluated as often as the demo's Prometheus evaluates (compressed time)
    rules, inhibit = write_outputs(
        slos,
        [str(data_path("gpuslo.cli.demo_data", "slos.yaml"))],
        workdir / "rules",
        layout=Layout(interval=EVALUATION_INTERVAL_S),
    )
    cost_rules = workdir / "rules" / "gpuslo-cost.rules.yaml"
    cost_rules.write_text(
        yaml.safe_dump(
            {
                "groups": cost_rule_groups(
                    load_catalog(data_path("gpuslo.cli.demo_data", "catalog.yaml")), NAMING
                )
            }
        )
    )
    slo = next(s for s in slos if s.name == SLO)
    cost_slo = next(s for s in slos if s.name == COST_SLO)
    page = next(t for t in slo.tiers if t.severity == "page")
    threshold = page.factor(slo.period)
    long_w, short_w = (
        format_duration(page.long_window),
        format_duration(page.short_window),
    )
    spike = next(f for f in scenario.faults if f.kind == "traffic_spike")
    duration = parse_duration(scenario.duration)
    with ExitStack() as stack:
        echo("starting the twin and one agent per simulated node")
        twin = LiveTwin(scenario, speed=1.0, tick=0.5)
        hook_metrics = Metrics()
        journal = Journal(workdir / "journal.db")
        stack.callback(journal.close)
        echo("starting the remediation hook, Alertmanager and Prometheus")
        remediator = Remediator(
            load_policy(data_path("gpuslo.cli.demo_data", "policy.yaml")),
            journal,
            TwinActuator(f"http://127.0.0.1:{twin.port}"),
            on_outcome=hook_metrics.outcome,
        )
        hook = Hook(remediator, hook_metrics, port=0, tick=0.5)
        am_config = {
            "route": {
                "receiver": "gpuslo",
                "group_by": ["alertname", "slo", "tier"],
                "group_wait": "0s",
                "group_interval": "5s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "gpuslo",
                    "webhook_configs": [
                        {"url": f"http://127.0.0.1:{hook.port}/v1/alerts", "send_resolved": True}
                    ],
                }
            ],
            "inhibit_rules": yaml.safe_load(inhibit.read_text())["inhibit_rules"],
        }
        am = Alertmanager(workdir / "alertmanager", am_config)
        prom = Prometheus(
            workdir / "prometheus",
            rule_files=[rules, cost_rules],
            evaluation_interval=f"{EVALUATION_INTERVAL_S:g}s",
            config_extra=_prometheus_config(twin, f"127.0.0.1:{am.port}"),
        )
        # Prometheus's URL is fixed at construction, before anything starts.
        remediator.data_check = DataCheck(prom.url)
        # every page becomes an incident, explained by the correlator at its startsAt
        incidents = Incidents(
            IncidentStore(journal),
            IncidentSettings(),
            hook_metrics.registry,
            explain=Explainer(
                prom.url,
                slos,
                step=EVALUATION_INTERVAL_S,
                config=Config(naming=NAMING, time_scale=TIME_SCALE),
            ),
        )
        hook.incidents = incidents
        announced: set[str] = set()
        hook.start()
        stack.callback(hook.stop)
        am.start()
        stack.callback(am.stop)
        prom.start()
        stack.callback(prom.stop)
        twin.start()
        stack.callback(twin.stop)
        started = time.time()
        result = DemoResult(
            started,
            fault_at=started + parse_duration(spike.at),
            fault_end=started + parse_duration(spike.at) + parse_duration(spike.for_),
            threshold=threshold,
        )
        echo(
            f"running '{scenario.description}' for {duration:.0f} s: the fault starts at "
            f"{parse_duration(spike.at):.0f} s and lasts {parse_duration(spike.for_):.0f} s"
        )
        sel = f'{{slo="{SLO}"}}'
        while time.time() - started < duration:
            time.sleep(2)
            now = time.time()
            burn_long = _value(prom, f"{burn_rate(long_w)}{sel}")
            burn_short = _value(prom, f"{burn_rate(short_w)}{sel}")
            firing = _value(
                prom,
                f'ALERTS{{alertname="GpusloBudgetBurn",alertstate="firing",tier="{page.name}",'
                f'slo="{SLO}"}}',
            )
            cost_firing = _value(
                prom,
                f'ALERTS{{alertname="GpusloBudgetBurn",alertstate="firing",tier="{page.name}",'
                f'slo="{COST_SLO}"}}',
            )
            if cost_firing and result.cost_alert_at is None:
                result.cost_alert_at = _active_at(prom, page.name, COST_SLO) or now
            pool = twin.pool("inference", POOL) or {}
            acted = journal.query(kind="scale_pool", status="acted")
            if firing and result.alert_at is None:
                result.alert_at = _active_at(prom, page.name) or now
            if acted and result.action_at is None:
                result.action_at = acted[-1].updated
            if (
                result.action_at is not None
                and result.recovered_at is None
                and burn_short is not None
                and burn_short < 1
            ):
                result.recovered_at = now
            fault = "FAULT" if result.fault_at <= now < result.fault_end else "     "
            echo(
                f"{_bar(now - started, duration)} {now - started:4.0f}s {fault} "
                f"burn {long_w}={_num(burn_long)} {short_w}={_num(burn_short)} "
                f"(page at {threshold:g}) alert={'FIRING' if firing else 'ok    '} "
                f"replicas={pool.get('ready', '?')}/{pool.get('replicas', '?')}"
            )
            for incident in incidents.store.query(limit=20):
                if incident.explained is not None and incident.id not in announced:
                    announced.add(incident.id)
                    echo(
                        f"  incident {incident.id[:8]} ({incident.slo}, {incident.tier}), "
                        f"explained {incident.explained - incident.received:.1f} s after the "
                        f"page: {incident.headline()}"
                    )
            if stop_when_recovered and result.recovered_at is not None:
                break
        wait_until = time.time() + 30  # a page explained after the run still counts
        while time.time() < wait_until and any(
            i.explained is None and i.explanation_status == "pending"
            for i in incidents.store.query(limit=20)
        ):
            time.sleep(0.5)
        found = list(reversed(incidents.store.query(limit=100)))
        result.incidents = [i.result() for i in found]
        result.incident_records = [i.public() for i in found]
        result.actions = [e.public() for e in journal.query(limit=100)]
        # The backtest's view of the run: the evaluator over what Prometheus recorded.
        data = sli_from_prometheus(prom.url, cost_slo, started, time.time(), 2.0)
        result.cost_episodes = [
            {"tier": e.tier, "start": e.start, "end": e.end}
            for e in evaluate(cost_slo, data).episodes
            if e.severity == "page"
        ]
        if out is not None:
            result.report = write_report(out, prom, result, long_w, short_w, started, time.time())
    return result


def _active_at(prom: Prometheus, tier: str, slo: str = SLO) -> float | None:
    """When Prometheus started firing the tier's alert (``activeAt``), not when we polled."""
    from datetime import datetime

    for alert in prom.api("alerts")["alerts"]:
        labels = alert["labels"]
        if labels.get("tier") == tier and labels.get("slo") == slo and alert["state"] == "firing":
            return datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()
    return None


def _value(prom: Prometheus, expr: str) -> float | None:
    try:
        result = prom.query(expr)
    except Exception:  # a query during start-up; the next poll tries again
        return None
    return float(result[0]["value"][1]) if result else None


def _num(v: float | None) -> str:
    return "  -  " if v is None else f"{max(v, 0.0):5.1f}"  # -0.0 from float sums reads oddly


def _bar(elapsed: float, total: float, width: int = 20) -> str:
    done = min(width, int(width * elapsed / total))
    return "[" + "#" * done + "." * (width - done) + "]"


def write_report(
    out: Path,
    prom: Prometheus,
    result: DemoResult,
    long_w: str,
    short_w: str,
    start: float,
    end: float,
) -> Path:
    """PNG charts and index.html from Prometheus's own record of the run."""
    sel = f'{{slo="{SLO}"}}'
    throttled_gpu = f'{{{NAMING.host_label}="gpu-node-00",{c.LABEL_GPU}="0"}}'
    util = f"{NAMING.name(c.DCGM_GPU_UTIL)}{throttled_gpu}"
    util_factor = NAMING.factor(c.DCGM_GPU_UTIL)  # 1 for legacy %, 0.01 for a current ratio
    util_percent = util if util_factor == 1.0 else f"{util} * {1 / util_factor:g}"
    charts = {
        "burn-rate.png": (
            "Burn rate",
            {
                f"{long_w} window": f"{burn_rate(long_w)}{sel}",
                f"{short_w} window": f"{burn_rate(short_w)}{sel}",
            },
            result.threshold,
        ),
        "budget.png": (
            "Error budget remaining (1 h period)",
            {"remaining": f"{c.SLO_BUDGET_REMAINING}{sel}"},
            None,
        ),
        "replicas.png": (
            "Pool replicas",
            {
                "desired": f'{c.TWIN_REPLICAS}{{{c.LABEL_POOL}="{POOL}"}}',
                "ready": f'{c.TWIN_READY}{{{c.LABEL_POOL}="{POOL}"}}',
            },
            None,
        ),
        "ttft.png": (
            "TTFT p99 (s)",
            {
                "p99": "histogram_quantile(0.99, sum by (le) (rate("
                f'{c.TIME_TO_FIRST_TOKEN}_bucket{{{c.LABEL_MODEL}="llama-3-70b"}}[10s])))'
            },
            5.0,
        ),
        "gpu.png": (
            "Throttled GPU: temperature (C) and utilisation (%)",
            {
                "temperature": f"{NAMING.name(c.DCGM_GPU_TEMP)}{throttled_gpu}",
                "utilisation": util_percent,
            },
            None,
        ),
    }
    page = Page("gpuslo demo: the loop closing", notes=[result.summary()])
    for name, (title, series, line) in charts.items():
        fig, ax = subplots(figsize=(8, 2.6), dpi=100)
        for label, expr in series.items():
            data = prom.api(
                "query_range", query=expr, start=f"{start:.0f}", end=f"{end:.0f}", step="2"
            )["result"]
            for s in data:
                xs = [float(t) - start for t, _ in s["values"]]
                ys = [float(v) for _, v in s["values"]]
                ax.plot(xs, ys, label=label)
        ax.axvspan(
            result.fault_at - start, result.fault_end - start, color="red", alpha=0.1, label="fault"
        )
        if line is not None:
            ax.axhline(line, color="grey", linestyle="--", linewidth=1)
        top = ax.get_ylim()[1]
        for t, text, y in ((result.alert_at, " page", 1.0), (result.action_at, " scaled", 0.85)):
            if t is not None:
                ax.axvline(t - start, color="black", linewidth=0.8)
                ax.text(t - start, top * y, text, fontsize=8, va="top")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds since start")
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        page.chart(fig, title, file=name)
    section = page.section("Incidents")
    if not result.incident_records:
        section.paragraph("No page reached the hook.")
    for rec in result.incident_records:
        sub = section.section(f"{rec['slo']} ({rec['tier']}), paged at {rec['started_at']}")
        sub.paragraph(rec["summary"])
        causes = rec["explanation"].get("causes", [])
        if causes:
            sub.table(
                (
                    [
                        x["kind"],
                        ", ".join(f"{k}={v}" for k, v in x["entity"].items()),
                        f"{x['score']:.2f}",
                        x.get("summary", ""),
                    ]
                    for x in causes
                ),
                ("cause", "entity", "score", "evidence"),
            )
    page.section("Remediation journal").table(
        ([str(a.get(k, "")) for k in JOURNAL_COLUMNS] for a in reversed(result.actions)),
        JOURNAL_COLUMNS,
    )
    page.write(out / "index.html")
    (out / "result.json").write_text(
        json.dumps(
            {k: v for k, v in result.__dict__.items() if k not in ("report", "incident_records")},
            indent=1,
            default=str,
        )
    )
    return out / "index.html"


def main_echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
