"""The chargeback report: the agent's attribution and request series over a window, read from
Prometheus at one step, allocated with the catalog, and written as CSV, Parquet and HTML."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpuslo.foundation import conventions as c
from gpuslo.foundation.prometheus import instant, on_grid, range_series
from gpuslo.foundation.promql import number
from gpuslo.foundation.report import Page, subplots

from .allocation import (
    IDLE,
    UNATTRIBUTED,
    Costs,
    CpuPod,
    GpuHistory,
    Holding,
    UnitCosts,
    allocate,
)
from .catalog import PriceCatalog

_DEFAULT_NAMING = c.gpu_naming()  # dcgm-exporter's default generation of GPU names


@dataclass
class Window:
    start: float
    end: float
    step: float

    @property
    def n(self) -> int:
        return round((self.end - self.start) / self.step) + 1

    @property
    def seconds(self) -> float:
        return self.n * self.step


def _range(url: str, expr: str, w: Window) -> list[dict[str, Any]]:
    return range_series(url, expr, w.start, w.end, w.step)


def _grid(series: dict[str, Any], w: Window) -> np.ndarray[Any, np.dtype[np.float64]]:
    return on_grid(series, w.start, w.step, w.n)


def load_fleet(
    url: str, catalog: PriceCatalog, w: Window, naming: c.GpuNaming = _DEFAULT_NAMING
) -> list[GpuHistory]:
    """Every GPU with its presence, utilization, power and holders over the window, read in
    ``naming``'s dcgm-exporter generation (names, host label, utilization unit)."""
    gpus: dict[str, GpuHistory] = {}
    host = naming.host_label
    for s in _range(url, f"max by (UUID, {host}) ({c.GPU_UP.name})", w):
        uuid, node = s["metric"].get(c.LABEL_UUID, ""), s["metric"].get(host, "")
        present = np.isfinite(_grid(s, w))
        gpus[uuid] = GpuHistory(uuid, node, present, np.full(w.n, np.nan), catalog.gpu_hour(node))
    # A 0-1 ratio from either generation: legacy exports %, current a ratio (factor 0.01).
    per_ratio = number(100 * naming.factor(c.DCGM_GPU_UTIL))
    for s in _range(url, f"max by (UUID) ({naming.name(c.DCGM_GPU_UTIL)}) / {per_ratio}", w):
        if (g := gpus.get(s["metric"].get(c.LABEL_UUID, ""))) is not None:
            g.util = _grid(s, w)
    for s in _range(url, f"max by (UUID) ({naming.name(c.DCGM_POWER_USAGE)})", w):
        if (g := gpus.get(s["metric"].get(c.LABEL_UUID, ""))) is not None:
            g.power_watts = _grid(s, w)
    mig_util: dict[tuple[str, str], np.ndarray[Any, np.dtype[np.float64]]] = {}
    gr_engine = naming.name(c.DCGM_PROF_GR_ENGINE_ACTIVE)
    for s in _range(url, f"max by (UUID, GPU_I_ID) ({gr_engine})", w):
        m = s["metric"]
        mig_util[(m.get(c.LABEL_UUID, ""), m.get(c.LABEL_GPU_I_ID, ""))] = _grid(s, w)
    by = "UUID, namespace, pod, GPU_I_ID, GPU_I_PROFILE"
    holds = _range(url, f"max by ({by}) ({c.GPU_POD_INFO.name})", w)
    held_at = [np.isfinite(_grid(s, w)).astype(np.float64) for s in holds]
    whole: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    for s, held in zip(holds, held_at, strict=True):  # pods holding each whole GPU (slicing)
        if not s["metric"].get(c.LABEL_GPU_I_PROFILE):
            uuid = s["metric"].get(c.LABEL_UUID, "")
            whole[uuid] = whole.get(uuid, np.zeros(w.n)) + held
    for s, held in zip(holds, held_at, strict=True):
        m = s["metric"]
        g = gpus.get(m.get(c.LABEL_UUID, ""))
        if g is None:
            continue
        profile = m.get(c.LABEL_GPU_I_PROFILE)
        if profile:
            share = held * catalog.mig_fraction(profile)
            util = mig_util.get((g.uuid, m.get(c.LABEL_GPU_I_ID, "")))
        else:
            k = whole[g.uuid]
            share = np.divide(held, k, out=np.zeros(w.n), where=k > 0)
            util = None
        g.holdings.append(
            Holding(m.get(c.LABEL_NAMESPACE, ""), m.get(c.LABEL_POD, ""), share, util)
        )
    return list(gpus.values())


def load_cpu_pods(url: str, w: Window, gpu_pods: set[tuple[str, str]]) -> list[CpuPod]:
    """Pods that hold no GPU, with their CPU and memory requests (kube-state-metrics)."""
    found: dict[tuple[str, str], CpuPod] = {}
    for resource, scale in (("cpu", 1.0), ("memory", 1 / 2**30)):
        expr = f'sum by (namespace, pod) ({c.KSM_POD_REQUESTS}{{resource="{resource}"}})'
        for s in _range(url, expr, w):
            key = (s["metric"].get("namespace", ""), s["metric"].get("pod", ""))
            if key in gpu_pods:
                continue  # a GPU pod's CPUs come with its GPU price
            pod = found.setdefault(key, CpuPod(*key, np.zeros(w.n), np.zeros(w.n)))
            values = np.nan_to_num(_grid(s, w)) * scale
            if resource == "cpu":
                pod.vcpus = values
            else:
                pod.memory_gib = values
    return list(found.values())


def load_traffic(
    url: str, w: Window, goodput_ttft: float | None = None
) -> tuple[dict[tuple[str, str], str], dict[str, dict[tuple[str, str], float]]]:
    """The pod -> model map, and requests, good requests and tokens by (model, tenant)."""
    rng = f"[{round(w.seconds)}s]"
    at = w.end
    pods = {}
    for r in instant(
        url, f'group by (namespace, pod, model) (last_over_time({{model!="",pod!=""}}{rng}))', at
    ):
        m = r["metric"]
        pods[(m.get("namespace", ""), m["pod"])] = m["model"]
    counts: dict[str, dict[tuple[str, str], float]] = {}
    queries = {
        "requests": f"sum by (model, tenant) (increase({c.REQUESTS_TOTAL}{rng}))",
        **{
            kind: f"sum by (model, tenant) "
            f'(increase({c.TOKEN_USAGE_TOTAL}{{token_type="{kind}"}}{rng}))'
            for kind in ("input", "output")
        },
    }
    if goodput_ttft is not None:
        from gpuslo.foundation.promql import bucket_le_matcher

        le = bucket_le_matcher(goodput_ttft)
        queries["good"] = (
            f"sum by (model, tenant) (increase({c.TIME_TO_FIRST_TOKEN}_bucket{{{le}}}{rng}))"
        )
    for name, expr in queries.items():
        counts[name] = {
            (r["metric"].get("model", ""), r["metric"].get("tenant", "")): float(r["value"][1])
            for r in instant(url, expr, at)
        }
    return pods, counts


def rows(costs: Costs, counts: dict[str, dict[tuple[str, str], float]]) -> list[dict[str, Any]]:
    """One row per (model, tenant), plus unattributed and idle rows."""
    out = []
    for (model, tenant), dollars in sorted(costs.tenants.items()):
        key = (model, tenant)
        unit = UnitCosts(
            counts.get("requests", {}).get(key, 0.0),
            counts["good"].get(key) if "good" in counts else None,
            counts.get("input", {}).get(key, 0.0),
            counts.get("output", {}).get(key, 0.0),
            dollars,
        )
        share = dollars / costs.allocated[model] if costs.allocated.get(model) else 0.0
        joules = costs.energy_joules.get(model)
        unit.joules = None if joules is None else joules * share
        out.append(
            {
                "model": model,
                "tenant": tenant,
                "allocated_dollars": dollars,
                "used_dollars": costs.tenants_used.get(key, 0.0),
                "requests": unit.requests,
                "input_tokens": unit.input_tokens,
                "output_tokens": unit.output_tokens,
                "dollars_per_1k_requests": unit.per_1k_requests,
                "dollars_per_1m_tokens": unit.per_1m_tokens,
                "dollars_per_1m_output_tokens": unit.per_1m_output_tokens,
                "dollars_per_1k_good_requests": unit.per_1k_good_requests,
                "joules_per_token": unit.joules_per_token,
            }
        )
    for name, alloc, used in (
        (UNATTRIBUTED, costs.unattributed, costs.unattributed_used),
        (IDLE, costs.idle, costs.idle_used),
    ):
        out.append({"model": name, "tenant": "", "allocated_dollars": alloc, "used_dollars": used})
    return out


def write(out: Path, table: list[dict[str, Any]], costs: Costs, meta: dict[str, Any]) -> None:
    """report.csv, report.parquet, report.json and report.html in ``out``."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(table)
    frame.to_csv(out / "report.csv", index=False)
    frame.to_parquet(out / "report.parquet", index=False)
    summary = {
        **meta,
        "bill_dollars": costs.bill,
        "cpu_bill_dollars": costs.cpu_bill,
        "allocated_dollars": sum(costs.allocated.values()),
        "unattributed_dollars": costs.unattributed,
        "idle_dollars": costs.idle,
        "idle_dollars_usage_basis": costs.idle_used,
        "unpriced_gpu_seconds": costs.unpriced_gpu_seconds,
        "reconciles": costs.reconciles(),
    }
    (out / "report.json").write_text(
        json.dumps(
            {"summary": summary, "rows": frame.to_dict(orient="records")}, indent=1, default=float
        )
        + "\n"
    )
    _html(out, frame, summary)


def _html(out: Path, frame: Any, summary: dict[str, Any]) -> None:
    page = Page(
        "gpuslo cost report",
        notes=[
            f"{summary.get('from')} to {summary.get('to')}; catalog as of {summary.get('as_of')}."
        ],
    )
    money = [(k, float(v)) for k, v in summary.items() if k.endswith("dollars")]
    page.table(money, row_headers=True)
    charged = frame[~frame["model"].isin([IDLE, UNATTRIBUTED])]
    fig, ax = subplots(figsize=(9, 3.5))
    labels = [f"{m}/{t}" for m, t in zip(charged["model"], charged["tenant"], strict=True)]
    ax.barh(labels, charged["allocated_dollars"], color="tab:blue", label="allocated")
    ax.barh(labels, charged["used_dollars"], color="tab:green", label="used (utilization)")
    ax.set_xlabel(f"{summary.get('currency', 'USD')} over the window")
    ax.legend(fontsize=8)
    fig.tight_layout()
    page.chart(fig, "cost by model and tenant", file="cost.png", dpi=90)
    page.table(frame.to_dict(orient="records"), list(frame.columns))
    page.write(out / "report.html")


def build(
    url: str,
    catalog: PriceCatalog,
    w: Window,
    share_idle: str = "none",
    goodput_ttft: float | None = None,
    naming: c.GpuNaming = _DEFAULT_NAMING,
) -> tuple[Costs, list[dict[str, Any]]]:
    gpus = load_fleet(url, catalog, w, naming)
    pods, counts = load_traffic(url, w, goodput_ttft)
    cpu_pods: list[CpuPod] = []
    prices = None
    if catalog.cpu is not None:
        held = {(h.namespace, h.pod) for g in gpus for h in g.holdings}
        cpu_pods = load_cpu_pods(url, w, held)
        prices = (catalog.cpu.per_vcpu_hour, catalog.cpu.per_gib_hour)
    costs = allocate(
        gpus,
        w.step,
        pods,
        counts.get("requests", {}),
        share_idle,  # type: ignore[arg-type]
        cpu_pods,
        prices,
    )
    return costs, rows(costs, counts)
