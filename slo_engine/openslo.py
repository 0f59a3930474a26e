"""OpenSLO v1 (``apiVersion: openslo/v1``): SLO, SLI, AlertPolicy, AlertCondition, Service,
DataSource documents, with references resolved across every file given.

Supported: rolling and calendar (``1M``, ``1w``; UTC) ``timeWindow``s; ``Occurrences``,
``Timeslices`` and ``RatioTimeslices`` budgeting; ``ratioMetric`` (``counter: true`` wraps the
query in ``rate``) and ``thresholdMetric`` SLIs on Prometheus sources; several objectives per
SLO (one gpuslo SLO each); ``burnrate`` alert conditions (each one becomes a tier). What is not
supported is reported at its place in the file. Nothing is silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuslo.foundation.durations import format_duration, parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.promql import number
from gpuslo.foundation.specmodel import Strict
from gpuslo.foundation.yamlpos import field_path, locate, validation_problems

from .model import CALENDAR_PERIODS, SLO, AlertTier, Calendar
from .native import BASE_WINDOW
from .windows import DEFAULT_WINDOWS, load_tiers

API_VERSION = "openslo/v1"
KINDS = ("SLO", "SLI", "AlertPolicy", "AlertCondition", "Service", "DataSource")


class _Strict(Strict):
    model_config = ConfigDict(populate_by_name=True)  # fields by alias or by name


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
    thresholdMetric: _Metric | None = None


class _InlineSLI(_Strict):
    metadata: _Metadata
    spec: _SLISpec


class _Calendar(_Strict):
    startTime: str
    timeZone: str


class _TimeWindow(_Strict):
    duration: str
    isRolling: bool = True
    calendar: _Calendar | None = None


class _Objective(_Strict):
    @property
    def op_symbol(self) -> str:
        return _OPS[self.op or "gte"]

    displayName: str | None = None
    target: float | None = Field(default=None, gt=0, lt=1)
    targetPercent: float | None = Field(default=None, gt=0, lt=100)
    op: Literal["lt", "lte", "gt", "gte"] | None = None
    value: float | None = None
    timeSliceTarget: float | None = Field(default=None, gt=0, le=1)
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

    def sli(self, d: _Loaded) -> _Sli | None:
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
        if (sli.thresholdMetric is None) == (sli.ratioMetric is None):
            self.error(owner, base, "give exactly one of ratioMetric or thresholdMetric")
            return None
        if sli.thresholdMetric is not None:
            query = self.query(owner, (*base, "thresholdMetric"), sli.thresholdMetric)
            return None if query is None else _Sli("threshold", query)
        ratio = sli.ratioMetric
        assert ratio is not None
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
        return _Sli("ratio", total, part, part_name == "good", ratio.counter)

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

    def period(self, d: _Loaded) -> tuple[float, Calendar | None] | None:
        """The SLO period in seconds and, for calendar windows, the calendar."""
        window = d.spec.timeWindow[0]
        loc = ("spec", "timeWindow", 0)
        if window.isRolling:
            if window.calendar is not None:
                self.error(d, (*loc, "calendar"), "a rolling window takes no calendar")
                return None
            try:
                return parse_duration(window.duration), None
            except ValueError as err:
                self.error(d, (*loc, "duration"), str(err))
                return None
        calendar = _CALENDARS.get(window.duration)
        if calendar is None:
            self.error(
                d,
                (*loc, "duration"),
                f"calendar window {window.duration!r} is not supported; use 1M (month) or "
                "1w (week)",
            )
            return None
        if window.calendar is not None:
            cal = window.calendar
            if cal.timeZone not in ("UTC", "Etc/UTC", "GMT"):
                self.error(
                    d,
                    (*loc, "calendar", "timeZone"),
                    f"time zone {cal.timeZone!r} is not supported: Prometheus calendars are UTC",
                )
                return None
            if not _aligned(cal.startTime, calendar):
                first = "the first of a month" if calendar == "month" else "a Monday"
                self.error(
                    d,
                    (*loc, "calendar", "startTime"),
                    f"calendar {calendar}s start at 00:00 UTC on {first}; got {cal.startTime!r}",
                )
                return None
        return CALENDAR_PERIODS[calendar].nominal, CALENDAR_PERIODS[calendar]

    def objective_queries(
        self, d: _Loaded, oloc: tuple[Any, ...], obj: _Objective, sli: _Sli
    ) -> tuple[str, str, str] | None:
        """(errors, total, unit) for one objective under the SLO's budgeting method."""
        method = d.spec.budgetingMethod
        slices = method in ("Timeslices", "RatioTimeslices")
        if not slices and (obj.timeSliceTarget is not None or obj.timeSliceWindow is not None):
            self.error(d, oloc, "timeSliceTarget and timeSliceWindow need Timeslices budgeting")
            return None
        if sli.kind == "threshold" and (obj.op is None or obj.value is None):
            self.error(d, oloc, "a thresholdMetric SLI needs op and value in each objective")
            return None
        if sli.kind == "ratio" and (obj.op is not None or obj.value is not None):
            self.error(d, oloc, "op and value apply to thresholdMetric SLIs only")
            return None
        if not slices:
            if sli.kind == "ratio":
                return (*sli.occurrences(), "requests")
            good = f"({sli.total}) {obj.op_symbol} bool {number(obj.value)}"  # type: ignore[arg-type]
            return f"sum({_negate(good)})", f"count({sli.total})", "samples"
        if obj.timeSliceWindow is None:
            self.error(d, oloc, f"{method} budgeting needs timeSliceWindow")
            return None
        try:
            slice_w = format_duration(parse_duration(obj.timeSliceWindow))
        except ValueError as err:
            self.error(d, (*oloc, "timeSliceWindow"), str(err))
            return None
        if method == "Timeslices" and obj.timeSliceTarget is None:
            self.error(d, oloc, "Timeslices budgeting needs timeSliceTarget")
            return None
        if method == "RatioTimeslices" and obj.timeSliceTarget is not None:
            self.error(
                d,
                (*oloc, "timeSliceTarget"),
                "RatioTimeslices averages each slice's ratio; timeSliceTarget is for Timeslices",
            )
            return None
        if sli.kind == "ratio":
            good_ratio, bad_ratio, has_traffic = sli.slice_ratio(slice_w)
        else:
            good = f"({sli.total}) {obj.op_symbol} bool {number(obj.value)}"  # type: ignore[arg-type]
            good_ratio = f"avg_over_time(({good})[{slice_w}:])"
            bad_ratio, has_traffic = f"1 - {good_ratio}", ""
        if method == "Timeslices":
            bad = f"({good_ratio}) < bool {number(obj.timeSliceTarget)}"  # type: ignore[arg-type]
        else:
            bad = bad_ratio
        if sli.kind == "threshold":
            return f"sum({bad})", f"count({good_ratio})", "time slices"
        # One slice per evaluation, counted only when it saw traffic (a ratio of nothing is
        # neither good nor bad).
        return f"({bad}) and on() {has_traffic}", f"{has_traffic} * 0 + 1", "time slices"

    def slos(self) -> list[SLO]:
        out = []
        for name, d in sorted(self.by_kind["SLO"].items()):
            spec: _SLOSpec = d.spec
            period = self.period(d)
            sli = self.sli(d)
            # Resolve the alert policies even when the SLI failed, to report every problem.
            tiers = self.tiers(d, period[0] if period else CALENDAR_PERIODS["month"].nominal)
            if period is None or sli is None or not tiers:
                continue
            line, col = locate(d.node, ())
            for i, obj in enumerate(spec.objectives):
                oloc = ("spec", "objectives", i)
                queries = self.objective_queries(d, oloc, obj, sli)
                if queries is None:
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
                        period=period[0],
                        calendar=period[1],
                        errors_query=queries[0],
                        total_query=queries[1],
                        unit=queries[2],
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


@dataclass(frozen=True)
class _Sli:
    """A resolved SLI: a ratio of two Prometheus queries, or one thresholded query."""

    kind: Literal["ratio", "threshold"]
    total: str  # the total query, or the thresholded metric
    part: str = ""  # the good or bad query of a ratio
    part_is_good: bool = True
    counter: bool = True

    def _rate(self, query: str, window: str) -> str:
        # counter: true -> cumulative counters; otherwise the query is already a rate.
        return f"sum(rate({query}[{window}]))" if self.counter else f"sum({query})"

    def occurrences(self) -> tuple[str, str]:
        """(errors, total) as per-second rates over the base window."""
        total, part = self._rate(self.total, BASE_WINDOW), self._rate(self.part, BASE_WINDOW)
        return (f"({total} - {part})" if self.part_is_good else part), total

    def slice_ratio(self, window: str) -> tuple[str, str, str]:
        """(good ratio over one slice, bad ratio, a vector of 1 when the slice saw traffic)."""
        total, part = self._rate(self.total, window), self._rate(self.part, window)
        ratio, rest = f"{part} / {total}", f"1 - {part} / {total}"
        good, bad = (ratio, rest) if self.part_is_good else (rest, ratio)
        return good, bad, f"({total} > 0)"


_CALENDARS = {"1M": "month", "1w": "week", "7d": "week"}
_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _negate(condition: str) -> str:
    """``(q) <= bool 0.5`` -> ``(q) > bool 0.5``."""
    head, op, tail = re.match(r"^(.*) (<=|>=|<|>) (bool .*)$", condition).groups()  # type: ignore[union-attr]
    return f"{head} {_NEGATED[op]} {tail}"


def _aligned(start: str, calendar: str) -> bool:
    """Whether a calendar startTime falls on a period boundary (00:00 on the 1st, or Monday)."""
    try:
        when = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        return False
    if (when.hour, when.minute, when.second) != (0, 0, 0):
        return False
    return when.day == 1 if calendar == "month" else when.weekday() == 0


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
