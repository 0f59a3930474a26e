"""Grafana dashboards as code (grafana-foundation-sdk), generated from the SLO specs and the
naming contract, so they never drift from the alerts.

Dashboards: SLO overview (every SLO: objective, SLI, budget remaining, burn rates, firing
tiers), one drill-down per SLO (budget burn-down, burn rates against each tier's threshold,
firing tiers), GPU fleet, fabric, requests and cost. Template variables: datasource, cluster,
model, tenant, node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphDrawStyle
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from gpuslo.cost_model import rules as cost
from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import format_duration
from gpuslo.slo_engine.model import SLO
from gpuslo.slo_engine.rules import (
    BUDGET_REMAINING,
    OBJECTIVE,
    alert_rules,
    burn_rate,
    error_ratio,
    period_name,
    selector,
    shared_names,
    windows,
)

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
REQ_SEL = 'model=~"$model", tenant=~"$tenant"'
_DEFAULT_NAMING = c.gpu_naming()


def _gpu_sel(naming: c.GpuNaming) -> str:
    """The node and cluster selector on GPU and fabric series, by the generation's host label."""
    return f'{naming.host_label}=~"$node", cluster=~"$cluster"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def _panel(
    title: str,
    queries: Sequence[Query],
    unit: str = "",
    kind: str = "timeseries",
    width: int = 12,
    description: str = "",
) -> Any:
    if kind == "stat":
        p: Any = stat.Panel().title(title).datasource(DS).height(5).span(width)
    else:
        p = (
            timeseries.Panel()
            .title(title)
            .datasource(DS)
            .height(8)
            .span(width)
            .draw_style(GraphDrawStyle.LINE)
            .fill_opacity(10)
        )
    if unit:
        p = p.unit(unit)
    if description:
        p = p.description(description)
    for i, q in enumerate(queries):
        target = prometheus.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i))
        if q.legend:
            target = target.legend_format(q.legend)
        p = p.with_target(target)
    return p


def _variables(d: Any, names: Iterable[str], naming: c.GpuNaming = _DEFAULT_NAMING) -> Any:
    d = d.with_variable(
        dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    )
    queries = {
        "cluster": f"label_values({c.GPU_UP.name}, cluster)",
        "node": f'label_values({c.GPU_UP.name}{{cluster=~"$cluster"}}, {naming.host_label})',
        "model": f"label_values({c.REQUESTS_TOTAL}, model)",
        "tenant": f'label_values({c.REQUESTS_TOTAL}{{model=~"$model"}}, tenant)',
    }
    for name in names:
        d = d.with_variable(
            dashboard.QueryVariable(name)
            .label(name)
            .datasource(DS)
            .query(queries[name])
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    return d


def _dashboard(
    uid: str, title: str, variables: Iterable[str], naming: c.GpuNaming = _DEFAULT_NAMING
) -> Any:
    d = (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["gpuslo"])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("utc")
        .editable()
    )
    return _variables(d, variables, naming)


def _firing(slo: SLO) -> list[Query]:
    """Each tier's alert condition: it returns the long-window burn rate while it fires."""
    out = []
    for rule in alert_rules(slo):
        if rule["alert"] == slo.alert_name:
            expr = " ".join(rule["expr"].split())
            out.append(Query(expr, f"{rule['labels'][c.LABEL_TIER]} firing"))
    return out


def slo_overview(slos: Sequence[SLO]) -> Any:
    d = _dashboard("gpuslo-slo-overview", "gpuslo / SLO overview", [])
    for slo in sorted(slos, key=lambda s: (s.name, s.service)):
        sel = selector(slo, qualified=True)  # service too: a name may be another service's
        period = period_name(slo)
        d = d.with_row(dashboard.Row(f"{slo.name} ({slo.service}, {slo.kind})"))
        d = d.with_panel(
            _panel("Objective", [Query(f"{OBJECTIVE}{sel}")], "percentunit", "stat", 4)
        )
        d = d.with_panel(
            _panel(
                f"SLI over {period}",
                [Query(f"1 - {error_ratio(period)}{sel}")],
                "percentunit",
                "stat",
                4,
            )
        )
        d = d.with_panel(
            _panel(
                "Budget remaining", [Query(f"{BUDGET_REMAINING}{sel}")], "percentunit", "stat", 4
            )
        )
        d = d.with_panel(
            _panel(
                "Burn rate per window",
                [Query(f"{burn_rate(w)}{sel}", w) for w in windows(slo)],
                width=6,
            )
        )
        d = d.with_panel(_panel("Firing tiers", _firing(slo), width=6))
    return d


def slo_detail(slo: SLO, qualified: bool = False) -> Any:
    """One SLO's drill-down; ``qualified``: its name is shared with another service's SLO, so
    the uid and title name the service too."""
    sel = selector(slo, qualified=True)
    ident = f"{slo.service}-{slo.name}" if qualified else slo.name
    title = f"{slo.name} ({slo.service})" if qualified else slo.name
    d = _dashboard(f"gpuslo-slo-{ident}"[:40], f"gpuslo / SLO {title}", [])
    d = d.with_panel(
        _panel(
            "Error budget remaining (burn-down)",
            [Query(f"{BUDGET_REMAINING}{sel}", "remaining")],
            "percentunit",
            width=24,
        )
    )
    for tier in slo.tiers:
        long_w = format_duration(tier.long_window)
        short_w = format_duration(tier.short_window)
        factor = tier.factor(slo.period)
        d = d.with_panel(
            _panel(
                f"{tier.name}: burn rate vs threshold {factor:g}",
                [
                    Query(f"{burn_rate(long_w)}{sel}", long_w),
                    Query(f"{burn_rate(short_w)}{sel}", short_w),
                    Query(f"{burn_rate(long_w)}{sel} * 0 + {factor:.12g}", "threshold"),
                ],
            )
        )
    d = d.with_panel(
        _panel(
            "Firing tiers",
            _firing(slo),
            width=24,
            description="Causes: gpuslo explain --slo " + slo.name,
        )
    )
    return d


def gpu_fleet(naming: c.GpuNaming = _DEFAULT_NAMING) -> Any:
    """GPUs up, utilization, power, temperature, throttling and XIDs per node, in the series
    names and host label of one dcgm-exporter generation."""
    d = _dashboard("gpuslo-gpu-fleet", "gpuslo / GPU fleet", ["cluster", "node"], naming)
    host, sel = naming.host_label, _gpu_sel(naming)
    legend = f"{{{{{host}}}}}"
    gpu_legend = f"{{{{{host}}}}}/{{{{gpu}}}}"
    # Utilization is a percentage in legacy naming and a 0-1 ratio in current (factor 0.01).
    util_unit = "percent" if naming.factor(c.DCGM_GPU_UTIL) == 1.0 else "percentunit"
    panels = [
        (
            "GPUs up",
            [Query(f"sum by ({host}) ({c.GPU_UP.name}{{{sel}}})", legend)],
            "",
        ),
        (
            "GPU utilization",
            [Query(f"avg by ({host}) ({naming.name(c.DCGM_GPU_UTIL)}{{{sel}}})", legend)],
            util_unit,
        ),
        (
            "Power",
            [Query(f"sum by ({host}) ({naming.name(c.DCGM_POWER_USAGE)}{{{sel}}})", legend)],
            "watt",
        ),
        (
            "Temperature (max)",
            [Query(f"max by ({host}) ({naming.name(c.DCGM_GPU_TEMP)}{{{sel}}})", legend)],
            "celsius",
        ),
        (
            "Throttled seconds per second",
            [
                Query(
                    f"sum by ({host}, gpu, reason) (rate({c.GPU_THROTTLE_SECONDS.name}"
                    f"{{{sel}}}[$__rate_interval]))",
                    f"{gpu_legend} {{{{reason}}}}",
                )
            ],
            "",
        ),
        (
            "XID errors",
            [
                Query(
                    f"sum by ({host}, gpu, xid) ({c.GPU_XID_ERRORS.name}{{{sel}}})",
                    f"{gpu_legend} xid {{{{xid}}}}",
                )
            ],
            "",
        ),
    ]
    for title, queries, unit in panels:
        d = d.with_panel(_panel(title, queries, unit))
    return d


def fabric(naming: c.GpuNaming = _DEFAULT_NAMING) -> Any:
    """NVLink and InfiniBand/RoCE health per node, by the generation's host label."""
    d = _dashboard(
        "gpuslo-fabric", "gpuslo / fabric (NVLink, InfiniBand/RoCE)", ["cluster", "node"], naming
    )
    host, sel = naming.host_label, _gpu_sel(naming)
    legend = f"{{{{{host}}}}}"
    panels = [
        (
            "NVLink CRC flit errors /s",
            [
                Query(
                    f"sum by ({host}, gpu) (rate({c.GPU_NVLINK_CRC_FLIT_ERRORS.name}"
                    f"{{{sel}}}[$__rate_interval]))",
                    f"{legend}/{{{{gpu}}}}",
                )
            ],
            "",
        ),
        (
            "InfiniBand port state (4 = active)",
            [
                Query(
                    f"min by ({host}, device) ({c.IB_STATE_ID.name}{{{sel}}})",
                    f"{legend} {{{{device}}}}",
                )
            ],
            "",
        ),
        (
            "InfiniBand link error recoveries /s",
            [
                Query(
                    f"sum by ({host}) (rate({c.IB_PREFIX}link_error_recovery_total"
                    f"{{{sel}}}[$__rate_interval]))",
                    legend,
                )
            ],
            "",
        ),
        (
            "InfiniBand transmitted",
            [
                Query(
                    f"sum by ({host}) (rate({c.IB_PREFIX}port_data_transmitted_bytes_total"
                    f"{{{sel}}}[$__rate_interval]))",
                    legend,
                )
            ],
            "Bps",
        ),
    ]
    for title, queries, unit in panels:
        d = d.with_panel(_panel(title, queries, unit))
    return d


def requests() -> Any:
    d = _dashboard("gpuslo-requests", "gpuslo / requests", ["model", "tenant"])
    for title, metric in (
        ("Time to first token", c.TIME_TO_FIRST_TOKEN),
        ("Time per output token", c.TIME_PER_OUTPUT_TOKEN),
        ("End-to-end duration", c.REQUEST_DURATION),
    ):
        queries = [
            Query(
                f"histogram_quantile({q}, sum by (model, le) (rate({metric}_bucket{{{REQ_SEL}}}"
                f"[$__rate_interval])))",
                f"{{{{model}}}} p{round(q * 100)}",
            )
            for q in (0.5, 0.99)
        ]
        d = d.with_panel(_panel(title, queries, "s"))
    d = d.with_panel(
        _panel(
            "Requests by outcome",
            [
                Query(
                    f"sum by (model, outcome) (rate({c.REQUESTS_TOTAL}{{{REQ_SEL}}}"
                    f"[$__rate_interval]))",
                    "{{model}} {{outcome}}",
                )
            ],
            "reqps",
        )
    )
    d = d.with_panel(
        _panel(
            "Tokens by model and tenant",
            [
                Query(
                    f"sum by (model, tenant, token_type) (rate({c.TOKEN_USAGE_TOTAL}{{{REQ_SEL}}}"
                    f"[$__rate_interval]))",
                    "{{model}}/{{tenant}} {{token_type}}",
                )
            ],
            "",
        )
    )
    return d


def cost_dashboard() -> Any:
    d = _dashboard("gpuslo-cost", "gpuslo / cost", ["model", "tenant"])
    panels = [
        (
            "Cost per hour by model",
            [Query(f'{cost.MODEL_COST}{{model=~"$model"}} * 3600', "{{model}}")],
            "currencyUSD",
        ),
        (
            "Cost per hour by tenant",
            [Query(f"{cost.TENANT_COST}{{{REQ_SEL}}} * 3600", "{{model}}/{{tenant}}")],
            "currencyUSD",
        ),
        (
            "Fleet, idle and unattributed per hour",
            [
                Query(f"{cost.FLEET_COST} * 3600", "fleet"),
                Query(f"{cost.IDLE_COST} * 3600", "idle"),
                Query(f"{cost.UNATTRIBUTED_COST} * 3600", "unattributed"),
            ],
            "currencyUSD",
        ),
        (
            "Cost per 1M tokens",
            [Query(f'{cost.PER_1M_TOKENS}{{model=~"$model"}}', "{{model}}")],
            "currencyUSD",
        ),
        (
            "Cost per 1k requests",
            [Query(f'{cost.PER_1K_REQUESTS}{{model=~"$model"}}', "{{model}}")],
            "currencyUSD",
        ),
    ]
    for title, queries, unit in panels:
        d = d.with_panel(_panel(title, queries, unit))
    return d


def drift_dashboard() -> Any:
    d = _dashboard("gpuslo-drift", "gpuslo / drift", ["model"])
    sel = '{model=~"$model"}'
    panels = [
        (
            "Dataset drift (1 = drifted)",
            [Query(f"gpuslo_drift_dataset_detected{sel}", "{{model}}")],
            "",
        ),
        (
            "Share of features drifted",
            [Query(f"gpuslo_drift_share{sel}", "{{model}}")],
            "percentunit",
        ),
        ("Drifted features", [Query(f"gpuslo_drift_detected{sel}", "{{model}} {{feature}}")], ""),
        (
            "Drift test value per feature",
            [Query(f"gpuslo_drift_score{sel}", "{{model}} {{feature}} ({{method}})")],
            "",
        ),
    ]
    for title, queries, unit in panels:
        d = d.with_panel(_panel(title, queries, unit))
    return d


def all_dashboards(slos: Sequence[SLO], naming: c.GpuNaming = _DEFAULT_NAMING) -> dict[str, Any]:
    """Every dashboard, built, by file name; GPU series in ``naming``'s generation."""
    built = [
        slo_overview(slos),
        gpu_fleet(naming),
        fabric(naming),
        requests(),
        cost_dashboard(),
        drift_dashboard(),
    ]
    shared = shared_names(slos)
    built += [
        slo_detail(s, s.name in shared) for s in sorted(slos, key=lambda s: (s.name, s.service))
    ]
    return {f"{b.build().uid}.json": b.build() for b in built}


def write(
    out: Path, slos: Sequence[SLO], folder: str = "gpuslo", naming: c.GpuNaming = _DEFAULT_NAMING
) -> list[Path]:
    """The dashboards' JSON and a Grafana provisioning file pointing at them."""
    out.mkdir(parents=True, exist_ok=True)
    encoder = JSONEncoder(sort_keys=True, indent=2)
    paths = []
    for name, model in all_dashboards(slos, naming).items():
        path = out / name
        path.write_text(encoder.encode(model) + "\n")
        paths.append(path)
    provisioning = out / "provisioning.yaml"
    provisioning.write_text(
        "# Grafana dashboard provisioning: copy to /etc/grafana/provisioning/dashboards/ and\n"
        "# point options.path at the directory holding the JSON files.\n"
        + json.dumps(
            {
                "apiVersion": 1,
                "providers": [
                    {
                        "name": "gpuslo",
                        "folder": folder,
                        "type": "file",
                        "disableDeletion": False,
                        "allowUiUpdates": False,
                        "options": {"path": str(out.resolve())},
                    }
                ],
            },
            indent=2,
        )
        + "\n"
    )
    paths.append(provisioning)
    return paths


def panel_queries(model: Any) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel of a built dashboard."""
    data = json.loads(JSONEncoder().encode(model))
    out = []
    for panel in data.get("panels", []):
        for target in panel.get("targets", []) or []:
            if target.get("expr"):
                out.append((panel.get("title", ""), target["expr"]))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's template variables in an expression, for running it outside Grafana."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def check(
    url: str,
    dashboards: dict[str, Any],
    values: dict[str, str],
    start: float,
    end: float,
    step: float = 60.0,
) -> list[tuple[str, str, str]]:
    """Run every panel query (variables substituted) as a range query; returns the
    (dashboard, panel, expr) of every query that returned no data or failed."""
    from gpuslo.foundation.prometheus import HistoryError, range_series

    missing = []
    for name, model in dashboards.items():
        for title, expr in panel_queries(model):
            query = substitute(expr, values)
            try:
                result = range_series(url, query, start, end, step, timeout=120)
            except HistoryError as err:
                missing.append((name, title, f"{query}: {err}"))
                continue
            if not any(s.get("values") for s in result):
                missing.append((name, title, query))
    return missing
