"""Model versions in the twin: a pool runs a baseline and a canary version side by side,
each with its own latency, error and cost profile, and a traffic split between them.

A scenario lists its canaries::

    canaries:
      - pool: llama-70b          # the pool whose traffic the canary shares (the baseline)
        name: llama-70b-v2       # the canary's pods are llama-70b-v2-<i>
        model: llama-3-70b-v2    # the model label its requests carry: its version
        weight: 0                # percent of the pool's traffic it takes at the start
        ttft_factor: 0.8         # its time to first token and per output token, x baseline
        tpot_factor: 0.8
        cost_factor: 1.3         # GPU-seconds per token, x baseline
        error_share: 0.0005      # errors of served requests
        load_errors: {above: 0.8, share: 0.05}   # more errors while its load is above 0.8

The split moves replicas with the traffic, as an autoscaler sized on load would: of the
pool's ``R`` replicas, the baseline runs ``round(R x (100 - w) / 100)`` and the canary
``ceil(R x w / 100 x cost_factor)`` (at least one while it has traffic). A canary that needs
more GPU-seconds per token serves ``tokens_per_second / cost_factor`` a replica, so it needs
more replicas, and more GPUs, for the same share: that is what its cost per token shows.

Requests of a versioned pool are drawn, not averaged: the count in a step is Poisson, errors
and rejections binomial and each latency histogram multinomial over its buckets, from a
random stream of its own (seeded by the scenario), so an identical canary differs from its
baseline only by sampling noise, as a real one does. The scenario's other pools are unchanged.

The live twin's route API drives the split: ``GET``/``PUT /v1/routes/{namespace}/{pool}``
with ``{"weights": {pool: 100 - w, canary: w}}``, as the remediation actuator's ``twin``
backend (and the canary controller) call it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from gpuslo.foundation.errors import SpecProblem
from gpuslo.foundation.specmodel import DNS_LABEL, FrozenStrict

if TYPE_CHECKING:
    import yaml

    from .fleet import Fleet, Histogram, PoolState
    from .scenario import Scenario

BASE_ERROR_SHARE = 0.0005  # as the fleet's


class LoadErrors(FrozenStrict):
    above: float = Field(gt=0, description="load (demand over capacity) above which ...")
    share: float = Field(ge=0, le=1, description="... this share of served requests fail")


class CanaryVersion(FrozenStrict):
    """A second model version of a pool, taking ``weight`` percent of its traffic."""

    pool: str
    name: str = Field(pattern=DNS_LABEL)
    model: str
    weight: float = Field(default=0.0, ge=0, le=100)
    ttft_factor: float = Field(default=1.0, gt=0)
    tpot_factor: float = Field(default=1.0, gt=0)
    cost_factor: float = Field(default=1.0, gt=0, le=10)
    error_share: float = Field(default=BASE_ERROR_SHARE, ge=0, le=1)
    load_errors: LoadErrors | None = None


def version_problems(scenario: Scenario, path: Any, node: yaml.Node) -> list[SpecProblem]:
    """What a scenario's canaries get wrong (unknown pool, a name already taken)."""
    from gpuslo.foundation.yamlpos import problem_at

    problems = []
    names = {p.name for p in scenario.pools} | (
        {scenario.fallback.name} if scenario.fallback else set()
    )
    seen: set[str] = set()
    for i, can in enumerate(scenario.canaries):
        if can.pool not in {p.name for p in scenario.pools}:
            problems.append(
                problem_at(path, node, ("canaries", i, "pool"), f"no pool {can.pool!r}")
            )
        if can.name in names or can.name in seen:
            problems.append(
                problem_at(path, node, ("canaries", i, "name"), f"{can.name!r} is already a pool")
            )
        if can.pool in {c.pool for c in scenario.canaries[:i]}:
            problems.append(
                problem_at(path, node, ("canaries", i, "pool"), "one canary per pool at a time")
            )
        seen.add(can.name)
    return problems


def replicas_for(total: int, weight: float, cost_factor: float) -> tuple[int, int]:
    """(baseline, canary) replicas for a canary weight, out of the pool's ``total``."""
    if weight <= 0:
        return total, 0
    baseline = round(total * (100 - weight) / 100)
    canary = max(1, math.ceil(total * weight / 100 * cost_factor - 1e-9))
    return baseline, canary


class Versions:
    """The fleet's canaries: their pools, the split, and how their requests are drawn."""

    def __init__(self, fleet: Fleet) -> None:
        from .fleet import PoolState

        self.fleet = fleet
        self.canaries = {c.pool: c for c in fleet.scenario.canaries}  # by baseline pool
        self.weights: dict[str, float] = {}
        self.versioned: set[str] = set()
        self.rng = np.random.default_rng([fleet.scenario.seed, 0x7E55])
        for pool, can in self.canaries.items():
            base = fleet.pools[pool].spec
            spec = base.model_copy(
                update={
                    "name": can.name,
                    "model": can.model,
                    "replicas": 0,
                    "ttft_base": base.ttft_base * can.ttft_factor,
                    "tpot_base": base.tpot_base * can.tpot_factor,
                    "tokens_per_second": base.tokens_per_second / can.cost_factor,
                }
            )
            fleet.pools[can.name] = PoolState(spec, True, 0)
            self.versioned |= {pool, can.name}
            self.set_weight(pool, can.weight, initial=True)

    @property
    def routes(self) -> set[str]:
        return set(self.canaries)

    # ------------------------------------------------------------------ the split
    def set_weight(self, pool: str, weight: float, initial: bool = False) -> None:
        """Send ``weight`` percent of the pool's traffic to its canary, moving replicas."""
        can = self.canaries[pool]
        weight = min(100.0, max(0.0, weight))
        self.weights[pool] = weight
        total = self.fleet.pools[pool].spec.replicas  # the scenario's pool size
        n_base, n_can = replicas_for(total, weight, can.cost_factor)
        for name, n in ((pool, n_base), (can.name, n_can)):  # shrink before growing
            state = self.fleet.pools[name]
            if n <= len(state.replicas):
                state.desired = n
                self.fleet._reconcile(state, initial=initial)
        for name, n in ((pool, n_base), (can.name, n_can)):
            state = self.fleet.pools[name]
            if n > len(state.replicas):
                state.desired = n
                self.fleet._reconcile(state, initial=initial)

    def route(self, pool: str) -> dict[str, Any]:
        w = self.weights.get(pool, 0.0)
        return {"weights": {pool: round(100 - w), self.canaries[pool].name: round(w)}}

    def set_route(self, pool: str, weights: dict[str, int]) -> dict[str, Any]:
        can = self.canaries[pool]
        total = sum(weights.values())
        if total <= 0 or set(weights) - {pool, can.name} or min(weights.values()) < 0:
            raise ValueError(f"weights must be for {pool} and {can.name}, >= 0, sum above 0")
        self.set_weight(pool, 100 * weights.get(can.name, 0) / total)
        return self.route(pool)

    def split(self, demand: dict[str, dict[str, tuple[float, float, int]]]) -> None:
        """Move each canary's share of its pool's demand (requests/s per tenant) to it."""
        for pool, can in self.canaries.items():
            share = self.weights.get(pool, 0.0) / 100
            for tenant, (rps, tokens_in, tokens_out) in list(demand[pool].items()):
                demand[pool][tenant] = (rps * (1 - share), tokens_in, tokens_out)
                demand[can.name][tenant] = (rps * share, tokens_in, tokens_out)

    # ------------------------------------------------------------------ requests
    def error_share(self, state: PoolState) -> float:
        can = next((c for c in self.canaries.values() if c.name == state.spec.name), None)
        if can is None:
            return BASE_ERROR_SHARE
        share = can.error_share
        if can.load_errors is not None and state.load > can.load_errors.above:
            share = max(share, can.load_errors.share)
        return share

    def record(
        self,
        state: PoolState,
        demand: dict[str, tuple[float, float, int]],
        dt: float,
        ttft: float,
        tpot: float,
        shed_share: float,
        capacity: float,
    ) -> bool:
        """Draw and count a versioned pool's requests of one step; False for other pools
        (the fleet counts those itself)."""
        from .fleet import TenantTotals

        spec = state.spec
        if spec.name not in self.versioned:
            return False
        rng = self.rng
        errors_share = self.error_share(state)
        for tenant, (rps, tokens_in, tokens_out) in demand.items():
            totals = self.fleet.totals.setdefault(
                (spec.name, tenant), TenantTotals(model=spec.model, namespace=spec.namespace)
            )
            n = int(rng.poisson(max(rps * dt, 0.0)))
            rejected = n if capacity <= 0 else int(rng.binomial(n, min(1.0, shed_share)))
            errors = int(rng.binomial(n - rejected, errors_share))
            ok = n - rejected - errors
            totals.outcomes["rejected"] += rejected
            totals.outcomes["error"] += errors
            totals.outcomes["success"] += ok
            served = ok + errors
            if dt > 0 and hasattr(state, "in_flight"):  # requests being served (Little's law)
                state.in_flight += served / dt * (ttft + tpot * tokens_out)
            totals.input_tokens += served * tokens_in
            totals.output_tokens += ok * tokens_out
            self._observe(totals.ttft, served, ttft)
            self._observe(totals.tpot, ok, tpot)
            self._observe(totals.e2e, ok, ttft + tpot * tokens_out)
        return True

    def _observe(self, hist: Histogram, n: int, mean: float) -> None:
        """``n`` exponential latencies around ``mean``, drawn into the buckets."""
        if n <= 0:
            return
        cdf = [1.0 - math.exp(-le / mean) for le in hist.buckets]
        probs = np.diff([0.0, *cdf, 1.0])
        counts = self.rng.multinomial(n, np.clip(probs, 0, None) / max(probs.sum(), 1e-12))
        running = 0
        for i in range(len(hist.buckets)):
            running += int(counts[i])
            hist.counts[i] += running
        hist.total += n
        hist.sum += n * mean
