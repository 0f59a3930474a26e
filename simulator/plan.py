"""Capacity planning, proven in the twin: from traffic history, SLO targets, prices and pool
profiles, recommend per pool a replica schedule (hour of week), a warm-pool size and a spot
share, predict their SLO attainment and cost, and replay the plan and two baselines (static
provisioning for the peak, reactive scaling on a threshold) in the fleet model over the same
traffic, measuring cost, attainment and pages. docs/plan.md describes the method.

The planner's latency model is the twin's (``fleet.py``): mean TTFT ``ttft_base / (1 - ρ)``,
time per output token ``tpot_base * (1 + 0.3 ρ)``, both exponential around their means. On a
real fleet, state ``ttft_base`` and ``tpot_base`` in the pool profile as measured at low load.

Pool profiles (``kind: PoolProfiles``), validated with every problem as
``file:line:col: field: message``::

    apiVersion: gpuslo/v1
    kind: PoolProfiles
    sync: 30s                     # how often a controller acts
    pools:
      - name: llama-70b           # the twin's pool (and the Deployment on a cluster)
        model: llama-3-70b
        gpu: H100
        gpus_per_replica: 4
        tokens_per_second: 2400   # output tokens/s one replica serves
        cold_start: 6m
        warm_start: 20s
        ttft_base: 0.15
        price: {on-demand: 2.95, spot: 1.25}   # $/GPU-hour; default: the price catalog's
        spot: {interruptions_per_hour: 0.02, max_share: 0.5}
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.specmodel import DNS_LABEL, FrozenStrict, check_duration
from gpuslo.foundation.yamlpos import load_single, problem_at

from .fleet import BASE_ERROR_SHARE, Fleet
from .scenario import Scenario

# Model time 0 of a replay is this Monday 00:00 UTC (the twin's weekend is days 5 and 6).
TWIN_EPOCH = 1_794_787_200.0
_MONDAY = 345_600.0  # 1970-01-05 00:00 UTC, a Monday
HOURS_OF_WEEK = 168
SliKind = Literal["ttft", "tpot", "e2e", "availability"]


def hour_of_week(ts: np.ndarray[Any, np.dtype[np.float64]] | float) -> Any:
    """Hour of the week (0: Monday 00:00-01:00 UTC) of Unix timestamps."""
    return (np.floor((np.asarray(ts) - _MONDAY) / 3600.0) % HOURS_OF_WEEK).astype(int)


# ---------------------------------------------------------------------------- pool profiles
class Prices(FrozenStrict):
    on_demand: float | None = Field(default=None, alias="on-demand", ge=0)
    spot: float | None = Field(default=None, ge=0)


class Spot(FrozenStrict):
    interruptions_per_hour: float = Field(
        default=0.0, ge=0, le=10, description="reclaims per spot replica and hour"
    )
    max_share: float = Field(default=0.0, ge=0, le=1, description="most replicas on spot")


class PoolProfile(FrozenStrict):
    name: str = Field(pattern=DNS_LABEL)
    model: str
    gpu: str = "H100"
    gpus_per_replica: int = Field(default=1, gt=0, le=64)
    tokens_per_second: float = Field(gt=0, description="output tokens/s one replica serves")
    cold_start: str = "90s"
    warm_start: str = "10s"
    ttft_base: float = Field(default=0.15, gt=0)
    tpot_base: float = Field(default=0.02, gt=0)
    price: Prices = Field(default_factory=Prices)
    spot: Spot = Field(default_factory=Spot)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=64, gt=0, le=10_000)
    headroom: float = Field(default=0.05, ge=0, le=2, description="margin over the forecast")
    burst_margin: float = Field(
        default=0.15, ge=0, le=2, description="warm replicas as a share of the peak schedule"
    )
    reactive_target: float = Field(
        default=0.7, gt=0, lt=1, description="the reactive baseline's target load (HPA-like)"
    )

    _durations = field_validator("cold_start", "warm_start")(check_duration)


class PoolProfiles(FrozenStrict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["PoolProfiles"]
    sync: str = "30s"
    budget_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="share of each SLO's error budget the forecast may use (the rest is for "
        "surprises: bursts, faults, reclaims)",
    )
    pools: list[PoolProfile] = Field(min_length=1)

    _sync = field_validator("sync")(check_duration)


def load_profiles(
    path: str | Path, catalog_prices: Mapping[str, Mapping[str, float]] | None = None
) -> PoolProfiles:
    """Validate a pool-profile file; prices not given come from ``catalog_prices`` (GPU ->
    pricing class -> $/GPU-hour, the price catalog's ``gpus``). SpecError lists every problem
    with its place."""
    profiles, node = load_single(path, PoolProfiles, "pool profiles")
    problems: list[SpecProblem] = []
    seen: set[str] = set()
    pools: list[PoolProfile] = []
    for i, p in enumerate(profiles.pools):
        if p.name in seen:
            problems.append(problem_at(path, node, ("pools", i, "name"), f"{p.name} twice"))
        seen.add(p.name)
        if p.min_replicas > p.max_replicas:
            problems.append(
                problem_at(
                    path,
                    node,
                    ("pools", i, "min_replicas"),
                    f"min_replicas {p.min_replicas} is above max_replicas {p.max_replicas}",
                )
            )
        known = (catalog_prices or {}).get(p.gpu, {})
        od = p.price.on_demand if p.price.on_demand is not None else known.get("on-demand")
        spot = p.price.spot if p.price.spot is not None else known.get("spot")
        if od is None:
            problems.append(
                problem_at(
                    path,
                    node,
                    ("pools", i, "price"),
                    f"no on-demand price for {p.gpu}: give price.on-demand or a catalog with it",
                )
            )
        if p.spot.max_share > 0 and spot is None:
            problems.append(
                problem_at(
                    path,
                    node,
                    ("pools", i, "spot", "max_share"),
                    f"spot share allowed but no spot price for {p.gpu}",
                )
            )
        prices = Prices.model_validate({"on-demand": od, "spot": spot})
        pools.append(p.model_copy(update={"price": prices}))
    if problems:
        raise SpecError(problems)
    return profiles.model_copy(update={"pools": pools})


# ---------------------------------------------------------------------------- SLO targets
@dataclass(frozen=True)
class PageTier:
    factor: float  # burn-rate threshold
    long_window: float  # seconds
    short_window: float


@dataclass(frozen=True)
class SloTarget:
    """One SLO as the planner needs it (the CLI builds them from slo_engine specs)."""

    name: str
    model: str
    kind: SliKind
    objective: float  # ratio, e.g. 0.99
    threshold: float = 0.0  # seconds, latency SLOs
    tenant: str | None = None
    pages: tuple[PageTier, ...] = (PageTier(14.4, 3600, 300), PageTier(6.0, 21600, 1800))


def bad_fraction(
    profile: PoolProfile, slo: SloTarget, rho: float, output_tokens: float = 256.0
) -> float:
    """Share of requests outside the SLO at load ρ, by the twin's latency model."""
    if rho >= 1.0:
        return 1.0  # a backlog grows without bound: treat as all bad
    ttft = profile.ttft_base / (1 - min(rho, 0.95))
    tpot = profile.tpot_base * (1 + 0.3 * min(rho, 1.0))
    if slo.kind == "availability":
        return BASE_ERROR_SHARE
    mean = {"ttft": ttft, "tpot": tpot, "e2e": ttft + tpot * output_tokens}[slo.kind]
    return math.exp(-slo.threshold / mean)


def max_load(
    profile: PoolProfile, slos: Sequence[SloTarget], budget_share: float, output_tokens: float
) -> float:
    """The highest load ρ at which every SLO of the pool's model spends at most
    ``budget_share`` of its error budget (bisection; 0.9 at most)."""
    mine = [s for s in slos if s.model == profile.model]

    def ok(rho: float) -> bool:
        return all(
            bad_fraction(profile, s, rho, output_tokens) <= (1 - s.objective) * budget_share
            for s in mine
        )

    lo, hi = 0.0, 0.9
    if ok(hi):
        return hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return max(lo, 0.05)


# ---------------------------------------------------------------------------- traffic
@dataclass
class Traffic:
    """Demand per model on a regular grid: output tokens/s and requests/s."""

    timestamps: np.ndarray[Any, np.dtype[np.float64]]  # Unix seconds
    tokens: dict[str, np.ndarray[Any, np.dtype[np.float64]]]
    requests: dict[str, np.ndarray[Any, np.dtype[np.float64]]]

    def output_tokens(self, model: str) -> float:
        """Mean output tokens per request of a model."""
        req = float(np.nansum(self.requests.get(model, np.zeros(1))))
        return float(np.nansum(self.tokens.get(model, np.zeros(1)))) / req if req > 0 else 256.0


def traffic_from_twin(scenario: Scenario, step: float, surprises: bool = False) -> Traffic:
    """The scenario's traffic as a history: by default its ordinary week (faults, bursts and
    spikes left out, another seed): what a planner would have seen the week before."""
    if not surprises:
        tenants = [t.model_copy(update={"bursts": []}) for t in scenario.tenants]
        scenario = scenario.model_copy(
            update={"faults": [], "actions": [], "tenants": tenants, "seed": scenario.seed + 1}
        )
    fleet = Fleet(scenario, telemetry=False)
    steps = int(parse_duration(scenario.duration) // step)
    models = sorted({t.model for t in scenario.tenants})
    tokens = {m: np.zeros(steps) for m in models}
    requests = {m: np.zeros(steps) for m in models}
    model_of = {t.name: t.model for t in scenario.tenants}
    for k in range(steps):
        fleet.t += step  # as Fleet.step: the demand of the step that ends at t
        for i, t in enumerate(scenario.tenants):
            rps = fleet.tenant_rps(i)
            tokens[t.model][k] += rps * t.output_tokens
            requests[model_of[t.name]][k] += rps
    stamps = TWIN_EPOCH + np.arange(1, steps + 1, dtype=np.float64) * step
    return Traffic(stamps, tokens, requests)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+) (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def traffic_from_openmetrics(path: str | Path) -> Traffic:
    """Demand per model from a history file (the twin's ``history.om`` or any OpenMetrics
    text with timestamps): the request counter summed over tenants and outcomes, and output
    tokens per served request, turned into rates between consecutive timestamps."""
    req_name = c.REQUESTS_TOTAL
    tok_name = c.TOKEN_USAGE_TOTAL
    req: dict[str, dict[float, float]] = {}
    ok: dict[str, dict[float, float]] = {}
    tok: dict[str, dict[float, float]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not (line.startswith(req_name) or line.startswith(tok_name)):
                continue
            m = _SAMPLE.match(line.rstrip("\n"))
            if m is None:
                raise SpecError([SpecProblem(str(path), n, 1, "", "not an OpenMetrics sample")])
            name, labels_text, value, ts = m.groups()
            labels = dict(_LABEL.findall(labels_text))
            model = labels.get(c.LABEL_MODEL, "")
            at = float(ts)
            if name == req_name:
                req.setdefault(model, {})
                req[model][at] = req[model].get(at, 0.0) + float(value)
                if labels.get(c.LABEL_OUTCOME) == "success":
                    ok.setdefault(model, {})
                    ok[model][at] = ok[model].get(at, 0.0) + float(value)
            elif name == tok_name and labels.get(c.LABEL_TOKEN_TYPE) == "output":
                tok.setdefault(model, {})
                tok[model][at] = tok[model].get(at, 0.0) + float(value)
    if not req:
        raise SpecError(
            [SpecProblem(str(path), 1, 1, "", f"no {req_name} samples: not a request history")]
        )
    stamps = np.array(sorted({t for series in req.values() for t in series}))
    if len(stamps) < 3:
        raise SpecError([SpecProblem(str(path), 1, 1, "", "fewer than 3 timestamps")])
    dt = np.diff(stamps)
    tokens, requests = {}, {}
    for model, series in req.items():
        r = np.array([series.get(t, np.nan) for t in stamps])
        o = np.array([ok.get(model, {}).get(t, np.nan) for t in stamps])
        k = np.array([tok.get(model, {}).get(t, np.nan) for t in stamps])
        rate = np.maximum(np.diff(r), 0) / dt
        per = np.nan_to_num(np.diff(k) / np.maximum(np.diff(o), 1e-9), nan=0.0)
        requests[model] = rate
        tokens[model] = rate * per
    return Traffic(stamps[1:], tokens, requests)


def traffic_from_prometheus(url: str, start: float, end: float, step: float) -> Traffic:
    """Demand per model from Prometheus: request and output-token rates by model."""
    from gpuslo.foundation.prometheus import on_grid, range_series, steps

    n = steps(start, end, step)
    window = f"{max(int(step), 60)}s"
    req = range_series(
        url, f"sum by ({c.LABEL_MODEL}) (rate({c.REQUESTS_TOTAL}[{window}]))", start, end, step
    )
    tok = range_series(
        url,
        f"sum by ({c.LABEL_MODEL}) (rate({c.TOKEN_USAGE_TOTAL}"
        f'{{{c.LABEL_TOKEN_TYPE}="output"}}[{window}]))',
        start,
        end,
        step,
    )
    requests = {s["metric"].get(c.LABEL_MODEL, ""): on_grid(s, start, step, n) for s in req}
    tokens = {s["metric"].get(c.LABEL_MODEL, ""): on_grid(s, start, step, n) for s in tok}
    return Traffic(start + np.arange(n, dtype=np.float64) * step, tokens, requests)


# ---------------------------------------------------------------------------- the plan
@dataclass
class PoolPlan:
    pool: str
    model: str
    max_load: float  # ρ the schedule sizes for
    forecast: list[float]  # output tokens/s by hour of week (Monday 00:00 UTC first)
    schedule: list[int]  # replicas by hour of week
    warm_schedule: list[int]  # warm replicas by hour of week
    warm: int  # the most warm replicas the schedule keeps
    spot_share: float
    static_replicas: int  # the baseline: the peak's replicas all week
    predicted: dict[str, float] = field(default_factory=dict)


def _forecast(
    traffic: Traffic, model: str, quantile: float = 0.5
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Output tokens/s by hour of week: a high quantile of the history's hour, an hour of day
    over all days where the week has no sample of that hour."""
    demand = np.nan_to_num(traffic.tokens.get(model, np.zeros(len(traffic.timestamps))))
    how = hour_of_week(traffic.timestamps)
    out = np.full(HOURS_OF_WEEK, np.nan)
    for h in range(HOURS_OF_WEEK):
        sel = demand[how == h]
        if sel.size:
            out[h] = np.quantile(sel, quantile)
    for h in (int(x) for x in np.flatnonzero(np.isnan(out))):
        sel = demand[how % 24 == h % 24]
        out[h] = np.quantile(sel, quantile) if sel.size else float(np.max(demand, initial=0.0))
    return out


def _poisson_quantile(mean: float, q: float = 0.999) -> int:
    k, term = 0, math.exp(-mean)
    total = term
    while total < q and k < 1000:
        k += 1
        term *= mean / k
        total += term
    return k


def make_plan(
    traffic: Traffic, profiles: PoolProfiles, slos: Sequence[SloTarget]
) -> list[PoolPlan]:
    """Per pool: forecast, schedule, warm pool and spot share, with predicted attainment and
    cost over the history (docs/plan.md)."""
    plans = []
    sync = parse_duration(profiles.sync)
    for p in profiles.pools:
        out = traffic.output_tokens(p.model)
        rho = max_load(p, slos, profiles.budget_share, out)
        fc = _forecast(traffic, p.model) * (1 + p.headroom)
        per = p.tokens_per_second * rho
        need = np.clip(np.ceil(fc / per), p.min_replicas, p.max_replicas).astype(int)
        peak_hist = float(np.nanmax(np.nan_to_num(traffic.tokens.get(p.model, np.zeros(1)))))
        static = int(
            min(p.max_replicas, max(p.min_replicas, math.ceil(peak_hist * (1 + p.headroom) / per)))
        )
        spot_price = p.price.spot if p.price.spot is not None else math.inf
        od_price = p.price.on_demand or 0.0
        share = p.spot.max_share if spot_price < od_price else 0.0
        # Warm replicas cover what the forecast did not see (a burst: burst_margin of the
        # hour's replicas) and capacity lost until a cold replacement serves (spot reclaims:
        # the 99.9% quantile of reclaims within a cold start; a lost GPU: one replica).
        lost_window = (parse_duration(p.cold_start) + sync) / 3600
        rate = p.spot.interruptions_per_hour * lost_window
        insurance = [_poisson_quantile(math.floor(n * share) * rate) for n in need.tolist()]
        warm_by_hour = [
            min(p.max_replicas, max(1, math.ceil(p.burst_margin * n), ins))
            for n, ins in zip(need.tolist(), insurance, strict=True)
        ]
        plan = PoolPlan(
            p.name,
            p.model,
            rho,
            [round(float(x), 1) for x in fc],
            need.tolist(),
            warm_by_hour,
            max(warm_by_hour),
            share,
            static,
        )
        plan.predicted = _predict(traffic, p, plan, slos)
        plans.append(plan)
    return plans


def _replica_price(p: PoolProfile, spot_share: float) -> float:
    """$/hour of a serving replica at a spot share (warm replicas are on-demand)."""
    od = p.price.on_demand or 0.0
    spot = p.price.spot if p.price.spot is not None else od
    return p.gpus_per_replica * (od * (1 - spot_share) + spot * spot_share)


def _predict(
    traffic: Traffic, p: PoolProfile, plan: PoolPlan, slos: Sequence[SloTarget]
) -> dict[str, float]:
    """Predicted over the history: each policy's cost ($) and each SLO's attainment, the
    schedule meeting the history's demand at its load (the reactive one a cold start late)."""
    demand = np.nan_to_num(traffic.tokens.get(p.model, np.zeros(len(traffic.timestamps))))
    dt = float(np.median(np.diff(traffic.timestamps))) if len(traffic.timestamps) > 1 else 60.0
    hours = dt / 3600
    how = hour_of_week(traffic.timestamps)
    sched = np.asarray(plan.schedule)[how]
    warm_n = np.asarray(plan.warm_schedule)[how]
    lag = max(1, int(parse_duration(p.cold_start) // dt))
    reactive = np.maximum(
        p.min_replicas,
        np.ceil(
            np.concatenate([demand[:1].repeat(lag), demand[:-lag]])
            / (p.tokens_per_second * p.reactive_target)
        ),
    )
    out_tokens = traffic.output_tokens(p.model)
    replicas = {
        "plan": sched,
        "static": np.full_like(sched, plan.static_replicas),
        "reactive": reactive,
    }
    result: dict[str, float] = {}
    for policy, n in replicas.items():
        share = plan.spot_share if policy == "plan" else 0.0
        warm = float(np.sum(warm_n)) if policy == "plan" else 0.0
        cost = float(np.sum(n) * _replica_price(p, share) * hours)
        cost += warm * p.gpus_per_replica * (p.price.on_demand or 0.0) * hours
        result[f"{policy}.cost"] = round(cost, 2)
        rho = demand / np.maximum(n * p.tokens_per_second, 1e-9)
        weights = np.maximum(demand, 1e-9)
        for s in slos:
            if s.model != p.model:
                continue
            bad = np.array([bad_fraction(p, s, float(r), out_tokens) for r in rho])
            result[f"{policy}.{s.name}"] = round(
                float(1 - np.sum(bad * weights) / np.sum(weights)), 6
            )
    return result


# ---------------------------------------------------------------------------- controllers
class Controller:
    """What acts on the fleet during a replay, every ``sync`` seconds."""

    name = "scripted"
    sync = 30.0

    def initial(self, pool: str) -> tuple[int, int] | None:
        """(replicas, warm) at the start; None keeps the scenario's."""
        return None

    def spot_share(self, pool: str) -> float:
        return 0.0

    def act(self, fleet: Fleet) -> None:
        return None


class StaticController(Controller):
    name = "static"

    def __init__(self, replicas: Mapping[str, int]) -> None:
        self.replicas = dict(replicas)

    def initial(self, pool: str) -> tuple[int, int] | None:
        return (self.replicas[pool], 0) if pool in self.replicas else None


class ReactiveController(Controller):
    """HPA-like: every ``sync``, desired = ceil(ready x load / target) when the load is more
    than 10% off target; scale-downs take the highest recommendation of the last 5 minutes;
    new replicas start cold. No warm pool, on-demand only."""

    name = "reactive"

    def __init__(
        self,
        profiles: Sequence[PoolProfile],
        start: Mapping[str, int],
        sync: float = 30.0,
        stabilization: float = 300.0,
    ) -> None:
        self.profiles = {p.name: p for p in profiles}
        self.start = dict(start)
        self.sync = sync
        self.window = max(1, int(stabilization // sync))
        self.recent: dict[str, list[int]] = {p: [] for p in self.profiles}

    def initial(self, pool: str) -> tuple[int, int] | None:
        return (self.start[pool], 0) if pool in self.start else None

    def act(self, fleet: Fleet) -> None:
        for name, p in self.profiles.items():
            state = fleet.pools.get(name)
            if state is None or not state.healths:
                continue  # nothing measured yet
            ready = sum(1 for h in state.healths if h > 0) or 1
            load = min(state.load, 10.0)
            desired = state.desired
            if abs(load / p.reactive_target - 1) > 0.1:
                desired = math.ceil(ready * load / p.reactive_target)
            desired = max(p.min_replicas, min(p.max_replicas, desired))
            recent = self.recent[name]
            recent.append(desired)
            del recent[: -self.window]
            target = desired if desired > state.desired else max(recent)
            if target != state.desired:
                fleet.set_replicas(name, target)


class PlanController(Controller):
    """The plan: the schedule's replicas a cold start ahead of each hour, a warm pool, and
    on a load above the plan's (a burst, lost capacity) warm replicas promoted first and
    cold ones behind them; back to the schedule after 10 minutes below it."""

    name = "plan"

    def __init__(
        self,
        plans: Sequence[PoolPlan],
        profiles: Sequence[PoolProfile],
        sync: float = 30.0,
        epoch: float = TWIN_EPOCH,
        settle: float = 600.0,
    ) -> None:
        self.plans = {p.pool: p for p in plans}
        self.profiles = {p.name: p for p in profiles}
        self.sync = sync
        self.epoch = epoch
        self.window = max(1, int(settle // sync))
        self.recent: dict[str, list[int]] = {p: [] for p in self.plans}

    def _scheduled(self, pool: str, t: float, warm: bool = False) -> int:
        """The schedule's replicas (or warm replicas) at ``t``: the higher of this hour's
        and that a cold start ahead, so new replicas serve when the hour begins."""
        plan, p = self.plans[pool], self.profiles[pool]
        lead = parse_duration(p.cold_start) + 2 * self.sync
        hours = {int(hour_of_week(self.epoch + t)), int(hour_of_week(self.epoch + t + lead))}
        table = plan.warm_schedule if warm else plan.schedule
        return max(table[h] for h in hours)

    def initial(self, pool: str) -> tuple[int, int] | None:
        if pool not in self.plans:
            return None
        return self._scheduled(pool, 0.0), self._scheduled(pool, 0.0, warm=True)

    def spot_share(self, pool: str) -> float:
        plan = self.plans.get(pool)
        return plan.spot_share if plan else 0.0

    def act(self, fleet: Fleet) -> None:
        for name, plan in self.plans.items():
            state = fleet.pools.get(name)
            if state is None:
                continue
            p = self.profiles[name]
            warm = self._scheduled(name, fleet.t, warm=True)
            if warm != state.warm_target:
                fleet.set_warm(name, warm)
            want = sum(rps * out for rps, _, out in state.demand.values())
            needed = math.ceil(want / (p.tokens_per_second * plan.max_load)) if want else 0
            # Replicas that should serve and do not (a lost GPU, a restart, a reclaim) do not
            # count; those still starting will serve soon and do.
            needed += sum(
                1
                for r, h in zip(state.replicas, state.healths, strict=False)
                if h == 0 and r.ready_at <= fleet.t
            )
            desired = max(self._scheduled(name, fleet.t), min(p.max_replicas, needed))
            recent = self.recent[name]
            recent.append(desired)
            del recent[: -self.window]
            target = desired if desired > state.desired else max(recent)
            if target != state.desired:
                fleet.promote_warm(name, target)


# ---------------------------------------------------------------------------- the replay
@dataclass
class Replayed:
    """What one policy did in the twin: measured, not predicted."""

    policy: str
    cost: float  # $
    cost_by_pool: dict[str, float]
    attainment: dict[str, float]  # SLO -> good / total over the replay
    met: dict[str, bool]
    pages: dict[str, int]  # SLO -> page alerts (rising edges of any page tier)
    gpu_hours: float
    interruptions: int
    step: float
    replicas: dict[str, list[int]] = field(default_factory=dict)  # held (serving+starting)
    warm: dict[str, list[int]] = field(default_factory=dict)
    demand: dict[str, list[float]] = field(default_factory=dict)  # output tokens/s
    hourly: dict[str, list[float]] = field(default_factory=dict)  # SLO attainment by hour
    # What the controller did and the reclaims drawn, as the scenario's scripted actions, and
    # each pool's (replicas, warm) at the start: ``scripted_scenario`` replays them anywhere.
    actions: list[dict[str, Any]] = field(default_factory=list)
    start: dict[str, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "cost": round(self.cost, 2),
            "cost_by_pool": {k: round(v, 2) for k, v in self.cost_by_pool.items()},
            "gpu_hours": round(self.gpu_hours, 1),
            "attainment": {k: round(v, 6) for k, v in self.attainment.items()},
            "met": self.met,
            "pages": self.pages,
            "spot_interruptions": self.interruptions,
        }


class _Recording:
    """The fleet as a controller sees it in a replay: every change it makes is also recorded
    as a scripted action (``at`` the end of the step it was made before, as ``actions:``
    apply)."""

    def __init__(self, fleet: Fleet, actions: list[dict[str, Any]], dt: float) -> None:
        self._fleet, self._actions, self._dt = fleet, actions, dt

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fleet, name)

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        self._actions.append({"at": f"{round(self._fleet.t + self._dt)}s", kind: body})

    def set_replicas(self, pool: str, replicas: int) -> None:
        self._record("scale", {"pool": pool, "replicas": replicas})
        self._fleet.set_replicas(pool, replicas)

    def promote_warm(self, pool: str, replicas: int) -> int:
        self._record("promote_warm", {"pool": pool, "replicas": replicas})
        return self._fleet.promote_warm(pool, replicas)

    def set_warm(self, pool: str, replicas: int) -> None:
        self._record("warm", {"pool": pool, "replicas": replicas})
        self._fleet.set_warm(pool, replicas)

    def interrupt(self, pool: str, index: int) -> None:
        self._record("reclaim", {"pool": pool, "replica": index})
        self._fleet.interrupt(pool, index)


def scripted_scenario(scenario: Scenario, replayed: Replayed) -> dict[str, Any]:
    """The scenario with a replay's start and actions scripted (``actions:``): run it with
    ``gpuslo twin offline`` for the agents' full history of what the policy did. An action
    applies in the same step as in the replay, though within it rather than before it: the
    replicas it starts serve one step later."""
    body = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    for pool in body["pools"]:
        if pool["name"] in replayed.start:
            pool["replicas"], pool["warm_replicas"] = replayed.start[pool["name"]]
    body["actions"] = [*body.get("actions", []), *replayed.actions]
    body["description"] = f"{scenario.description} Replayed under the {replayed.policy} policy."
    return body


def _with_start(scenario: Scenario, controller: Controller) -> Scenario:
    pools = []
    for pool in scenario.pools:
        start = controller.initial(pool.name)
        if start is not None:
            pool = pool.model_copy(update={"replicas": start[0], "warm_replicas": start[1]})
        pools.append(pool)
    return scenario.model_copy(update={"pools": pools})


def replay(
    scenario: Scenario,
    controller: Controller,
    slos: Sequence[SloTarget] = (),
    prices: Mapping[str, tuple[float, float, float]] | None = None,
    step: float | None = None,
    seed: int = 7,
    keep_series: bool = True,
    progress: Callable[[float], None] | None = None,
) -> Replayed:
    """Run the scenario in the fleet model (no GPU telemetry) under ``controller``; measure
    cost (``prices``: pool -> (on-demand $/GPU-hour, spot $/GPU-hour, reclaims per spot
    replica and hour)), each SLO's attainment and its page alerts."""
    dt = step or parse_duration(scenario.step)
    fleet = Fleet(_with_start(scenario, controller), telemetry=False)
    actions: list[dict[str, Any]] = []
    recording = _Recording(fleet, actions, dt)
    steps = int(parse_duration(scenario.duration) // dt)
    rng = random.Random(seed)
    prices = prices or {}
    pools = [p.name for p in scenario.pools]
    gpus_per = {p.name: p.gpus_per_replica for p in scenario.pools}
    pool_of_model = {p.model: p.name for p in scenario.pools}
    good = np.zeros((len(slos), steps))
    total = np.zeros((len(slos), steps))
    held = {p: np.zeros(steps, dtype=np.int32) for p in pools}
    warm = {p: np.zeros(steps, dtype=np.int32) for p in pools}
    demand = {p: np.zeros(steps) for p in pools}
    cost = dict.fromkeys(pools, 0.0)
    gpu_hours = 0.0
    interruptions = 0
    next_sync = 0.0
    hours = dt / 3600
    for k in range(steps):
        if fleet.t >= next_sync:
            controller.act(recording)  # type: ignore[arg-type]  # a Fleet that records
            next_sync += controller.sync
        for name in pools:
            state = fleet.pools[name]
            od, spot, rate = prices.get(name, (0.0, 0.0, 0.0))
            n = len(state.replicas)
            share = controller.spot_share(name)
            on_demand = math.ceil(n * (1 - share))
            if rate > 0 and share > 0:
                chance = rate * hours
                for i in range(on_demand, n):
                    r = state.replicas[i]
                    serving = r.ready_at <= fleet.t and r.restarts_until <= fleet.t
                    if serving and rng.random() < chance:
                        recording.interrupt(name, i)
                        interruptions += 1
            g = gpus_per[name]
            cost[name] += g * hours * (od * (on_demand + len(state.warm)) + spot * (n - on_demand))
            gpu_hours += g * hours * (n + len(state.warm))
        fleet.step(dt)
        for name in pools:
            state = fleet.pools[name]
            held[name][k] = len(state.replicas)
            warm[name][k] = len(state.warm)
            demand[name][k] = sum(rps * out for rps, _, out in state.demand.values())
        for j, slo in enumerate(slos):
            if slo.model not in pool_of_model:
                continue
            serving_pool = fleet.pools[pool_of_model[slo.model]]
            ttft, tpot = serving_pool.ttft_mean, serving_pool.tpot_mean
            shed = serving_pool.shed_share
            for tenant, (rps, _, out) in serving_pool.demand.items():
                if slo.tenant is not None and tenant != slo.tenant:
                    continue
                n_req = rps * dt
                served = n_req * (1 - shed)
                if slo.kind == "availability":
                    ok = served * (1 - BASE_ERROR_SHARE)
                else:
                    mean = {"ttft": ttft, "tpot": tpot, "e2e": ttft + tpot * out}[slo.kind]
                    ok = served * (1 - math.exp(-slo.threshold / mean)) if mean > 0 else served
                good[j, k] += ok
                total[j, k] += n_req
        if progress is not None and k % 2000 == 0:
            progress(k / steps)
    attainment, met, pages, hourly = {}, {}, {}, {}
    per_hour = max(1, int(3600 // dt))
    for j, slo in enumerate(slos):
        tot = float(total[j].sum())
        attainment[slo.name] = float(good[j].sum()) / tot if tot > 0 else 1.0
        met[slo.name] = attainment[slo.name] >= slo.objective
        pages[slo.name] = count_pages(good[j], total[j], slo, dt)
        cut = steps // per_hour * per_hour
        g = good[j, :cut].reshape(-1, per_hour).sum(axis=1)
        t = total[j, :cut].reshape(-1, per_hour).sum(axis=1)
        hourly[slo.name] = np.round(np.where(t > 0, g / np.maximum(t, 1e-9), 1.0), 6).tolist()
    result = Replayed(
        controller.name,
        sum(cost.values()),
        cost,
        attainment,
        met,
        pages,
        gpu_hours,
        interruptions,
        dt,
        hourly=hourly,
        actions=actions,
        start={
            p.name: (p.replicas, p.warm_replicas) for p in _with_start(scenario, controller).pools
        },
    )
    if keep_series:
        result.replicas = {p: v.tolist() for p, v in held.items()}
        result.warm = {p: v.tolist() for p, v in warm.items()}
        result.demand = {p: np.round(v, 1).tolist() for p, v in demand.items()}
    return result


def count_pages(
    good: np.ndarray[Any, np.dtype[np.float64]],
    total: np.ndarray[Any, np.dtype[np.float64]],
    slo: SloTarget,
    dt: float,
) -> int:
    """Page alerts a multiwindow burn-rate rule would raise on these per-step counts: the
    rising edges of (any page tier's long and short window both burning above its factor)."""
    bad_c = np.concatenate([[0.0], np.cumsum(total - good)])
    tot_c = np.concatenate([[0.0], np.cumsum(total)])
    n = len(total)
    firing = np.zeros(n, dtype=bool)
    budget = max(1 - slo.objective, 1e-12)
    idx = np.arange(1, n + 1)
    for tier in slo.pages:
        both = np.ones(n, dtype=bool)
        for window in (tier.long_window, tier.short_window):
            w = max(1, round(window / dt))
            lo = np.maximum(idx - w, 0)
            t = tot_c[idx] - tot_c[lo]
            b = bad_c[idx] - bad_c[lo]
            burn = np.where(t > 0, b / np.maximum(t, 1e-12), 0.0) / budget
            both &= burn > tier.factor
        firing |= both
    return int(np.sum(firing[1:] & ~firing[:-1]) + (1 if n and firing[0] else 0))


# ---------------------------------------------------------------------------- everything
@dataclass
class PlanResult:
    plans: list[PoolPlan]
    replays: list[Replayed]
    slos: list[SloTarget]
    currency: str = "USD"

    def replay_of(self, policy: str) -> Replayed:
        return next(r for r in self.replays if r.policy == policy)

    def verdict(self) -> dict[str, Any]:
        plan, static, reactive = (self.replay_of(p) for p in ("plan", "static", "reactive"))
        saving = 1 - plan.cost / static.cost if static.cost > 0 else 0.0
        return {
            "saving_vs_static": round(saving, 4),
            "saving_vs_reactive": round(1 - plan.cost / reactive.cost, 4)
            if reactive.cost > 0
            else 0.0,
            "plan_meets_every_slo": all(plan.met.values()),
            "plan_pages": sum(plan.pages.values()),
            "reactive_pages": sum(reactive.pages.values()),
            "static_pages": sum(static.pages.values()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "slos": [
                {
                    "name": s.name,
                    "model": s.model,
                    "kind": s.kind,
                    "objective": s.objective,
                    "threshold": s.threshold,
                    "tenant": s.tenant,
                }
                for s in self.slos
            ],
            "plans": [
                {
                    "pool": p.pool,
                    "model": p.model,
                    "max_load": round(p.max_load, 4),
                    "schedule_by_hour_of_week": p.schedule,
                    "forecast_tokens_per_second": p.forecast,
                    "warm_replicas": p.warm,
                    "warm_by_hour_of_week": p.warm_schedule,
                    "spot_share": p.spot_share,
                    "static_replicas": p.static_replicas,
                    "predicted": p.predicted,
                }
                for p in self.plans
            ],
            "measured": [r.summary() for r in self.replays],
            "verdict": self.verdict(),
        }


def prices_of(profiles: PoolProfiles) -> dict[str, tuple[float, float, float]]:
    return {
        p.name: (
            p.price.on_demand or 0.0,
            p.price.spot if p.price.spot is not None else (p.price.on_demand or 0.0),
            p.spot.interruptions_per_hour,
        )
        for p in profiles.pools
    }


def plan_and_prove(
    traffic: Traffic,
    profiles: PoolProfiles,
    slos: Sequence[SloTarget],
    twin: Scenario,
    step: float = 60.0,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
) -> PlanResult:
    """Make the plan from the history, then replay it and both baselines in the twin."""
    pools = {p.name for p in twin.pools}
    missing = [p.name for p in profiles.pools if p.name not in pools]
    if missing:
        raise SpecError(
            [SpecProblem("", 0, 0, "pools", f"the twin has no pool named {', '.join(missing)}")]
        )
    plans = make_plan(traffic, profiles, slos)
    sync = parse_duration(profiles.sync)
    prices = prices_of(profiles)
    static = {p.pool: p.static_replicas for p in plans}
    controllers: list[Controller] = [
        StaticController(static),
        ReactiveController(profiles.pools, {p.pool: p.schedule[0] for p in plans}, sync),
        PlanController(plans, profiles.pools, sync),
    ]
    replays = []
    for ctl in controllers:
        if progress is not None:
            progress(ctl.name)
        replays.append(replay(twin, ctl, slos, prices, step=step, seed=seed))
    return PlanResult(plans, replays, list(slos))


def slo_targets_from(slos: Iterable[Any]) -> list[SloTarget]:
    """SloTargets from slo_engine SLOs (duck-typed: the simulator does not import the SLO
    engine): latency SLOs on TTFT, time per output token or request duration, and
    availability SLOs, each for the model its selector names; page tiers from its tiers."""
    out = []
    kinds = {
        c.TIME_TO_FIRST_TOKEN: "ttft",
        c.TIME_PER_OUTPUT_TOKEN: "tpot",
        c.REQUEST_DURATION: "e2e",
    }
    for s in slos:
        selector = dict(s.selector)
        model = selector.get(c.LABEL_MODEL)
        if model is None:
            continue
        kind: str | None = None
        if s.kind == "availability":
            kind = "availability"
        elif s.kind == "latency":
            kind = next((v for k, v in kinds.items() if s.histogram.startswith(k)), None)
        if kind is None:
            continue
        pages = tuple(
            PageTier(t.factor(s.period), t.long_window, t.short_window)
            for t in s.tiers
            if t.severity == "page"
        )
        out.append(
            SloTarget(
                s.name,
                model,
                kind,  # type: ignore[arg-type]
                s.objective,
                s.threshold,
                selector.get(c.LABEL_TENANT),
                pages,
            )
        )
    return out
