"""OpenSLO v1 (``apiVersion: openslo/v1``) and v2alpha (``apiVersion: openslo.com/v2alpha``):
every kind (SLO, SLI, AlertPolicy, AlertCondition, AlertNotificationTarget, Service,
DataSource), with references resolved across every file given.

Two questions are kept apart:

- *Is this a valid document of its spec?* Answered as the OpenSLO JSON schema answers it
  (``schemas/v1`` in the OpenSLO repository): required fields, enums, patterns, length limits.
  Those problems are errors, always.
- *Can gpuslo turn it into Prometheus rules?* What it cannot (a Datadog source, a reference to a
  document not given, a burn-rate condition that fires below its threshold, an unknown time
  zone) is an ``unsupported`` problem: a warning for ``slo validate``, an error for
  ``slo generate`` (``load_openslo(..., unsupported="error")``, the default). Documents nothing
  needs (a Service, a DataSource or an AlertCondition no SLO uses) are skipped with a warning.

Unknown fields are allowed by the schema; gpuslo warns about each one at its key, so nothing
is silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gpuslo.foundation.durations import format_duration, parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.promql import number
from gpuslo.foundation.specmodel import DNS_LABEL
from gpuslo.foundation.yamlpos import construct, field_path, locate, validation_problems

from .model import CALENDAR_DURATION_UNITS, NOMINAL_SECONDS, SLO, AlertTier, Calendar
from .native import BASE_WINDOW
from .windows import DEFAULT_WINDOWS, load_tiers

API_VERSION = "openslo/v1"
API_V2ALPHA = "openslo.com/v2alpha"
API_VERSIONS = (API_VERSION, API_V2ALPHA)
KINDS = (
    "SLO",
    "SLI",
    "AlertPolicy",
    "AlertCondition",
    "AlertNotificationTarget",
    "Service",
    "DataSource",
)

# Patterns and limits of the OpenSLO v1 schema (schemas/v1/parts/*.schema.json).
NAME = r"^[a-z0-9][a-z0-9.|/\\-]*[a-z0-9]*$"  # name.schema.json, 1..255 characters
LABEL_VALUE = r"^[a-z0-9A-Z][a-z0-9A-Z._-]*[a-z0-9A-Z]*$"  # 1..63 characters
ANNOTATION_KEY = (
    r"^(([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9][a-z0-9-]{0,61}[a-z0-9]/)?"
    r"[a-z0-9A-Z][a-z0-9A-Z._-]*[a-z0-9A-Z]*$"
)
DESCRIPTION_MAX = 1050
DURATION_SHORTHAND = r"^[1-9][0-9]*[mhdwMQY]$"
START_TIME = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
TIME_ZONE = r"[A-Z][a-zA-Z_]+/[A-Z][a-zA-Z_]+"  # unanchored, as in the schema
_UTC_NAMES = ("Etc/UTC", "Etc/GMT", "Etc/Zulu", "Etc/Universal", "Etc/UCT", "Etc/Greenwich")
_SHORTHAND_SECONDS = {
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "M": NOMINAL_SECONDS["month"],
    "Q": NOMINAL_SECONDS["quarter"],
    "Y": NOMINAL_SECONDS["year"],
}

Name = str  # checked by _check_name (pattern and length), for a located message
Description = str


def _check_name(value: Any) -> Any:
    if isinstance(value, str):
        if not 1 <= len(value) <= 255:
            raise ValueError("a name is 1 to 255 characters")
        if not re.match(NAME, value):
            raise ValueError(f"{value!r} is not a name: lowercase letters, digits, - . | / \\")
    return value


def _check_description(value: Any) -> Any:
    if isinstance(value, str) and len(value) > DESCRIPTION_MAX:
        raise ValueError(
            f"at most {DESCRIPTION_MAX} characters (this description has {len(value)})"
        )
    return value


def _check_shorthand(value: Any) -> Any:
    if isinstance(value, str) and not re.match(DURATION_SHORTHAND, value):
        raise ValueError(f"{value!r} is not a duration shorthand like 5m, 1h, 28d, 1w, 1M, 1Q, 1Y")
    return value


def shorthand_seconds(value: str) -> float:
    """Seconds in a duration shorthand (a month, quarter or year at its nominal length)."""
    return int(value[:-1]) * _SHORTHAND_SECONDS[value[-1]]


class _Open(BaseModel):
    """An OpenSLO model: unknown fields are allowed (the schema allows them) and warned about."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _version(info: ValidationInfo) -> str:
    return str((info.context or {}).get("version", API_VERSION))


class _Metadata(_Open):
    name: Name
    displayName: str | None = Field(default=None, min_length=1)
    labels: dict[str, str | list[str]] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    _name = field_validator("name")(_check_name)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for key, v in value.items():
            for item in [v] if isinstance(v, str) else v:
                if not 1 <= len(item) <= 63 or not re.match(LABEL_VALUE, item):
                    raise ValueError(
                        f"label {key}: {item!r} is not a label value (1 to 63 letters, digits, "
                        "'.', '_' or '-', starting with a letter or digit)"
                    )
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(ANNOTATION_KEY, key) or not re.match(r"^(.{2,253}/)?.{1,63}$", key):
                raise ValueError(f"{key!r} is not an annotation key (prefix/name)")
        return value


class _DataSourceSpec(_Open):
    """A DataSource's spec, and v2alpha's inline ``dataSourceSpec``."""

    description: Description = ""
    type: str
    # An object in the schema; a list of objects in OpenSLO's own examples (the Go SDK
    # keeps it as raw JSON). Both are taken.
    connectionDetails: dict[str, Any] | list[Any]

    _description = field_validator("description")(_check_description)


class _MetricSource(_Open):
    metricSourceRef: Name | None = None
    type: str | None = None
    spec: dict[str, Any]

    _ref = field_validator("metricSourceRef")(_check_name)


class _Metric(_Open):
    """A metric: ``metricSource`` in v1; ``dataSourceRef`` or ``dataSourceSpec`` with ``spec``
    in v2alpha."""

    metricSource: _MetricSource | None = None
    dataSourceRef: Name | None = None
    dataSourceSpec: _DataSourceSpec | None = None
    spec: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _shape(self, info: ValidationInfo) -> _Metric:
        if _version(info) == API_VERSION:
            if self.metricSource is None:
                raise ValueError("metricSource: Field required")
        elif self.metricSource is not None:
            raise ValueError("metricSource is openslo/v1; v2alpha names dataSourceRef and spec")
        elif self.spec is None:
            raise ValueError("spec: Field required")
        elif (self.dataSourceRef is None) == (self.dataSourceSpec is None):
            raise ValueError("give exactly one of dataSourceRef or dataSourceSpec")
        return self

    def source(self) -> tuple[str | None, str | None, dict[str, Any], tuple[str, ...]]:
        """(data source name, type, query spec, where the type is) for either version."""
        if self.metricSource is not None:
            m = self.metricSource
            return m.metricSourceRef, m.type, m.spec, ("metricSource", "type")
        if self.dataSourceSpec is not None:
            return None, self.dataSourceSpec.type, self.spec or {}, ("dataSourceSpec", "type")
        return self.dataSourceRef, None, self.spec or {}, ("dataSourceRef",)


class _Ratio(_Open):
    counter: bool = True
    good: _Metric | None = None
    bad: _Metric | None = None
    total: _Metric | None = None
    rawType: Literal["success", "failure"] | None = None
    raw: _Metric | None = None

    @model_validator(mode="after")
    def _parts(self, info: ValidationInfo) -> _Ratio:
        fields = self.model_fields_set
        if _version(info) == API_VERSION:
            if self.raw is not None and self.rawType is not None and not self.total:
                return self  # a raw ratio (the spec text and OpenSLO's examples)
            if "counter" not in fields:
                raise ValueError("counter: Field required")
            if self.total is None:
                raise ValueError("total: Field required")
            if (self.good is None) == (self.bad is None):
                raise ValueError("give exactly one of good or bad")
        elif self.raw is None and ((self.good is None) == (self.bad is None) or not self.total):
            raise ValueError("give good or bad with total, or raw with rawType")
        return self


class _SLISpec(_Open):
    description: Description = ""
    ratioMetric: _Ratio | None = None
    thresholdMetric: _Metric | None = None

    _description = field_validator("description")(_check_description)

    @model_validator(mode="after")
    def _one(self) -> _SLISpec:
        if (self.thresholdMetric is None) == (self.ratioMetric is None):
            raise ValueError("give exactly one of ratioMetric or thresholdMetric")
        return self


class _InlineSLI(_Open):
    metadata: _Metadata
    spec: _SLISpec


class _Calendar(_Open):
    startTime: str = Field(pattern=START_TIME)
    timeZone: str = Field(pattern=TIME_ZONE)


class _TimeWindow(_Open):
    duration: str
    # Omitted: a calendar window when a calendar is given, else rolling (the spec text; the
    # schema asks for a calendar only when isRolling is given and not true).
    isRolling: bool | None = None
    calendar: _Calendar | None = None

    _duration = field_validator("duration")(_check_shorthand)

    @model_validator(mode="after")
    def _calendar(self) -> _TimeWindow:
        if self.isRolling is False and self.calendar is None:
            raise ValueError("a window that is not rolling (isRolling: true) needs a calendar")
        return self


class _Objective(_Open):
    @property
    def op_symbol(self) -> str:
        return _OPS[self.op or "gte"]

    displayName: str | None = Field(default=None, min_length=1)
    op: Literal["lt", "lte", "gt", "gte"] | None = None
    value: float | None = None
    target: float | None = Field(default=None, ge=0, lt=1)
    targetPercent: float | None = Field(default=None, ge=0, lt=100)
    timeSliceTarget: float | None = Field(default=None, gt=0, le=1)
    timeSliceWindow: str | float | None = None
    compositeWeight: float | None = Field(default=None, gt=0)
    indicator: _InlineSLI | None = None  # v1 composite objectives
    indicatorRef: Name | None = None
    sli: _InlineSLI | None = None  # v2alpha
    sliRef: Name | None = None

    @field_validator("timeSliceWindow")
    @classmethod
    def _slice(cls, value: str | float | None) -> str | float | None:
        if isinstance(value, (int, float)) and value <= 0:
            raise ValueError("a timeSliceWindow in seconds must be above 0")
        _check_shorthand(value)
        return value

    @model_validator(mode="after")
    def _target(self) -> _Objective:
        if (self.target is None) == (self.targetPercent is None):
            raise ValueError("give exactly one of target or targetPercent")
        return self

    @property
    def ratio(self) -> float:
        return self.target if self.target is not None else (self.targetPercent or 0) / 100


class _AlertPolicyRef(_Open):
    alertPolicyRef: Name


class _SLOSpec(_Open):
    description: Description = ""
    service: Name
    indicator: _InlineSLI | None = None
    indicatorRef: Name | None = None
    sli: _InlineSLI | None = None
    sliRef: Name | None = None
    timeWindow: list[_TimeWindow] = Field(default_factory=list, max_length=1)
    budgetingMethod: Literal["Occurrences", "Timeslices", "RatioTimeslices"]
    objectives: list[_Objective]
    alertPolicies: list[Name | _AlertPolicyRef | dict[str, Any]] = Field(default_factory=list)

    _description = field_validator("description")(_check_description)
    _names = field_validator("service", "indicatorRef", "sliRef")(_check_name)

    @model_validator(mode="after")
    def _shape(self, info: ValidationInfo) -> _SLOSpec:
        v1 = _version(info) == API_VERSION
        inline, ref = ("indicator", "indicatorRef") if v1 else ("sli", "sliRef")
        other = ("sli", "sliRef") if v1 else ("indicator", "indicatorRef")
        for name in other:
            if getattr(self, name) is not None:
                raise ValueError(f"{name} is not a field of {_version(info)}; use {inline}/{ref}")
        given = [getattr(self, inline) is not None, getattr(self, ref) is not None]
        per_objective = all(
            o.indicator or o.indicatorRef or o.sli or o.sliRef for o in self.objectives
        )
        if all(given) or (not any(given) and not (per_objective and self.objectives)):
            raise ValueError(f"give exactly one of {inline} or {ref}")
        if self.budgetingMethod in ("Timeslices", "RatioTimeslices"):
            for i, obj in enumerate(self.objectives):
                if obj.timeSliceWindow is None:
                    raise ValueError(
                        f"objectives[{i}]: {self.budgetingMethod} needs timeSliceWindow"
                    )
                if self.budgetingMethod == "Timeslices" and obj.timeSliceTarget is None:
                    raise ValueError(f"objectives[{i}]: Timeslices needs timeSliceTarget")
        return self


class _Condition(_Open):
    kind: Literal["burnrate"] = "burnrate"
    op: Literal["lt", "lte", "gt", "gte"] = "gte"
    threshold: float
    lookbackWindow: str
    alertAfter: str | None = None

    _windows = field_validator("lookbackWindow", "alertAfter")(_check_shorthand)


class _AlertConditionSpec(_Open):
    description: Description = ""
    severity: str
    condition: _Condition

    _description = field_validator("description")(_check_description)

    @model_validator(mode="after")
    def _required(self, info: ValidationInfo) -> _AlertConditionSpec:
        # An AlertCondition document's burnrate condition names all four (the schema's
        # if/then); conditions inline in an AlertPolicy are not held to it upstream.
        if (info.context or {}).get("kind") == "AlertCondition":
            missing = [
                f
                for f in ("op", "threshold", "lookbackWindow", "alertAfter")
                if f not in self.condition.model_fields_set
            ]
            if missing:
                raise ValueError(f"condition: a burnrate condition needs {', '.join(missing)}")
        return self


class _ConditionItem(_Open):
    conditionRef: Name | None = None
    kind: Literal["AlertCondition"] | None = None
    metadata: _Metadata | None = None
    spec: _AlertConditionSpec | None = None
    operator: Literal["and", "or"] | None = None

    _ref = field_validator("conditionRef")(_check_name)

    @model_validator(mode="after")
    def _one(self) -> _ConditionItem:
        inline = self.kind is not None and self.metadata is not None and self.spec is not None
        if (self.conditionRef is not None) == inline:
            raise ValueError("give conditionRef, or kind, metadata and spec of an AlertCondition")
        return self


class _NotificationTargetSpec(_Open):
    description: Description = ""
    target: str

    _description = field_validator("description")(_check_description)


class _TargetItem(_Open):
    targetRef: Name | None = None
    kind: Literal["AlertNotificationTarget"] | None = None
    metadata: _Metadata | None = None
    spec: _NotificationTargetSpec | None = None

    _ref = field_validator("targetRef")(_check_name)

    @model_validator(mode="after")
    def _one(self) -> _TargetItem:
        inline = self.kind is not None and self.metadata is not None and self.spec is not None
        if (self.targetRef is not None) == inline:
            raise ValueError(
                "give targetRef, or kind, metadata and spec of an AlertNotificationTarget"
            )
        return self


class _AlertPolicySpec(_Open):
    description: Description = ""
    # Required by the JSON schema; optional in the Go SDK and in OpenSLO's own examples.
    alertWhenNoData: bool = False
    alertWhenBreaching: bool = True
    alertWhenResolved: bool = False
    conditions: list[_ConditionItem] = Field(min_length=1, max_length=1)
    notificationTargets: list[_TargetItem] = Field(min_length=1)

    _description = field_validator("description")(_check_description)


class _ServiceSpec(_Open):
    description: Description = ""

    _description = field_validator("description")(_check_description)


class _Doc(_Open):
    apiVersion: Literal["openslo/v1", "openslo.com/v2alpha"]
    kind: Literal[
        "SLO",
        "SLI",
        "AlertPolicy",
        "AlertCondition",
        "AlertNotificationTarget",
        "Service",
        "DataSource",
    ]
    metadata: _Metadata
    spec: dict[str, Any]


_SPECS: dict[str, type[BaseModel]] = {
    "SLO": _SLOSpec,
    "SLI": _SLISpec,
    "AlertPolicy": _AlertPolicySpec,
    "AlertCondition": _AlertConditionSpec,
    "AlertNotificationTarget": _NotificationTargetSpec,
    "Service": _ServiceSpec,
    "DataSource": _DataSourceSpec,
}


@dataclass
class _Loaded:
    path: str
    node: Any
    doc: _Doc
    spec: Any  # the kind's parsed spec
    used: bool = False

    @property
    def name(self) -> str:
        return self.doc.metadata.name


def is_openslo(data: Any) -> bool:
    """True for OpenSLO v1 and v2alpha documents."""
    return isinstance(data, dict) and data.get("apiVersion") in API_VERSIONS


def _plain(node: Any) -> Any:
    """The document's data with unquoted timestamps as written, from the composed nodes (no
    second parse)."""
    return construct(node, timestamps_as_text=True)


def _extras(model: BaseModel, loc: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    """Where each unknown field of a parsed model (and its parts) is."""
    out: list[tuple[str | int, ...]] = [(*loc, k) for k in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if isinstance(item, BaseModel):
                out += _extras(item, (*loc, name) if i is None else (*loc, name, i))
    return out


def parse_document(path: str, data: Any, node: Any) -> tuple[_Loaded, list[SpecProblem]]:
    """Validate one document's envelope and its kind's spec, as the schema does; the
    warnings are its unknown fields."""
    data = _plain(node) if node is not None else data
    try:
        doc = _Doc.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(path, node, err)) from err
    context = {"version": doc.apiVersion, "kind": doc.kind}
    try:
        spec = _SPECS[doc.kind].model_validate(doc.spec, context=context)
    except ValidationError as err:
        raise SpecError(validation_problems(path, node, err, ("spec",))) from err
    warnings = []
    for loc in _extras(doc, ()) + _extras(spec, ("spec",)):
        line, col = locate(node, loc, key=True)
        warnings.append(
            SpecProblem(
                path, line, col, field_path(loc), "not a field of OpenSLO; ignored", "warning"
            )
        )
    return _Loaded(path, node, doc, spec), warnings


@dataclass(frozen=True)
class NotificationRoute:
    """Where one AlertPolicy's alerts go: the SLOs and tiers it alerts on, and a target."""

    policy: str
    target: str  # the AlertNotificationTarget's name
    address: str  # its spec.target (an email address, a URL, ...)
    description: str
    slos: tuple[str, ...]
    tiers: tuple[str, ...]
    source: tuple[str, int, int]


@dataclass
class _Sli:
    """A resolved SLI: a ratio of two Prometheus queries, or one thresholded query."""

    kind: Literal["ratio", "threshold"]
    total: str  # the total query, or the thresholded metric
    part: str = ""  # the good or bad query of a ratio
    part_is_good: bool = True
    counter: bool = True

    def _rate(self, query: str, window: str) -> str:
        # counter: true -> cumulative counters; otherwise the query is already a rate. A
        # counter query that is not a plain selector (``sum(x_total{...})``, as OpenSLO's
        # examples write it) is rated through a subquery, the only range PromQL allows there.
        if not self.counter:
            return f"sum({query})"
        if _SELECTOR.match(query):
            return f"sum(rate({query}[{window}]))"
        return f"sum(rate(({query})[{window}:]))"

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


@dataclass
class _Resolver:
    docs: list[_Loaded]
    by_kind: dict[str, dict[str, _Loaded]] = field(default_factory=dict)
    problems: list[SpecProblem] = field(default_factory=list)
    unsupported: list[SpecProblem] = field(default_factory=list)
    warnings: list[SpecProblem] = field(default_factory=list)
    routes: list[NotificationRoute] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_kind = {k: {} for k in KINDS}
        for d in self.docs:
            seen = self.by_kind[d.doc.kind]
            if d.name in seen:
                self.note(
                    d,
                    ("metadata", "name"),
                    f"{d.doc.kind} {d.name!r} is defined twice "
                    f"(first at {seen[d.name].path}:{locate(seen[d.name].node, ())[0]})",
                    "error",
                )
            seen[d.name] = d

    def note(
        self,
        d: _Loaded,
        loc: tuple[Any, ...],
        msg: str,
        kind: Literal["error", "unsupported", "warning"] = "unsupported",
    ) -> None:
        line, col = locate(d.node, loc)
        severity: Literal["error", "warning"] = "error" if kind == "error" else "warning"
        problem = SpecProblem(d.path, line, col, field_path(loc), msg, severity)
        {"error": self.problems, "unsupported": self.unsupported, "warning": self.warnings}[
            kind
        ].append(problem)

    def get(self, kind: str, name: str) -> _Loaded | None:
        found = self.by_kind[kind].get(name)
        if found is not None:
            found.used = True
        return found

    def query(self, d: _Loaded, loc: tuple[Any, ...], metric: _Metric) -> str | None:
        ref, kind, spec, type_loc = metric.source()
        if ref:
            ds = self.get("DataSource", ref)
            if ds is None:
                ref_loc = ("metricSource", "metricSourceRef") if metric.metricSource else type_loc
                self.note(d, (*loc, *ref_loc), f"no DataSource named {ref!r} is given")
                return None
            kind = kind or ds.spec.type
        if (kind or "").lower() != "prometheus":
            self.note(
                d,
                (*loc, *type_loc),
                f"metric source type {kind!r} cannot become Prometheus rules; use Prometheus",
            )
            return None
        text = spec.get("query") or spec.get("promql")
        if not isinstance(text, str) or not text.strip():
            self.note(d, (*loc, "spec"), "a Prometheus metric needs spec.query (or promql)")
            return None
        return text.strip()

    def sli(
        self, d: _Loaded, base: tuple[Any, ...], inline: _InlineSLI | None, ref: str | None
    ) -> _Sli | None:
        v1 = d.doc.apiVersion == API_VERSION
        if inline is not None:
            owner, at, sli = d, (*base, "indicator" if v1 else "sli", "spec"), inline.spec
        else:
            found = self.get("SLI", str(ref))
            if found is None:
                self.note(
                    d, (*base, "indicatorRef" if v1 else "sliRef"), f"no SLI named {ref!r} is given"
                )
                return None
            owner, at, sli = found, ("spec",), found.spec
        if sli.thresholdMetric is not None:
            query = self.query(owner, (*at, "thresholdMetric"), sli.thresholdMetric)
            return None if query is None else _Sli("threshold", query)
        ratio = sli.ratioMetric
        assert ratio is not None
        loc = (*at, "ratioMetric")
        if ratio.raw is not None:
            self.note(owner, (*loc, "raw"), "raw ratio metrics cannot become Prometheus rules")
            return None
        assert ratio.total is not None
        part_name = "good" if ratio.good is not None else "bad"
        part_metric = ratio.good or ratio.bad
        assert part_metric is not None
        total = self.query(owner, (*loc, "total"), ratio.total)
        part = self.query(owner, (*loc, part_name), part_metric)
        if total is None or part is None:
            return None
        return _Sli("ratio", total, part, part_name == "good", ratio.counter)

    def tiers(self, d: _Loaded, period: float) -> tuple[AlertTier, ...] | None:
        spec: _SLOSpec = d.spec
        if not spec.alertPolicies:
            return load_tiers(DEFAULT_WINDOWS)
        tiers: list[AlertTier] = []
        ok = True
        for i, item in enumerate(spec.alertPolicies):
            loc: tuple[Any, ...] = ("spec", "alertPolicies", i)
            if isinstance(item, dict):
                self.note(d, loc, "inline alert policies are not supported; name an AlertPolicy")
                ok = False
                continue
            name = item if isinstance(item, str) else item.alertPolicyRef
            policy_doc = self.get("AlertPolicy", name)
            if policy_doc is None:
                self.note(d, loc, f"no AlertPolicy named {name!r} is given")
                ok = False
                continue
            policy: _AlertPolicySpec = policy_doc.spec
            ploc: tuple[Any, ...] = ("spec",)
            names = []
            for j, cond in enumerate(policy.conditions):
                cloc = (*ploc, "conditions", j)
                if cond.conditionRef:
                    ref = self.get("AlertCondition", cond.conditionRef)
                    if ref is None:
                        self.note(
                            policy_doc,
                            (*cloc, "conditionRef"),
                            f"no AlertCondition named {cond.conditionRef!r} is given",
                        )
                        ok = False
                        continue
                    owner, at, cname, cspec = ref, ("spec",), ref.name, ref.spec
                else:
                    assert cond.metadata is not None and cond.spec is not None
                    owner, at, cname, cspec = (
                        policy_doc,
                        (*cloc, "spec"),
                        cond.metadata.name,
                        cond.spec,
                    )
                c = cspec.condition
                if c.op in ("lt", "lte"):
                    self.note(
                        owner,
                        (*at, "condition", "op"),
                        f"a burn-rate alert fires above its threshold; op {c.op!r} cannot "
                        "become a burn-rate tier",
                    )
                    ok = False
                    continue
                long_w = shorthand_seconds(c.lookbackWindow)
                # OpenSLO gives the long window only; pair it with 1/12 of it, as the workbook does.
                short_w = max(60.0, long_w / 12)
                names.append(cname)
                if policy.alertWhenBreaching:
                    tiers.append(
                        AlertTier(
                            name=cname,
                            severity="page"
                            if cspec.severity.lower() in ("page", "critical")
                            else "ticket",
                            budget_fraction=c.threshold * long_w / period,
                            long_window=long_w,
                            short_window=parse_duration(format_duration(short_w)),
                        )
                    )
            self.targets(policy_doc, d, names)
        return tuple(tiers) if ok else None

    def targets(self, policy_doc: _Loaded, slo: _Loaded, tiers: list[str]) -> None:
        policy: _AlertPolicySpec = policy_doc.spec
        for k, item in enumerate(policy.notificationTargets):
            tloc = ("spec", "notificationTargets", k)
            if item.targetRef:
                ref = self.get("AlertNotificationTarget", item.targetRef)
                if ref is None:
                    self.note(
                        policy_doc,
                        (*tloc, "targetRef"),
                        f"no AlertNotificationTarget named {item.targetRef!r} is given; "
                        "gpuslo alerts config cannot route to it",
                        "warning",
                    )
                    continue
                name, tspec, where = ref.name, ref.spec, ref
            else:
                assert item.metadata is not None and item.spec is not None
                name, tspec, where = item.metadata.name, item.spec, policy_doc
            line, col = locate(where.node, ())
            self.routes.append(
                NotificationRoute(
                    policy_doc.name,
                    name,
                    tspec.target,
                    tspec.description,
                    (slo.name,),
                    tuple(tiers),
                    (where.path, line, col),
                )
            )

    def period(self, d: _Loaded) -> tuple[float, Calendar | None] | None:
        """The SLO period in seconds and, for calendar windows, the calendar."""
        spec: _SLOSpec = d.spec
        if not spec.timeWindow:
            self.note(d, ("spec",), "gpuslo needs a timeWindow to compute an error budget")
            return None
        window = spec.timeWindow[0]
        loc = ("spec", "timeWindow", 0)
        rolling = window.calendar is None if window.isRolling is None else window.isRolling
        if rolling:
            if window.calendar is not None:
                self.note(d, (*loc, "calendar"), "a rolling window ignores its calendar", "warning")
            return shorthand_seconds(window.duration), None
        count, unit_char = int(window.duration[:-1]), window.duration[-1]
        unit = CALENDAR_DURATION_UNITS.get(unit_char)
        if unit is None:
            self.note(
                d,
                (*loc, "duration"),
                f"a calendar window counts days, weeks, months, quarters or years; got "
                f"{window.duration!r}",
            )
            return None
        cal = window.calendar
        assert cal is not None
        zone = cal.timeZone
        if zone in _UTC_NAMES:
            zone = "UTC"
        else:
            try:
                Calendar("day", time_zone=zone).zone()  # the model's own zone check
            except ValueError:
                self.note(d, (*loc, "calendar", "timeZone"), f"{zone!r} is not an IANA time zone")
                return None
        try:
            start = datetime.strptime(cal.startTime, "%Y-%m-%d %H:%M:%S")
        except ValueError as err:
            self.note(d, (*loc, "calendar", "startTime"), str(err), "error")
            return None
        text = "" if count == 1 and _natural_start(start, unit) else start.isoformat()
        calendar = Calendar(unit, count, text, zone)
        return calendar.nominal, calendar

    def objective_queries(
        self, d: _Loaded, oloc: tuple[Any, ...], obj: _Objective, sli: _Sli
    ) -> tuple[str, str, str] | None:
        """(errors, total, unit) for one objective under the SLO's budgeting method."""
        method = d.spec.budgetingMethod
        slices = method in ("Timeslices", "RatioTimeslices")
        if not slices and (obj.timeSliceTarget is not None or obj.timeSliceWindow is not None):
            self.note(d, oloc, "timeSliceTarget and timeSliceWindow need Timeslices budgeting")
            return None
        if sli.kind == "threshold" and (obj.op is None or obj.value is None):
            self.note(d, oloc, "a thresholdMetric SLI needs op and value in each objective")
            return None
        if sli.kind == "ratio" and obj.value is not None:
            self.note(d, oloc, "op and value apply to thresholdMetric SLIs only")
            return None
        if sli.kind == "ratio" and obj.op is not None:
            self.note(
                d,
                (*oloc, "op"),
                "op compares a thresholdMetric with value; a ratio's target needs none: ignored",
                "warning",
            )
        if obj.ratio <= 0:
            self.note(d, oloc, "a target of 0 leaves nothing to alert on")
            return None
        if not slices:
            if sli.kind == "ratio":
                return (*sli.occurrences(), "requests")
            good = f"({sli.total}) {obj.op_symbol} bool {number(obj.value)}"  # type: ignore[arg-type]
            return f"sum({_negate(good)})", f"count({sli.total})", "samples"
        assert obj.timeSliceWindow is not None
        window = obj.timeSliceWindow
        seconds = shorthand_seconds(window) if isinstance(window, str) else float(window)
        slice_w = format_duration(seconds)
        if method == "RatioTimeslices" and obj.timeSliceTarget is not None:
            self.note(
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
        out: list[SLO] = []
        for name, d in sorted(self.by_kind["SLO"].items()):
            spec: _SLOSpec = d.spec
            if not re.match(DNS_LABEL, name) or len(name) > 63:
                self.note(
                    d,
                    ("metadata", "name"),
                    f"gpuslo names its rules and series after the SLO: {name!r} must be a DNS "
                    "label (lowercase letters, digits and '-', at most 63)",
                )
            for key in d.doc.metadata.labels:
                if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", key):
                    self.note(
                        d,
                        ("metadata", "labels", key),
                        f"gpuslo puts SLO labels on its series: {key!r} is not a Prometheus "
                        "label name",
                    )
            period = self.period(d)
            shared: _Sli | None = None
            if spec.indicator or spec.indicatorRef or spec.sli or spec.sliRef:
                shared = self.sli(
                    d, ("spec",), spec.indicator or spec.sli, spec.indicatorRef or spec.sliRef
                )
            # Resolve the alert policies even when the SLI failed, to report every problem.
            first_route, first_slo = len(self.routes), len(out)
            tiers = self.tiers(d, period[0] if period else NOMINAL_SECONDS["month"])
            line, col = locate(d.node, ())
            for i, obj in enumerate(spec.objectives):
                oloc = ("spec", "objectives", i)
                sli = shared
                if obj.indicator or obj.indicatorRef or obj.sli or obj.sliRef:
                    sli = self.sli(
                        d, oloc, obj.indicator or obj.sli, obj.indicatorRef or obj.sliRef
                    )
                if obj.compositeWeight is not None:
                    self.note(
                        d,
                        (*oloc, "compositeWeight"),
                        "each objective is its own SLO in gpuslo; the composite weight is "
                        "not computed",
                        "warning",
                    )
                if sli is None:
                    continue
                queries = self.objective_queries(d, oloc, obj, sli)
                if queries is None or period is None or tiers is None:
                    continue
                suffix = "" if len(spec.objectives) == 1 else f"-{_slug(obj.displayName, i)}"
                out.append(
                    SLO(
                        name=f"{name}{suffix}",
                        service=spec.service,
                        objective=round(obj.ratio, 12),
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
                                (k, v if isinstance(v, str) else ",".join(v))
                                for k, v in d.doc.metadata.labels.items()
                            )
                        ),
                        source=(d.path, line, col),
                    )
                )
            made = tuple(s.name for s in out[first_slo:])
            for k in range(first_route, len(self.routes)):
                self.routes[k] = dataclasses.replace(self.routes[k], slos=made)
        for kind in ("Service", "DataSource", "SLI", "AlertPolicy", "AlertCondition"):
            for d in self.by_kind[kind].values():
                if kind == "Service" and any(
                    s.spec.service == d.name for s in self.by_kind["SLO"].values()
                ):
                    continue
                if not d.used:
                    self.note(
                        d,
                        (),
                        f"no SLO given uses {kind} {d.name!r}; nothing to generate from it",
                        "warning",
                    )
        for d in self.by_kind["DataSource"].values():
            if d.spec.type.lower() != "prometheus" and not d.used:
                self.note(
                    d,
                    ("spec", "type"),
                    f"DataSource type {d.spec.type!r} cannot become Prometheus rules",
                    "warning",
                )
        return out


_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_SELECTOR = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\s*(\{[^{}]*\})?$")
_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _negate(condition: str) -> str:
    """``(q) <= bool 0.5`` -> ``(q) > bool 0.5``."""
    head, op, tail = re.match(r"^(.*) (<=|>=|<|>) (bool .*)$", condition).groups()  # type: ignore[union-attr]
    return f"{head} {_NEGATED[op]} {tail}"


def _natural_start(when: datetime, unit: str) -> bool:
    """Whether a start is where the unit starts anyway (midnight, Monday, the 1st, ...)."""
    if when.time() != datetime.min.time():
        return False
    return {
        "day": True,
        "week": when.weekday() == 0,
        "month": when.day == 1,
        "quarter": when.day == 1 and when.month in (1, 4, 7, 10),
        "year": (when.month, when.day) == (1, 1),
    }[unit]


def _slug(display_name: str | None, index: int) -> str:
    """An objective's name suffix: its displayName made label-safe, else its index."""
    slug = re.sub(r"[^a-z0-9]+", "-", (display_name or "").lower()).strip("-")
    return slug or str(index)


def documents_of(path: str, data: Any, node: Any) -> list[tuple[str, Any, Any]] | None:
    """The OpenSLO documents of one YAML document: itself, or each item of a list of OpenSLO
    documents (how OpenSLO's own examples are written); None when it is neither."""
    if is_openslo(data):
        return [(path, data, node)]
    if isinstance(data, list) and data and any(is_openslo(item) for item in data):
        return [(path, item, sub) for item, sub in zip(data, node.value, strict=True)]
    return None


def _resolve(
    documents: list[tuple[str, Any, Any]],
) -> tuple[_Resolver, list[SLO], list[SpecProblem]]:
    loaded, problems, warnings = [], [], []
    for path, data, node in documents:
        try:
            doc, warned = parse_document(path, data, node)
            loaded.append(doc)
            warnings += warned
        except SpecError as err:
            problems += err.problems
    resolver = _Resolver(loaded)
    slos = resolver.slos()
    # With documents that failed to parse, what the others lack may be in them: report only
    # the others' own errors, all at once.
    if problems or resolver.problems:
        raise SpecError(problems + resolver.problems)
    return resolver, slos, warnings + resolver.warnings


def load_openslo(
    documents: list[tuple[str, Any, Any]],
    unsupported: Literal["error", "warn"] = "error",
) -> tuple[list[SLO], list[SpecProblem]]:
    """SLOs from every OpenSLO document given (references resolve across files), and the
    warnings. What gpuslo cannot turn into rules is an error, or with ``unsupported="warn"`` a
    warning (``slo validate``: the documents are valid OpenSLO all the same)."""
    resolver, slos, warnings = _resolve(documents)
    if resolver.unsupported and unsupported == "error":
        raise SpecError(
            [SpecProblem(p.path, p.line, p.col, p.field, p.message) for p in resolver.unsupported]
        )
    return slos, sorted(warnings + resolver.unsupported)


def notification_routes(documents: list[tuple[str, Any, Any]]) -> list[NotificationRoute]:
    """Each (AlertPolicy, AlertNotificationTarget) pair, merged over the SLOs that use it."""
    resolver, _, _ = _resolve(documents)
    merged: dict[tuple[str, str], NotificationRoute] = {}
    for r in resolver.routes:
        key = (r.policy, r.target)
        old = merged.get(key)
        if old is None:
            merged[key] = r
        else:
            merged[key] = NotificationRoute(
                r.policy,
                r.target,
                r.address,
                r.description,
                tuple(sorted({*old.slos, *r.slos})),
                old.tiers,
                old.source,
            )
    return [merged[k] for k in sorted(merged)]


__all__ = [
    "NotificationRoute",
    "documents_of",
    "is_openslo",
    "load_openslo",
    "notification_routes",
    "shorthand_seconds",
]
