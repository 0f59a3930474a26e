"""Backtest: replay history through an SLO's alert policy, score the episodes against known
incidents, and compare alternative policies on the same data.

An incident (``incidents.json``, as the digital twin writes it: ``kind``, ``start``, ``end``
in Unix seconds, plus optional ``model``/``slo`` to restrict it) counts as detected by a tier
when one of the tier's episodes overlaps ``[start, end + short window]``: a burn-rate alert
confirms on its short window, so it may fire or linger that long after the fault ends. An
episode overlapping no incident is a false positive.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpuslo.foundation.durations import format_duration

from .evaluator import Episode, Evaluation, SliData, evaluate
from .model import SLO, AlertTier


class BacktestError(Exception):
    """Bad backtest input: one line for the user."""


@dataclass(frozen=True)
class Incident:
    kind: str
    start: float
    end: float
    details: tuple[tuple[str, str], ...] = ()

    def applies_to(self, slo: SLO) -> bool:
        d = dict(self.details)
        if "slo" in d and d["slo"] != slo.name:
            return False
        model = dict(slo.selector).get("model") if slo.selector else None
        return not ("model" in d and model is not None and d["model"] != model)


def load_incidents(path: Path) -> list[Incident]:
    """incidents.json: a list of objects with ``kind``, ``start`` and ``end`` (Unix seconds)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise BacktestError(f"{path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise BacktestError(f"{path}:{err.lineno}:{err.colno}: not JSON: {err.msg}") from None
    if not isinstance(raw, list):
        raise BacktestError(f"{path}: expected a list of incidents")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BacktestError(f"{path}: incident {i}: expected an object")
        try:
            start, end = float(item["start"]), float(item["end"])
        except (KeyError, TypeError, ValueError):
            raise BacktestError(
                f"{path}: incident {i}: start and end must be Unix seconds"
            ) from None
        if end < start:
            raise BacktestError(f"{path}: incident {i}: end is before start")
        details = tuple(
            sorted((k, str(v)) for k, v in item.items() if k not in ("kind", "start", "end"))
        )
        out.append(Incident(str(item.get("kind", "incident")), start, end, details))
    return out


@dataclass
class TierScore:
    tier: str
    severity: str
    episodes: int
    true_positives: int
    incidents: int
    detected: int
    detection_times: list[float] = field(default_factory=list)
    reset_times: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_positives / self.episodes if self.episodes else math.nan

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else math.nan

    @property
    def mean_detection(self) -> float:
        return float(np.mean(self.detection_times)) if self.detection_times else math.nan

    @property
    def mean_reset(self) -> float:
        return float(np.mean(self.reset_times)) if self.reset_times else math.nan


def score(
    episodes: Sequence[Episode], tiers: Sequence[AlertTier], incidents: Sequence[Incident]
) -> list[TierScore]:
    """Precision, recall, detection and reset times per tier."""
    out = []
    for tier in tiers:
        mine = [e for e in episodes if e.tier == tier.name]
        grace = tier.short_window
        hit = [any(e.start <= i.end + grace and e.end > i.start for i in incidents) for e in mine]
        s = TierScore(tier.name, tier.severity, len(mine), sum(hit), len(incidents), 0)
        for inc in incidents:
            over = [e for e in mine if e.start <= inc.end + grace and e.end > inc.start]
            if over:
                s.detected += 1
                s.detection_times.append(max(0.0, over[0].start - inc.start))
                s.reset_times.append(max(0.0, over[-1].end - inc.end))
        out.append(s)
    return out


@dataclass
class Policy:
    """An alternative to try: overrides of the SLO (objective, min_events, tiers)."""

    name: str
    objective: float | None = None  # a ratio (0.999)
    min_events: int | None = None
    tiers: tuple[AlertTier, ...] | None = None
    keep: tuple[str, ...] | None = None  # tier names to keep
    factor: float = 1.0  # scales every tier's budget fraction

    def apply(self, slo: SLO) -> SLO:
        changes: dict[str, Any] = {}
        if self.objective is not None:
            changes["objective"] = self.objective
        if self.min_events is not None:
            changes["min_events"] = self.min_events
        if self.tiers is not None:
            changes["tiers"] = self.tiers
        return dataclasses.replace(slo, **changes)


def parse_policy(text: str, load_tiers: Any) -> Policy:
    """``NAME:key=value,key=value`` with keys objective (percent), min_events, windows (a
    tiers file), tiers (names to keep, ``+``-separated), factor (scale every tier's budget
    fraction)."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise BacktestError(f"--compare {text!r}: expected NAME:key=value[,key=value…]")
    policy = Policy(name.strip())
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = pair.partition("=")
        key = key.strip()
        try:
            if not eq:
                raise ValueError("expected key=value")
            if key == "objective":
                pct = float(value)
                if not 0 < pct < 100:
                    raise ValueError("a percentage between 0 and 100")
                policy.objective = pct / 100
            elif key == "min_events":
                policy.min_events = int(value)
                if policy.min_events < 0:
                    raise ValueError("must be >= 0")
            elif key == "windows":
                policy.tiers = load_tiers(value)
            elif key == "tiers":
                policy.keep = tuple(t for t in value.split("+") if t)
            elif key == "factor":
                policy.factor = float(value)
                if policy.factor <= 0:
                    raise ValueError("must be > 0")
            else:
                raise ValueError("unknown key; use objective, min_events, windows, tiers or factor")
        except ValueError as err:
            raise BacktestError(f"--compare {name}: {key}: {err}") from None
    return policy


def policy_tiers(policy: Policy, slo: SLO) -> tuple[AlertTier, ...]:
    tiers = policy.tiers if policy.tiers is not None else slo.tiers
    if policy.keep is not None:
        unknown = set(policy.keep) - {t.name for t in tiers}
        if unknown:
            raise BacktestError(f"--compare {policy.name}: unknown tier(s) {sorted(unknown)}")
        tiers = tuple(t for t in tiers if t.name in policy.keep)
    if policy.factor != 1.0:
        tiers = tuple(
            dataclasses.replace(t, budget_fraction=min(1.0, t.budget_fraction * policy.factor))
            for t in tiers
        )
    return tiers


@dataclass
class Result:
    slo: SLO
    policy: str
    evaluation: Evaluation
    tiers: tuple[AlertTier, ...]
    scores: list[TierScore]
    start: float
    end: float
    causes: dict[float, list[dict[str, Any]]] = field(default_factory=dict)  # by episode start


def run(
    slo: SLO,
    data: SliData,
    start: float,
    end: float,
    incidents: Sequence[Incident],
    policies: Sequence[Policy] = (),
) -> list[Result]:
    """Evaluate the SLO as specified and under every alternative policy; episodes and
    scores are restricted to ``[start, end]`` (earlier data only fills the windows)."""
    relevant = [i for i in incidents if i.applies_to(slo) and i.end >= start and i.start <= end]
    out = []
    for policy in [Policy("as-specified"), *policies]:
        variant = policy.apply(slo)
        tiers = policy_tiers(policy, slo)
        variant = dataclasses.replace(variant, tiers=tiers)
        ev = evaluate(variant, data)
        ev.episodes = [e for e in ev.episodes if start <= e.start <= end]
        out.append(
            Result(variant, policy.name, ev, tiers, score(ev.episodes, tiers, relevant), start, end)
        )
    return out


def to_json(results: Sequence[Result], incidents: Sequence[Incident]) -> dict[str, Any]:
    """The machine-readable report."""

    def num(x: float) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 6)

    out: dict[str, Any] = {"incidents": [dataclasses.asdict(i) for i in incidents], "slos": []}
    for r in results:
        out["slos"].append(
            {
                "slo": r.slo.name,
                "policy": r.policy,
                "objective": r.slo.objective,
                "min_events": r.slo.min_events,
                "from": r.start,
                "to": r.end,
                "tiers": [
                    {
                        "name": t.name,
                        "severity": t.severity,
                        "long_window": format_duration(t.long_window),
                        "short_window": format_duration(t.short_window),
                        "factor": round(t.factor(r.slo.period), 6),
                    }
                    for t in r.tiers
                ],
                "episodes": [
                    {
                        "tier": e.tier,
                        "severity": e.severity,
                        "start": e.start,
                        "end": e.end,
                        "budget_consumed": num(e.budget_consumed),
                        "peak_burn": num(e.peak_burn),
                        **({"causes": r.causes[e.start]} if e.start in r.causes else {}),
                    }
                    for e in r.evaluation.episodes
                ],
                "scores": [
                    {
                        "tier": s.tier,
                        "episodes": s.episodes,
                        "true_positives": s.true_positives,
                        "incidents": s.incidents,
                        "detected": s.detected,
                        "precision": num(s.precision),
                        "recall": num(s.recall),
                        "mean_detection_seconds": num(s.mean_detection),
                        "mean_reset_seconds": num(s.mean_reset),
                    }
                    for s in r.scores
                ],
                "budget_remaining_at_end": num(
                    float(r.evaluation.budget_remaining[_index(r.evaluation, r.end)])
                ),
            }
        )
    return out


def _index(ev: Evaluation, t: float) -> int:
    return max(0, int(np.searchsorted(ev.timestamps, t, side="right")) - 1)
