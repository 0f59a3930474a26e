"""GPU-seconds to dollars, allocated to pods, models and tenants.

Per evaluation step and GPU:

- the **bill**: every GPU that reports (``gpuslo_gpu_up`` has a sample, up or down: a lost
  GPU is still paid for) costs its catalog price for the step;
- **allocation basis**: each pod holding the GPU gets its share of that price: a MIG
  instance its profile's fraction, a whole GPU held by k pods at once (time-slicing) 1/k
  each. What no pod holds is **idle**;
- **usage basis**: the same shares weighted by utilization (the instance's own engine
  activity for MIG, the GPU's utilization otherwise); the rest of the bill is idle.

A pod's cost goes to the model it serves (any series with both ``model`` and ``pod`` labels);
a pod with no known model stays **unattributed**, never spread. A model's cost is split among
tenants by their share of its requests over the window; a model without requests keeps its
cost under tenant ``(no traffic)``. Idle cost is reported apart, and optionally shared back
to models evenly or by their usage. The totals reconcile: allocated + unattributed + idle =
the bill, in each basis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
NO_TRAFFIC = "(no traffic)"
UNATTRIBUTED = "(unattributed)"
IDLE = "(idle)"


@dataclass
class Holding:
    """One pod's hold on one GPU: its share of the GPU at each step (0 when it does not hold
    it), and its own utilization when it has one (a MIG instance)."""

    namespace: str
    pod: str
    share: Array
    util: Array | None = None


@dataclass
class GpuHistory:
    uuid: str
    node: str
    present: npt.NDArray[np.bool_]  # billed at each step
    util: Array  # 0..1, NaN where unknown
    price_per_hour: float | None  # None: no catalog price (reported, not billed)
    holdings: list[Holding] = field(default_factory=list)
    power_watts: Array | None = None


@dataclass
class CpuPod:
    """A pod without GPUs (the CPU fallback): what it requests at each step."""

    namespace: str
    pod: str
    vcpus: Array
    memory_gib: Array


@dataclass
class Costs:
    """Dollars over the window, in the two bases, by model and tenant."""

    bill: float = 0.0
    cpu_bill: float = 0.0  # part of the bill: CPU pods' requests
    unpriced_gpu_seconds: float = 0.0
    allocated: dict[str, float] = field(default_factory=dict)  # by model
    used: dict[str, float] = field(default_factory=dict)  # by model (usage basis)
    by_pod: dict[tuple[str, str], float] = field(default_factory=dict)
    unattributed: float = 0.0
    unattributed_used: float = 0.0
    idle: float = 0.0  # allocation basis
    idle_used: float = 0.0  # usage basis
    energy_joules: dict[str, float] = field(default_factory=dict)  # by model, by allocation
    tenants: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, tenant)
    tenants_used: dict[tuple[str, str], float] = field(default_factory=dict)

    def charge(
        self,
        pod: tuple[str, str],
        pod_model: Mapping[tuple[str, str], str],
        dollars: float,
        dollars_used: float,
    ) -> str | None:
        """Book a pod's dollars to its model, or to unattributed; returns the model."""
        self.by_pod[pod] = self.by_pod.get(pod, 0.0) + dollars
        model = pod_model.get(pod)
        if model is None:
            self.unattributed += dollars
            self.unattributed_used += dollars_used
        else:
            self.allocated[model] = self.allocated.get(model, 0.0) + dollars
            self.used[model] = self.used.get(model, 0.0) + dollars_used
        return model

    def reconciles(self, tol: float = 1e-9) -> bool:
        a = sum(self.allocated.values()) + self.unattributed + self.idle
        u = sum(self.used.values()) + self.unattributed_used + self.idle_used
        scale = max(1.0, abs(self.bill))
        return abs(a - self.bill) <= tol * scale and abs(u - self.bill) <= tol * scale


def allocate(
    gpus: Iterable[GpuHistory],
    step: float,
    pod_model: Mapping[tuple[str, str], str],
    requests: Mapping[tuple[str, str], float],
    share_idle: Literal["none", "even", "usage"] = "none",
    cpu_pods: Iterable[CpuPod] = (),
    cpu_prices: tuple[float, float] | None = None,
) -> Costs:
    """Dollars per model and tenant over the window the arrays cover (``step`` seconds each).

    ``pod_model`` maps (namespace, pod) to a model; ``requests`` maps (model, tenant) to the
    requests it served over the window. CPU pods (no GPU) pay their requested vCPUs and
    memory at ``cpu_prices`` ($ per vCPU-hour, $ per GiB-hour); they have no idle part and
    their usage basis is their allocation."""
    out = Costs()
    if cpu_prices is not None:
        per_vcpu, per_gib = (p / 3600.0 * step for p in cpu_prices)
        for pod in cpu_pods:
            dollars = float(
                (
                    np.nan_to_num(pod.vcpus) * per_vcpu + np.nan_to_num(pod.memory_gib) * per_gib
                ).sum()
            )
            out.bill += dollars
            out.cpu_bill += dollars
            out.charge((pod.namespace, pod.pod), pod_model, dollars, dollars)
    for gpu in gpus:
        present = gpu.present.astype(np.float64)
        if gpu.price_per_hour is None:
            out.unpriced_gpu_seconds += float(present.sum()) * step
            continue
        per_step = gpu.price_per_hour / 3600.0 * step
        out.bill += float(present.sum()) * per_step
        held = np.zeros_like(present)
        used = np.zeros_like(present)
        for h in gpu.holdings:
            share = np.nan_to_num(h.share) * present
            util = h.util if h.util is not None else gpu.util
            busy = share * np.clip(np.nan_to_num(util), 0.0, 1.0)
            dollars, dollars_used = float(share.sum()) * per_step, float(busy.sum()) * per_step
            held += share
            used += busy
            model = out.charge((h.namespace, h.pod), pod_model, dollars, dollars_used)
            if model is not None and gpu.power_watts is not None:
                joules = float((np.nan_to_num(gpu.power_watts) * share).sum()) * step
                out.energy_joules[model] = out.energy_joules.get(model, 0.0) + joules
        out.idle += float(np.clip(present - held, 0.0, None).sum()) * per_step
        out.idle_used += float((present - used).sum()) * per_step
    if share_idle != "none":
        _share_idle(out, share_idle)
    _split_tenants(out, requests)
    return out


def _share_idle(out: Costs, how: str) -> None:
    """Move idle cost onto the models: evenly, or in proportion to their usage-basis cost."""
    models = sorted(out.allocated)
    if not models:
        return
    if how == "even":
        weights = {m: 1.0 for m in models}
    else:
        weights = {m: out.used.get(m, 0.0) for m in models}
    total = sum(weights.values())
    if total <= 0:
        return
    for m in models:
        out.allocated[m] += out.idle * weights[m] / total
        out.used[m] += out.idle_used * weights[m] / total
    out.idle = out.idle_used = 0.0


def _split_tenants(out: Costs, requests: Mapping[tuple[str, str], float]) -> None:
    for model in out.allocated:
        served = {t: n for (m, t), n in requests.items() if m == model and n > 0}
        total = sum(served.values())
        if total <= 0:
            out.tenants[(model, NO_TRAFFIC)] = out.allocated[model]
            out.tenants_used[(model, NO_TRAFFIC)] = out.used.get(model, 0.0)
            continue
        for tenant, n in served.items():
            out.tenants[(model, tenant)] = out.allocated[model] * n / total
            out.tenants_used[(model, tenant)] = out.used.get(model, 0.0) * n / total


@dataclass
class UnitCosts:
    requests: float
    good_requests: float | None
    input_tokens: float
    output_tokens: float
    dollars: float
    joules: float | None = None

    @property
    def per_1k_requests(self) -> float:
        return self.dollars / self.requests * 1000 if self.requests else math.nan

    @property
    def per_1m_tokens(self) -> float:
        tokens = self.input_tokens + self.output_tokens
        return self.dollars / tokens * 1e6 if tokens else math.nan

    @property
    def per_1m_output_tokens(self) -> float:
        return self.dollars / self.output_tokens * 1e6 if self.output_tokens else math.nan

    @property
    def per_1k_good_requests(self) -> float:
        """Goodput cost: dollars per thousand requests that met the SLO."""
        if not self.good_requests:
            return math.nan
        return self.dollars / self.good_requests * 1000

    @property
    def joules_per_token(self) -> float:
        tokens = self.input_tokens + self.output_tokens
        return self.joules / tokens if self.joules is not None and tokens else math.nan
