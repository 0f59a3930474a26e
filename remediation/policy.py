"""Remediation policies: which alerts trigger which bounded action, under which guardrails.

apiVersion: gpuslo/v1
kind: RemediationPolicy
settings: {dry_run: false, prometheus: http://prometheus:9090}
policies:
  - name: chat-ttft-scale
    match: {slo: chat-ttft, severity: page}
    action:
      scale_pool: {pool: {namespace: inference, name: llama-70b}, step: 2, min: 2, max: 16}
    cooldown: 10m
    revert: {after: 15m}

Validated like SLO specs: every problem as ``file:line:col: field: message``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from gpuslo.foundation.durations import parse_duration
from gpuslo.foundation.errors import SpecError
from gpuslo.foundation.specmodel import DNS_LABEL, FrozenStrict
from gpuslo.foundation.yamlpos import load_single, problem_at

_NAME = DNS_LABEL


def _duration(value: str) -> str:
    seconds(value)  # a Prometheus duration, or 0s for none (a cooldown, a revert delay)
    return value


class Workload(FrozenStrict):
    """A scalable workload: Deployment or StatefulSet, by namespace and name."""

    namespace: str = "default"
    name: str = Field(pattern=_NAME)
    kind: Literal["Deployment", "StatefulSet"] = "Deployment"

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


class Route(FrozenStrict):
    """A Gateway API HTTPRoute whose backendRef weights split traffic between models."""

    namespace: str = "default"
    name: str = Field(pattern=_NAME)

    @property
    def ref(self) -> str:
        return f"HTTPRoute/{self.namespace}/{self.name}"


class ScalePool(FrozenStrict):
    """Add replicas to a serving pool (``step``) or raise it to ``target``, within bounds."""

    pool: Workload
    step: int | None = Field(default=None, gt=0)
    target: int | None = Field(default=None, gt=0)
    min: int = Field(default=1, ge=0)
    max: int = Field(gt=0)
    gpus_per_replica: int = Field(default=1, ge=0)
    max_gpus: int | None = Field(default=None, gt=0)
    dollars_per_gpu_hour: float = Field(default=0.0, ge=0)
    max_dollars_per_hour: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> ScalePool:
        if (self.step is None) == (self.target is None):
            raise ValueError("give exactly one of step or target")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.target is not None and not self.min <= self.target <= self.max:
            raise ValueError(f"target {self.target} is outside min..max ({self.min}..{self.max})")
        if self.max_dollars_per_hour is not None and self.dollars_per_gpu_hour == 0:
            raise ValueError("max_dollars_per_hour needs dollars_per_gpu_hour")
        return self

    def ceiling(self) -> int:
        """The most replicas the caps allow."""
        cap = self.max
        if self.max_gpus is not None and self.gpus_per_replica:
            cap = min(cap, self.max_gpus // self.gpus_per_replica)
        if self.max_dollars_per_hour is not None and self.gpus_per_replica:
            per_replica = self.gpus_per_replica * self.dollars_per_gpu_hour
            cap = min(cap, int(self.max_dollars_per_hour // per_replica))
        return cap


class CpuFallback(FrozenStrict):
    """Shift a share of a route's traffic to a CPU fallback model, in steps, after scaling the
    fallback pool up first."""

    route: Route
    primary: str = Field(description="backendRef name of the GPU model service")
    fallback: str = Field(description="backendRef name of the CPU fallback service")
    fallback_pool: Workload | None = None
    fallback_replicas: int = Field(default=1, gt=0)
    step_percent: int = Field(default=25, gt=0, le=100)
    max_percent: int = Field(default=50, gt=0, le=100)


class NotifyOnly(FrozenStrict):
    """Record the decision; act on nothing."""


_ACTIONS = ("scale_pool", "promote_warm", "cpu_fallback", "notify_only")


class Action(FrozenStrict):
    scale_pool: ScalePool | None = None
    # As scale_pool, but warm replicas (loaded, idle) serve first and cold ones start behind
    # them, where the actuator has a warm pool (the twin); elsewhere a plain scale.
    promote_warm: ScalePool | None = None
    cpu_fallback: CpuFallback | None = None
    notify_only: NotifyOnly | None = None

    @model_validator(mode="after")
    def _one(self) -> Action:
        if sum(getattr(self, k) is not None for k in _ACTIONS) != 1:
            raise ValueError(
                "give exactly one action: scale_pool, promote_warm, cpu_fallback or notify_only"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _ACTIONS if getattr(self, k) is not None)


class RateLimit(FrozenStrict):
    max: int = Field(gt=0)
    per: str = "1h"

    _per = field_validator("per")(_duration)


class Revert(FrozenStrict):
    after: str = Field(description="hysteresis: wait this long after resolution")

    _after = field_validator("after")(_duration)


CauseKind = Literal[
    "gpu_lost",
    "xid",
    "thermal_throttle",
    "nvlink_crc",
    "noisy_neighbour",
    "ib_flap",
    "replica_loss",
    "traffic_spike",
    "traffic_drop",
    "ecc",
    "pcie",
    "memory_pressure",
    "queueing",
    "kv_cache",
]
CAUSE_KINDS: tuple[str, ...] = get_args(CauseKind)  # what slo_engine.correlate names


class Policy(FrozenStrict):
    name: str = Field(pattern=_NAME, max_length=63)
    match: dict[str, str] = Field(min_length=1)
    action: Action
    when_cause: list[CauseKind] | None = Field(
        default=None,
        description="act only when the burn's most probable cause is one of these "
        "(gpuslo explain; needs settings.prometheus and settings.slo_specs)",
    )
    unless_cause: list[CauseKind] | None = Field(
        default=None, description="stand aside when the most probable cause is one of these"
    )
    cooldown: str = "10m"
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(max=6, per="1h"))
    revert: Revert | None = None

    _cooldown = field_validator("cooldown")(_duration)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match.items())


class Endpoint(FrozenStrict):
    """Where a notification goes: a URL, or a file holding it (a chat webhook URL is a
    secret); a bearer token file for endpoints that want one."""

    url: str | None = Field(default=None, pattern=r"^https?://")
    url_file: str | None = None
    token_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Endpoint:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("give exactly one of url or url_file")
        return self


class GrafanaTarget(FrozenStrict):
    """Grafana's HTTP API: an annotation per incident on the SLO's drill-down dashboard."""

    url: str = Field(pattern=r"^https?://")
    token_file: str = Field(description="a service-account token (Authorization: Bearer)")
    panel_id: int = Field(
        default=1,
        ge=0,
        description="the drill-down panel to annotate (1: the budget burn-down, the first "
        "panel as Grafana numbers them); 0: the whole dashboard",
    )
    dashboard_uid: str | None = Field(
        default=None, description="instead of the SLO's generated drill-down uid"
    )


class IncidentSettings(FrozenStrict):
    """Every page becomes an incident: explained at its startsAt, stored with the journal,
    served at /v1/incidents and announced where the on-call looks."""

    enabled: bool = True
    match: dict[str, str] = Field(
        default_factory=lambda: {"severity": "page"},
        description="which alerts are pages (labels they must carry); they also need an slo label",
    )
    external_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="the hook as people reach it (for links in messages and alerts)",
    )
    chat: Endpoint | None = Field(default=None, description="Slack-compatible webhook")
    webhook: Endpoint | None = Field(default=None, description="generic JSON webhook")
    grafana: GrafanaTarget | None = None
    workers: int = Field(default=4, ge=1, le=64)
    queue: int = Field(default=256, ge=1, le=100_000, description="pages waiting at most")
    open_pages: bool = Field(
        default=False,
        description="serve the HTML incident pages without the bearer token (a browser has "
        "none; otherwise put an authenticating proxy in front)",
    )


class Settings(FrozenStrict):
    dry_run: bool = False
    kill_switch: str | None = Field(
        default=None, description="a file whose presence stops every action"
    )
    prometheus: str | None = Field(
        default=None,
        description="checked before acting: the alert's expression must still return its "
        "series (stale or missing data returns nothing)",
    )
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(max=30, per="1h"))
    slo_specs: list[str] = Field(
        default_factory=list,
        description="SLO spec files (relative to this file) naming the alerts' slo label, for "
        "policies with when_cause/unless_cause",
    )
    explain_step: str = Field(default="1m", description="resolution of the cause analysis")
    dcgm_names: Literal["legacy", "current"] = Field(
        default="legacy",
        description="how the cluster's dcgm-exporter names GPU series: legacy (up to 4.8.x) "
        "or current (4.9.0 and later), as `gpuslo agent --dcgm-names`",
    )
    pool_by: str = Field(
        default="owner",
        description="how the cause analysis finds a pod's pool: owner (kube-state-metrics' "
        "ReplicaSet -> Deployment), label (the pool label) or label:NAME, as `--pool-by`",
    )
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)

    _explain_step = field_validator("explain_step")(_duration)

    @field_validator("pool_by")
    @classmethod
    def _pool_by(cls, value: str) -> str:
        from gpuslo.slo_engine.correlate import pool_identity

        pool_identity(value)  # a ValueError says what is allowed
        return value

    def correlator_config(self) -> Any:
        """The correlator's ``Config`` these settings describe (GPU naming, pool identity)."""
        from gpuslo.foundation import conventions as c
        from gpuslo.slo_engine.correlate import Config, pool_identity

        return Config(naming=c.gpu_naming(self.dcgm_names), pools=pool_identity(self.pool_by))


class PolicyFile(FrozenStrict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["RemediationPolicy"]
    settings: Settings = Field(default_factory=Settings)
    policies: list[Policy] = Field(min_length=1)


def load_policy(path: str | Path) -> PolicyFile:
    """Validate a policy file; SpecError lists every problem with its place."""
    spec, node = load_single(path, PolicyFile, "policy")
    seen: dict[str, int] = {}
    problems = []
    for i, p in enumerate(spec.policies):
        if p.name in seen:
            message = f"{p.name!r} is already policies[{seen[p.name]}]"
            problems.append(problem_at(path, node, ("policies", i, "name"), message))
        seen.setdefault(p.name, i)
        if (p.when_cause or p.unless_cause) and not (
            spec.settings.prometheus and spec.settings.slo_specs
        ):
            field = "when_cause" if p.when_cause else "unless_cause"
            message = "needs settings.prometheus and settings.slo_specs to find the cause"
            problems.append(problem_at(path, node, ("policies", i, field), message))
    if problems:
        raise SpecError(problems)
    return spec


def seconds(duration: str) -> float:
    """A Prometheus duration in seconds; ``0s`` (or ``0``) means none."""
    if duration.strip() in ("0", "0s"):
        return 0.0
    return parse_duration(duration)


def as_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)
