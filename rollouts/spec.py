"""The canary analysis spec (YAML): which series are the baseline and which the canary, the
checks with their tolerances, the false-rollback rate, the minimum sample and the steps.

apiVersion: gpuslo/v1
kind: CanaryAnalysis
name: llama-70b-v2
baseline: {selector: {model: llama-3-70b}, pods: {namespace: inference, pod: "llama-70b-[0-9]+"}}
canary: {selector: {model: llama-3-70b-v2}, pods: {namespace: inference, pod: "llama-70b-v2-.*"}}
checks:
  - {kind: latency, metric: ttft, quantiles: [0.5, 0.9], tolerance: 0.1}
  - {kind: error_ratio, max_increase: 0.005}
  - {kind: cost_per_1m_tokens, tolerance: 0.1}

Validated like SLO specs: every problem as ``file:line:col: field: message``.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpuslo.foundation.durations import parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.specmodel import DNS_LABEL, FrozenStrict, check_duration
from gpuslo.foundation.yamlpos import load_single, problem_at

LatencyMetric = Literal["ttft", "tpot", "e2e"]
CheckKind = Literal[
    "latency", "error_ratio", "rejection_ratio", "cost_per_1m_tokens", "gpu_seconds_per_token"
]
_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class Side(FrozenStrict):
    """One side of the comparison: the request series (equality matchers on the canonical
    ``gen_ai_server_*`` series) and the pods it runs on (regex matchers on the cost rules'
    ``namespace`` and ``pod`` labels), for cost and GPU-seconds."""

    selector: dict[str, str] = Field(min_length=1, description="label: value of request series")
    pods: dict[str, str] = Field(
        default_factory=dict, description="label: regex of the pods (cost checks need it)"
    )

    @field_validator("selector", "pods")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(_LABEL, key):
                raise ValueError(f"{key!r} is not a Prometheus label name")
        return value


class Check(FrozenStrict):
    """One check. ``latency``: each quantile of the canary's distribution (from the histogram
    buckets) at most ``(1 + tolerance)`` times the baseline's. ``error_ratio`` and
    ``rejection_ratio``: the canary's ratio at most ``max_increase`` above the baseline's.
    ``cost_per_1m_tokens`` and ``gpu_seconds_per_token``: the canary's at most
    ``(1 + tolerance)`` times the baseline's."""

    kind: CheckKind
    name: str | None = Field(default=None, pattern=DNS_LABEL)
    metric: LatencyMetric | None = None
    quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.9])
    tolerance: float | None = Field(default=None, gt=0, le=10)
    max_increase: float | None = Field(default=None, gt=0, le=1)

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one quantile")
        for q in value:
            if not 0 < q < 1:
                raise ValueError(f"quantile {q} is not between 0 and 1 (exclusive)")
        return value

    @model_validator(mode="after")
    def _fields(self) -> Check:
        if self.kind == "latency":
            if self.metric is None:
                raise ValueError("a latency check needs metric (ttft, tpot or e2e)")
            if self.tolerance is None:
                raise ValueError("a latency check needs tolerance (e.g. 0.1 for 10%)")
        elif self.metric is not None:
            raise ValueError(f"metric applies to latency checks, not {self.kind}")
        if self.kind in ("error_ratio", "rejection_ratio"):
            if self.max_increase is None:
                raise ValueError(f"{self.kind} needs max_increase (e.g. 0.005)")
            if self.tolerance is not None:
                raise ValueError(f"{self.kind} takes max_increase, not tolerance")
        elif self.max_increase is not None:
            raise ValueError(f"max_increase applies to ratio checks, not {self.kind}")
        if self.kind in ("cost_per_1m_tokens", "gpu_seconds_per_token") and self.tolerance is None:
            raise ValueError(f"{self.kind} needs tolerance (e.g. 0.1 for 10%)")
        return self

    @property
    def id(self) -> str:
        if self.name:
            return self.name
        return f"{self.metric}-latency" if self.kind == "latency" else self.kind.replace("_", "-")


def default_checks() -> list[Check]:
    return [
        Check(kind="latency", metric="ttft", tolerance=0.1),
        Check(kind="latency", metric="tpot", tolerance=0.1),
        Check(kind="latency", metric="e2e", tolerance=0.1),
        Check(kind="error_ratio", max_increase=0.005),
        Check(kind="rejection_ratio", max_increase=0.005),
        Check(kind="cost_per_1m_tokens", tolerance=0.1),
        Check(kind="gpu_seconds_per_token", tolerance=0.1),
    ]


class RouteRef(FrozenStrict):
    """The Gateway API HTTPRoute whose backendRef weights split the traffic."""

    namespace: str = "default"
    name: str = Field(pattern=DNS_LABEL)
    baseline: str = Field(description="backendRef name of the baseline service")
    canary: str = Field(description="backendRef name of the canary service")


class Analysis(FrozenStrict):
    """How often and how long the controller analyses each step."""

    interval: str = Field(default="1m", description="time between analyses of a step")
    settle: str = Field(default="1m", description="after a weight change, ignored by the window")
    max_duration: str = Field(default="2h", description="a step still undecided by then ...")
    on_timeout: Literal["hold", "rollback"] = Field(
        default="hold", description="... holds (waits for a person) or rolls back"
    )

    _durations = field_validator("interval", "settle", "max_duration")(check_duration)


class CanarySpec(FrozenStrict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["CanaryAnalysis"]
    name: str = Field(pattern=DNS_LABEL)
    description: str = ""
    baseline: Side
    canary: Side
    checks: list[Check] = Field(default_factory=default_checks, min_length=1)
    window: str = Field(default="30m", description="`canary analyze` looks back this far")
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="false-rollback rate of the whole rollout"
    )
    min_requests: int = Field(default=2000, ge=1, description="per side, before any decision")
    rule_interval: str = Field(
        default="1m", description="evaluation interval of the cost recording rules"
    )
    token_cv: float = Field(
        default=1.0, ge=0, description="coefficient of variation of tokens per request"
    )
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100], min_length=1)
    route: RouteRef | None = None
    analysis: Analysis = Field(default_factory=Analysis)

    _durations = field_validator("window", "rule_interval")(check_duration)

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        for w in value:
            if not 0 < w <= 100:
                raise ValueError(f"step weight {w} is not in 1..100")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("step weights must increase")
        if value[-1] != 100:
            raise ValueError("the last step must be 100 (the canary takes all traffic)")
        return value

    @property
    def tests(self) -> int:
        """Statistical tests a decision makes (one per latency quantile, one per other check)."""
        return sum(len(ch.quantiles) if ch.kind == "latency" else 1 for ch in self.checks)

    def step_alpha(self) -> float:
        """The error rate of one test at one step: ``alpha`` spent evenly over the steps that
        are analysed (all but the last, 100%) and the tests (Bonferroni)."""
        return self.alpha / (max(1, len(self.steps) - 1) * self.tests)

    def seconds(self, field: str) -> float:
        value = getattr(self, field, None)
        if value is None:
            value = getattr(self.analysis, field)
        return parse_duration(value)


def load_spec(path: str | Path) -> CanarySpec:
    """Validate a canary analysis file; SpecError lists every problem with its place."""
    spec, node = load_single(path, CanarySpec, "CanaryAnalysis")
    problems: list[SpecProblem] = []
    cost_kinds = ("cost_per_1m_tokens", "gpu_seconds_per_token")
    if any(ch.kind in cost_kinds for ch in spec.checks):
        for side in ("baseline", "canary"):
            if not getattr(spec, side).pods:
                problems.append(
                    problem_at(path, node, (side,), "cost checks need pods (namespace, pod regex)")
                )
    seen: dict[str, int] = {}
    for i, ch in enumerate(spec.checks):
        if ch.id in seen:
            problems.append(
                problem_at(path, node, ("checks", i), f"a second check named {ch.id}; name it")
            )
        seen[ch.id] = i
    if spec.baseline.selector == spec.canary.selector:
        problems.append(
            problem_at(path, node, ("canary", "selector"), "the same selector as the baseline")
        )
    if problems:
        raise SpecError(problems)
    return spec
