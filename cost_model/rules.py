"""The cost model as Prometheus recording rules, so Prometheus computes it continuously.

Each rule is the per-second form of what ``allocation.allocate`` integrates: GPU price, each
pod's share of each GPU, pod, model and tenant cost, the fleet bill, idle and unattributed
cost, and unit costs. Summing a rule's samples over a window times the evaluation interval
gives the report's dollars for that window.
"""

from __future__ import annotations

import re
from typing import Any

from gpuslo.foundation import conventions as c
from gpuslo.foundation.promql import number, quote

from .catalog import PriceCatalog

GPU_PRICE = c.COST_GPU_PRICE
POD_SHARE = c.COST_POD_SHARE
POD_GPU_COST = c.COST_POD_GPU
POD_CPU_COST = c.COST_POD_CPU
POD_COST = c.COST_POD
MODEL_COST = c.COST_MODEL
TENANT_COST = c.COST_TENANT
FLEET_COST = c.COST_FLEET
IDLE_COST = c.COST_IDLE
UNATTRIBUTED_COST = c.COST_UNATTRIBUTED
PER_1K_REQUESTS = c.COST_PER_1K_REQUESTS
PER_1M_TOKENS = c.COST_PER_1M_TOKENS
RATE = "5m"
_DEFAULT_NAMING = c.gpu_naming()  # dcgm-exporter's default generation of GPU names
MODEL_OF_POD = 'group by (namespace, pod, model) ({model!="", pod!=""})'


def _gpu_price(catalog: PriceCatalog, naming: c.GpuNaming) -> str:
    """$/s per GPU; the node rules in order, so the first match wins (``or`` keeps the left
    side's series). Node patterns match the generation's host label (``Hostname`` or
    ``hostname``)."""
    parts = []
    host = naming.host_label
    for rule in catalog.nodes:
        price = catalog.gpus[rule.gpu][rule.pricing] / 3600
        sel = f"{host}=~{quote(rule.match)}"
        parts.append(
            f"(max by ({c.LABEL_UUID}, {host}) ({c.GPU_UP.name}{{{sel}}}) * 0 + {number(price)})"
        )
    return "\n  or ".join(parts)


def _mig_shares(catalog: PriceCatalog) -> list[str]:
    """One term per MIG profile pattern: the catalog's fractions first, then n/7 for nGs."""
    terms = []
    for profile, share in sorted(catalog.mig.items()):
        terms.append((f'{c.LABEL_GPU_I_PROFILE}="{profile}"', share))
    for slices in (1, 2, 3, 4, 7):
        terms.append((f'{c.LABEL_GPU_I_PROFILE}=~"{slices}g\\\\..*"', slices / 7))
    by = "UUID, namespace, pod, GPU_I_ID, GPU_I_PROFILE"
    return [
        f"(max by ({by}) ({c.GPU_POD_INFO.name}{{{sel}}}) * 0 + {number(share)})"
        for sel, share in terms
    ]


def rule_groups(
    catalog: PriceCatalog, naming: c.GpuNaming = _DEFAULT_NAMING
) -> list[dict[str, Any]]:
    """The cost recording rules; GPU series read in ``naming``'s dcgm-exporter generation."""
    whole = f'max by (UUID, namespace, pod) ({c.GPU_POD_INFO.name}{{{c.LABEL_GPU_I_PROFILE}=""}})'
    share = (
        f"sum by (UUID, namespace, pod) (\n  {whole}\n  / on (UUID) group_left\n"
        f"  count by (UUID) ({whole})\n"
        f"  or\n  " + "\n  or ".join(_mig_shares(catalog)) + "\n)"
    )
    requests = f"sum by (model, tenant) (rate({c.REQUESTS_TOTAL}[{RATE}]))"
    tokens = f"sum by (model) (rate({c.TOKEN_USAGE_TOTAL}[{RATE}]))"
    rules: list[dict[str, Any]] = [
        {"record": GPU_PRICE, "expr": _gpu_price(catalog, naming)},
        {"record": POD_SHARE, "expr": share},
        {
            "record": POD_GPU_COST,
            "expr": f"sum by (namespace, pod) ({POD_SHARE} * on (UUID) group_left {GPU_PRICE})",
        },
        *_cpu_rules(catalog),
        {
            "record": MODEL_COST,
            "expr": f"sum by (model) ({POD_COST} * on (namespace, pod) group_left (model) "
            f"{MODEL_OF_POD})",
        },
        {
            "record": FLEET_COST,
            "expr": f"sum({GPU_PRICE}) + (sum({POD_CPU_COST}) or vector(0))"
            if catalog.cpu is not None
            else f"sum({GPU_PRICE})",
        },
        {"record": IDLE_COST, "expr": f"sum({GPU_PRICE}) - (sum({POD_GPU_COST}) or vector(0))"},
        {
            "record": UNATTRIBUTED_COST,
            "expr": f"(sum({POD_COST}) or vector(0)) - (sum({MODEL_COST}) or vector(0))",
        },
        {
            "record": TENANT_COST,
            "expr": f"({requests} / on (model) group_left sum by (model) ({requests}))\n"
            f"  * on (model) group_left {MODEL_COST}",
        },
        {
            "record": PER_1K_REQUESTS,
            "expr": f"{MODEL_COST} / on (model) sum by (model) ({requests}) * 1000",
        },
        {"record": PER_1M_TOKENS, "expr": f"{MODEL_COST} / on (model) {tokens} * 1e6"},
    ]
    return [{"name": c.COST_RULE_GROUP, "rules": rules}]


def _cpu_rules(catalog: PriceCatalog) -> list[dict[str, Any]]:
    """Pods without GPUs pay their CPU and memory requests (kube-state-metrics); a pod's
    cost is its GPU cost, else its CPU cost."""
    if catalog.cpu is None:
        return [{"record": POD_COST, "expr": POD_GPU_COST}]
    req = f'sum by (namespace, pod) ({c.KSM_POD_REQUESTS}{{{{resource="{{}}"}}}})'
    cpu = req.format("cpu")
    mem = req.format("memory")
    vcpu, gib = catalog.cpu.per_vcpu_hour / 3600, catalog.cpu.per_gib_hour / 3600
    return [
        {
            "record": POD_CPU_COST,
            "expr": f"({cpu} * {number(vcpu)} + on (namespace, pod) {mem} / 1073741824 * "
            f"{number(gib)})\n  unless on (namespace, pod) {POD_GPU_COST}",
        },
        {"record": POD_COST, "expr": f"{POD_GPU_COST} or {POD_CPU_COST}"},
    ]


def check_regexes(catalog: PriceCatalog) -> list[str]:
    """Node patterns Prometheus (RE2) might read differently from Python: lookarounds and
    backreferences."""
    bad = []
    for rule in catalog.nodes:
        if re.search(r"\(\?[=!<]|\\[1-9]", rule.match):
            bad.append(rule.match)
    return bad
