"""OpenSLO v1 (``apiVersion: openslo/v1``): SLO, SLI, AlertPolicy, AlertCondition, Service,
DataSource documents, with references resolved across every file given.

Supported: rolling ``timeWindow``s, ``budgetingMethod: Occurrences``, ``ratioMetric`` SLIs on
Prometheus sources (``counter: true`` wraps the query in ``rate``), several objectives per SLO
(one gpuslo SLO each), and ``burnrate`` alert conditions (each one becomes a tier). Calendar
windows, Timeslices budgeting and ``thresholdMetric`` SLIs are reported as not supported yet,
at their place in the file. Nothing is silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .durations import format_duration, parse_duration
from .errors import SpecError, SpecProblem
from .model import SLO, AlertTier
from .native import BASE_WINDOW
from .windows import DEFAULT_WINDOWS, load_tiers
from .yamlpos import field_path, locate, validation_problems

API_VERSION = "openslo/v1"
KINDS = ("SLO", "SLI", "AlertPolicy", "AlertCondition", "Service", "DataSource")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Metadata(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length=63)
    displayName: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class _MetricSourceSpec(_Strict):
    query: str | None = None
    promql: str | None = None


class _MetricSource(_Strict):
    metricSourceRef: str | None = None
    type: str | None = None
    spec: _MetricSourceSpec = Field(default_factory=_MetricSourceSpec)


class _Metric(_Strict):
    metricSource: _MetricSource


class _Ratio(_Strict):
    counter: bool = True
    good: _Metric | None = None
    bad: _Metric | None = None
    total: _Metric
    rawType: str | None = None
    raw: _Metric | None = None


class _SLISpec(_Strict):
    description: str = ""
    ratioMetric: _Ratio | None = None
    thresholdMetric: dict[str, Any] | None = None


class _InlineSLI(_Strict):
    metadata: _Metadata
    spec: _SLISpec


class _TimeWindow(_Strict):
    duration: str
    isRolling: bool = True
    calendar: dict[str, Any] | None = None


class _Objective(_Strict):
    displayName: str | None = None
    target: float | None = Field(default=None, gt=0, lt=1)
    targetPercent: float | None = Field(default=None, gt=0, lt=100)
    op: str | None = None
    value: float | None = None
    timeSliceTarget: float | None = None
    timeSliceWindow: str | None = None
    indicator: dict[str, Any] | None = None
    indicatorRef: str | None = None
    compositeWeight: float | None = None


class _ConditionSpec(_Strict):
    kind: Literal["burnrate"]
    op: Literal["gt", "gte"] = "gte"
    threshold: float = Field(gt=0)
    lookbackWindow: str
    alertAfter: str | None = None


class _AlertConditionSpec(_Strict):
    description: str = ""
    severity: str
    condition: _ConditionSpec


class _ConditionItem(_Strict):
    conditionRef: str | None = None
    kind: Literal["AlertCondition"] | None = None
    metadata: _Metadata | None = None
    spec: _AlertConditionSpec | None = None


class _AlertPolicySpec(_Strict):
    description: str = ""
    alertWhenNoData: bool = False
    alertWhenBreaching: bool = True
    alertWhenResolved: bool = False
    conditions: list[_ConditionItem] = Field(min_length=1)
    notificationTargets: list[dict[str, Any]] = Field(default_factory=list)


class _SLOSpec(_Strict):
    description: str = ""
    service: str
    indicator: _InlineSLI | None = None
    indicatorRef: str | None = None
    timeWindow: list[_TimeWindow] = Field(min_length=1, max_length=1)
    budgetingMethod: Literal["Occurrences", "Timeslices", "RatioTimeslices"]
    objectives: list[_Objective] = Field(min_length=1)
    alertPolicies: list[Any] = Field(default_factory=list)


class _Doc(_Strict):
    apiVersion: Literal["openslo/v1"]
    kind: Literal["SLO", "SLI", "AlertPolicy", "AlertCondition", "Service", "DataSource"]
    metadata: _Metadata
    spec: dict[str, Any]


_SPECS: dict[str, type[BaseModel]] = {
    "SLO": _SLOSpec,
    "SLI": _SLISpec,
    "AlertPolicy": _AlertPolicySpec,
    "AlertCondition": _AlertConditionSpec,
}


@dataclass
class _Loaded:
    path: str
    node: Any
    doc: _Doc
    spec: Any  # the kind's parsed spec, or the raw dict for Service/DataSource


def is_openslo(data: Any) -> bool:
    """True for OpenSLO v1 documents."""
    return isinstance(data, dict) and data.get("apiVersion") == API_VERSION


def parse_document(path: str, data: Any, node: Any) -> _Loaded:
    """Validate one document's envelope and its kind's spec."""
    try:
        doc = _Doc.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(path, node, err)) from err
    model = _SPECS.get(doc.kind)
    if model is None:
        return _Loaded(path, node, doc, doc.spec)
    try:
        spec = model.model_validate(doc.spec)
    except ValidationError as err:
        raise SpecError(validation_problems(path, node, err, ("spec",))) from err
    return _Loaded(path, node, doc, spec)


class _Resolver:
    def __init__(self, docs: list[_Loaded]) -> None:
        self.by_kind: dict[str, dict[str, _Loaded]] = {k: {} for k in KINDS}
        self.problems: list[SpecProblem] = []
        self.warnings: list[SpecProblem] = []
        for d in docs:
            seen = self.by_kind[d.doc.kind]
            if d.doc.metadata.name in seen:
                self.error(
                    d,
                    ("metadata", "name"),
                    f"{d.doc.kind} {d.doc.metadata.name!r} is defined twice",
                )
            seen[d.doc.metadata.name] = d

    def error(self, d: _Loaded, loc: tuple[Any, ...], msg: str, warn: bool = False) -> None:
        line, col = locate(d.node, loc)
        problem = SpecProblem(
            d.path, line, col, field_path(loc), msg, "warning" if warn else "error"
        )
        (self.warnings if warn else self.problems).append(problem)

    def query(self, d: _Loaded, loc: tuple[Any, ...], metric: _Metric) -> str | None:
        src = metric.metricSource
        kind = src.type
        if src.metricSourceRef:
            ds = self.by_kind["DataSource"].get(src.metricSourceRef)
            if ds is None:
                self.error(
                    d,
                    (*loc, "metricSource", "metricSourceRef"),
                    f"no DataSource named {src.metricSourceRef!r}",
                )
                return None
            kind = kind or str(ds.spec.get("type", ""))
        if (kind or "").lower() != "prometheus":
            self.error(
                d,
                (*loc, "metricSource", "type"),
                f"metric source type {kind!r} is not supported; use Prometheus",
            )
            return None
        text = src.spec.query or src.spec.promql
        if not text:
            self.error(d, (*loc, "metricSource", "spec"), "needs a query (or promql)")
            return None
        return text.strip()

    def sli(self, d: _Loaded) -> tuple[str, str] | None:
        spec: _SLOSpec = d.spec
        if (spec.indicator is None) == (spec.indicatorRef is None):
            self.error(d, ("spec",), "give exactly one of indicator or indicatorRef")
            return None
        base: tuple[str, ...]
        if spec.indicator is not None:
            owner, base, sli = d, ("spec", "indicator", "spec"), spec.indicator.spec
        else:
            ref = self.by_kind["SLI"].get(str(spec.indicatorRef))
            if ref is None:
                self.error(d, ("spec", "indicatorRef"), f"no SLI named {spec.indicatorRef!r}")
                return None
            owner, base, sli = ref, ("spec",), ref.spec
        if sli.thresholdMetric is not None:
            self.error(
                owner,
                (*base, "thresholdMetric"),
                "thresholdMetric SLIs are not supported yet; express the SLI as a ratioMetric",
            )
            return None
        ratio = sli.ratioMetric
        if ratio is None:
            self.error(owner, base, "needs a ratioMetric")
            return None
        if ratio.raw is not None or ratio.rawType is not None:
            self.error(owner, (*base, "ratioMetric", "raw"), "raw ratio metrics are not supported")
            return None
        if (ratio.good is None) == (ratio.bad is None):
            self.error(owner, (*base, "ratioMetric"), "give exactly one of good or bad")
            return None
        loc = (*base, "ratioMetric")
        total = self.query(owner, (*loc, "total"), ratio.total)
        part_name = "good" if ratio.good is not None else "bad"
        part_metric = ratio.good or ratio.bad
        assert part_metric is not None
        part = self.query(owner, (*loc, part_name), part_metric)
        if total is None or part is None:
            return None

        def rate(q: str) -> str:
            # counter: true -> cumulative counters; otherwise the query is already a rate.
            return f"sum(rate({q}[{BASE_WINDOW}]))" if ratio.counter else f"sum({q})"

        errors = f"({rate(total)} - {rate(part)})" if part_name == "good" else rate(part)
        return errors, rate(total)

    def tiers(self, d: _Loaded, period: float) -> tuple[AlertTier, ...]:
        spec: _SLOSpec = d.spec
        if not spec.alertPolicies:
            return load_tiers(DEFAULT_WINDOWS)
        tiers = []
        for i, item in enumerate(spec.alertPolicies):
            loc: tuple[Any, ...] = ("spec", "alertPolicies", i)
            if isinstance(item, str):
                policy_doc = self.by_kind["AlertPolicy"].get(item)
                if policy_doc is None:
                    self.error(d, loc, f"no AlertPolicy named {item!r}")
                    continue
                owner, policy, ploc = policy_doc, policy_doc.spec, ("spec",)
            else:
                self.error(
                    d,
                    loc,
                    "inline alert policies are not supported; reference an AlertPolicy by name",
                )
                continue
            for field in ("notificationTargets",):
                if getattr(policy, field):
                    self.error(
                        owner,
                        (*ploc, field),
                        "ignored: route notifications with "
                        "Alertmanager (see alertmanager-inhibit.yaml)",
                        warn=True,
                    )
            for j, cond in enumerate(policy.conditions):
                cloc = (*ploc, "conditions", j)
                if cond.conditionRef:
                    ref = self.by_kind["AlertCondition"].get(cond.conditionRef)
                    if ref is None:
                        self.error(
                            owner,
                            (*cloc, "conditionRef"),
                            f"no AlertCondition named {cond.conditionRef!r}",
                        )
                        continue
                    name, cspec = ref.doc.metadata.name, ref.spec
                elif cond.spec is not None and cond.metadata is not None:
                    name, cspec = cond.metadata.name, cond.spec
                else:
                    self.error(owner, cloc, "give conditionRef or an inline AlertCondition")
                    continue
                long_w = parse_duration(cspec.condition.lookbackWindow)
                # OpenSLO gives the long window only; pair it with 1/12 of it, as the workbook does.
                short_w = max(parse_duration("1m"), long_w / 12)
                tiers.append(
                    AlertTier(
                        name=name,
                        severity="page"
                        if cspec.severity.lower() in ("page", "critical")
                        else "ticket",
                        budget_fraction=cspec.condition.threshold * long_w / period,
                        long_window=long_w,
                        short_window=parse_duration(format_duration(short_w)),
                    )
                )
        return tuple(tiers)

    def slos(self) -> list[SLO]:
        out = []
        for name, d in sorted(self.by_kind["SLO"].items()):
            spec: _SLOSpec = d.spec
            window = spec.timeWindow[0]
            if window.calendar is not None or not window.isRolling:
                self.error(
                    d,
                    ("spec", "timeWindow", 0),
                    "calendar time windows are not supported yet; use isRolling: true",
                )
                continue
            if spec.budgetingMethod != "Occurrences":
                self.error(
                    d,
                    ("spec", "budgetingMethod"),
                    f"{spec.budgetingMethod} budgeting is not supported yet; use Occurrences",
                )
                continue
            try:
                period = parse_duration(window.duration)
            except ValueError as err:
                self.error(d, ("spec", "timeWindow", 0, "duration"), str(err))
                continue
            queries = self.sli(d)
            tiers = self.tiers(d, period)
            if queries is None or not tiers:
                continue
            line, col = locate(d.node, ())
            for i, obj in enumerate(spec.objectives):
                oloc = ("spec", "objectives", i)
                if obj.op is not None or obj.value is not None:
                    self.error(
                        d,
                        oloc,
                        "threshold objectives (op/value) need a thresholdMetric "
                        "SLI, not supported yet",
                    )
                    continue
                if obj.timeSliceTarget is not None or obj.timeSliceWindow is not None:
                    self.error(d, oloc, "timeslice objectives are not supported yet")
                    continue
                if (obj.target is None) == (obj.targetPercent is None):
                    self.error(d, oloc, "give exactly one of target or targetPercent")
                    continue
                target = obj.target if obj.target is not None else obj.targetPercent / 100  # type: ignore[operator]
                suffix = "" if len(spec.objectives) == 1 else f"-{_slug(obj.displayName, i)}"
                out.append(
                    SLO(
                        name=f"{name}{suffix}",
                        service=spec.service,
                        objective=round(target, 12),
                        period=period,
                        errors_query=queries[0],
                        total_query=queries[1],
                        tiers=tiers,
                        description=spec.description,
                        # OpenSLO label values are a string or a list of strings.
                        labels=tuple(
                            sorted(
                                (k, v if isinstance(v, str) else ",".join(map(str, v)))
                                for k, v in d.doc.metadata.labels.items()
                            )
                        ),
                        source=(d.path, line, col),
                    )
                )
        return out


def _slug(display_name: str | None, index: int) -> str:
    """An objective's name suffix: its displayName made label-safe, else its index."""
    slug = re.sub(r"[^a-z0-9]+", "-", (display_name or "").lower()).strip("-")
    return slug or str(index)


def load_openslo(documents: list[tuple[str, Any, Any]]) -> tuple[list[SLO], list[SpecProblem]]:
    """SLOs from every OpenSLO document given (references resolve across files)."""
    loaded, problems = [], []
    for path, data, node in documents:
        try:
            loaded.append(parse_document(path, data, node))
        except SpecError as err:
            problems += err.problems
    if problems:
        raise SpecError(problems)
    resolver = _Resolver(loaded)
    slos = resolver.slos()
    if resolver.problems:
        raise SpecError(resolver.problems)
    return slos, resolver.warnings


__all__ = ["is_openslo", "load_openslo"]
