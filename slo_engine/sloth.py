"""Sloth specs, imported unchanged so Sloth users can switch: every input Sloth reads.

- ``version: prometheus/v1`` files (Sloth's CLI format). Keys are accepted in both spellings
  Sloth's own specs and tests use: ``error_query``/``errorQuery``, ``total_query``/``totalQuery``,
  ``error_ratio_query``/``errorRatioQuery``, ``page_alert``/``pageAlert``,
  ``ticket_alert``/``ticketAlert``, ``info_labels``/``infoLabels``.
- ``apiVersion: sloth.slok.dev/v1`` ``kind: PrometheusServiceLevel`` objects (the Kubernetes
  CRD, one or many per file; ``kubectl get -o yaml`` output with ``status`` and a ``List`` of
  them too), with the same two spellings.
- ``apiVersion: openslo/v1alpha`` ``kind: SLO`` documents, mapped the way Sloth maps them: one
  SLO per objective named ``<metadata.name>-<index>``, over its time window in days (28 or
  30, or the custom windows' period), no alerts.
- ``apiVersion: sloth.slok.dev/v1`` ``kind: AlertWindows`` files (and the older
  ``version: alertWindows/v1``): custom burn-rate windows and SLO period, read with
  :func:`load_alert_windows` and passed to :func:`load_sloth` as ``windows``.

An SLO is identified, as in Sloth, by its service and name: the same name may appear under two
services. Label and annotation values that YAML reads as numbers or booleans (``tier: 1``) are
taken as their text, as Sloth's YAML decoder does.

Kept from Sloth: the SLO names, objectives, labels, the alert name, and the page/ticket alert
labels and annotations that Alertmanager routes on. ``sli.events`` queries are used as the
error and total rates over our 5m base window (``{{.window}}`` becomes ``5m``).
``sli.raw.error_ratio_query`` is accepted with a warning: a ratio has no event counts, so its
long windows average the ratio over time instead of weighting by events. Plugins cannot run
outside Sloth and are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import format_duration, parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.specmodel import Duration, Strict
from gpuslo.foundation.yamlpos import field_path, load_documents, locate, validation_problems

from .model import SLO, AlertTier
from .native import BASE_WINDOW
from .windows import DEFAULT_WINDOWS, load_tiers

VERSION = "prometheus/v1"
K8S_API_VERSION = "sloth.slok.dev/v1"
K8S_KIND = "PrometheusServiceLevel"
WINDOWS_KIND = "AlertWindows"
WINDOWS_LEGACY_VERSION = "alertWindows/v1"
OPENSLO_V1ALPHA = "openslo/v1alpha"
SLOTH_DEFAULT_PERIOD = "30d"  # Sloth's --default-slo-period
_WINDOW = re.compile(r"\{\{\s*\.window\s*\}\}")
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _scalar_text(value: Any) -> Any:
    """A YAML scalar as the string Sloth's decoder makes of it (``1`` -> ``"1"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _stringify(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scalar_text(v) for k, v in value.items()}
    return value


# A label or annotation map; non-string scalar values are taken as their text.
Labels = Annotated[dict[str, str], BeforeValidator(_stringify)]


_SPELLINGS = {
    "error_query": "errorQuery",
    "total_query": "totalQuery",
    "error_ratio_query": "errorRatioQuery",
    "page_alert": "pageAlert",
    "ticket_alert": "ticketAlert",
    "info_labels": "infoLabels",
    "slo_plugins": "sloPlugins",
}
_SPELLINGS |= {v: k for k, v in _SPELLINGS.items()}


def _as_written(node: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` with each key in the spelling the file uses (``errorQuery`` for
    ``error_query``), so a problem names and points at what the user wrote."""
    out: list[str | int] = []
    current = node
    for part in loc:
        if isinstance(part, str) and isinstance(current, yaml.MappingNode):
            keys = {k.value: v for k, v in current.value}
            if part not in keys and _SPELLINGS.get(part) in keys:
                part = _SPELLINGS[part]
            current = keys.get(part)
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            current = current.value[part] if 0 <= part < len(current.value) else None
        else:
            current = None
        out.append(part)
    return tuple(out)


def _both(snake: str, camel: str) -> Any:
    """A field Sloth's specs spell either way (the first spelling is the one errors name)."""
    return AliasChoices(snake, camel)


class _Events(Strict):
    error_query: str = Field(validation_alias=_both("error_query", "errorQuery"))
    total_query: str = Field(validation_alias=_both("total_query", "totalQuery"))


class _Raw(Strict):
    error_ratio_query: str = Field(validation_alias=_both("error_ratio_query", "errorRatioQuery"))


class _Plugin(Strict):
    id: str
    options: dict[str, Any] | None = None


class _SLI(Strict):
    events: _Events | None = None
    raw: _Raw | None = None
    plugin: _Plugin | None = None


class _SeverityAlert(Strict):
    disable: bool = False
    for_: Duration | None = Field(default=None, validation_alias="for")
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)


class _Alerting(Strict):
    name: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    page_alert: _SeverityAlert = Field(
        default_factory=_SeverityAlert, validation_alias=_both("page_alert", "pageAlert")
    )
    ticket_alert: _SeverityAlert = Field(
        default_factory=_SeverityAlert, validation_alias=_both("ticket_alert", "ticketAlert")
    )


class _Interval(Strict):
    """Sloth's per-group evaluation intervals: accepted; our rules run at the global interval."""

    all: Duration | None = None
    slierror: Duration | None = None
    metadata: Duration | None = None
    alert: Duration | None = None


class _SlothSLO(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$", max_length=128)
    objective: float = Field(gt=0, lt=100)
    description: str = ""
    labels: Labels = Field(default_factory=dict)
    info_labels: Labels = Field(
        default_factory=dict, validation_alias=_both("info_labels", "infoLabels")
    )
    sli: _SLI
    alerting: _Alerting = Field(default_factory=_Alerting)
    interval: _Interval | None = None
    plugins: dict[str, Any] | None = None  # Sloth SLO plugins: run only inside Sloth


class _ServiceSLOs(Strict):
    service: str = Field(min_length=1)
    labels: Labels = Field(default_factory=dict)
    slo_plugins: dict[str, Any] | None = Field(
        default=None, validation_alias=_both("slo_plugins", "sloPlugins")
    )
    # Each SLO is validated on its own, so the problems of every SLO are reported together.
    slos: list[dict[str, Any]] = Field(min_length=1)


class _SlothFile(_ServiceSLOs):
    version: Literal["prometheus/v1"]


class _Meta(BaseModel):
    """Kubernetes object metadata: only the name is used; the rest is Kubernetes' business."""

    model_config = ConfigDict(extra="allow")
    name: str = ""
    namespace: str = ""


class _ServiceLevel(Strict):
    apiVersion: Literal["sloth.slok.dev/v1"]
    kind: Literal["PrometheusServiceLevel"]
    metadata: _Meta = Field(default_factory=_Meta)
    spec: _ServiceSLOs
    status: dict[str, Any] | None = None  # as `kubectl get -o yaml` prints it


class _OSQuery(Strict):
    source: str
    queryType: str
    query: str
    metadata: dict[str, Any] | None = None


class _OSRatio(Strict):
    good: _OSQuery | None = None
    total: _OSQuery | None = None
    incremental: bool | None = None


class _OSObjective(Strict):
    displayName: str = ""
    value: float | None = None
    op: str | None = None
    target: float = Field(gt=0, lt=1)
    timeSliceTarget: float | None = None
    ratioMetrics: _OSRatio | None = None


class _OSTimeWindow(Strict):
    unit: str
    count: int = Field(gt=0)
    isRolling: bool = False
    calendar: dict[str, Any] | None = None


class _OSMeta(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$", max_length=124)
    displayName: str = ""


class _OSSpec(Strict):
    description: str = ""
    service: str = Field(min_length=1)
    budgetingMethod: str = "Occurrences"
    indicator: dict[str, Any] | None = None
    objectives: list[_OSObjective] = Field(min_length=1)
    timeWindows: list[_OSTimeWindow] = Field(default_factory=list)


class _OpenSLOAlpha(Strict):
    apiVersion: Literal["openslo/v1alpha"]
    kind: Literal["SLO"]
    metadata: _OSMeta
    spec: _OSSpec


class _Window(Strict):
    errorBudgetPercent: float = Field(gt=0, le=100)
    shortWindow: Duration
    longWindow: Duration


class _QuickSlow(Strict):
    quick: _Window
    slow: _Window


class _WindowsSpec(Strict):
    sloPeriod: Duration
    page: _QuickSlow
    ticket: _QuickSlow


class _AlertWindows(Strict):
    apiVersion: Literal["sloth.slok.dev/v1"]
    kind: Literal["AlertWindows"]
    metadata: _Meta | None = None
    spec: _WindowsSpec


class _LegacyWindows(_WindowsSpec):
    version: Literal["alertWindows/v1"]


@dataclass(frozen=True)
class SlothWindows:
    """Burn-rate windows and the SLO period they are for (Sloth's ``AlertWindows``)."""

    period: float  # seconds
    tiers: tuple[AlertTier, ...]
    source: str = ""


def default_windows(period: str = SLOTH_DEFAULT_PERIOD) -> SlothWindows:
    """Sloth's built-in windows (``--default-slo-period``): Google's fractions over 30 days
    (``google-30d``, the same tiers as our SRE-workbook file) or 28 days (``google-28d``)."""
    seconds = parse_duration(period)
    if seconds not in (28 * 86400.0, 30 * 86400.0):
        raise ValueError(f"Sloth has built-in windows for 28d and 30d, not {period}")
    return SlothWindows(seconds, load_tiers(DEFAULT_WINDOWS), f"google-{period}")


def load_alert_windows(path: str | Path) -> SlothWindows:
    """A Sloth AlertWindows file (``sloth.slok.dev/v1`` or ``alertWindows/v1``) as tiers and
    period: page quick/slow become ``page-fast``/``page-slow``, ticket quick/slow
    ``ticket-fast``/``ticket-slow``. SpecError lists every problem with its place."""
    name = str(path)
    docs = load_documents(path)
    if len(docs) != 1:
        raise SpecError([SpecProblem(name, 1, 1, "file", "one AlertWindows document per file")])
    data, node = docs[0]
    prefix: tuple[str, ...] = ()
    try:
        if isinstance(data, dict) and "version" in data:
            spec: _WindowsSpec = _LegacyWindows.model_validate(data)
        else:
            spec = _AlertWindows.model_validate(data).spec
            prefix = ("spec",)
    except ValidationError as err:
        raise SpecError(validation_problems(name, node, err)) from err
    tiers, problems = [], []
    for severity, group in (("page", spec.page), ("ticket", spec.ticket)):
        for speed, tier_name, w in (
            ("quick", "fast", group.quick),
            ("slow", "slow", group.slow),
        ):
            short, long_ = parse_duration(w.shortWindow), parse_duration(w.longWindow)
            if short >= long_:
                loc = (*prefix, severity, speed, "shortWindow")
                line, col = locate(node, loc)
                problems.append(
                    SpecProblem(name, line, col, field_path(loc), "must be shorter than longWindow")
                )
            tiers.append(
                AlertTier(
                    f"{severity}-{tier_name}", severity, w.errorBudgetPercent / 100.0, long_, short
                )
            )
    if problems:
        raise SpecError(problems)
    return SlothWindows(parse_duration(spec.sloPeriod), tuple(tiers), name)


def _is_service_level(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == K8S_KIND


def is_sloth(data: Any) -> bool:
    """True for every document Sloth reads: prometheus/v1, sloth.slok.dev/v1 objects (and a
    Kubernetes ``List`` of them), openslo/v1alpha."""
    if not isinstance(data, dict):
        return False
    version, api = data.get("version"), data.get("apiVersion")
    if isinstance(version, str) and version.startswith("prometheus/"):
        return True  # prometheus/v1, or a version Sloth refuses (said by load_sloth)
    if isinstance(api, str) and (api.startswith("sloth.slok.dev/") or api == OPENSLO_V1ALPHA):
        return True
    items = data.get("items")
    return (
        data.get("kind") == "List"
        and isinstance(items, list)
        and bool(items)
        and all(_is_service_level(i) for i in items)
    )


def load_sloth(
    path: str | Path, data: Any, node: Any, windows: SlothWindows | None = None
) -> tuple[list[SLO], list[SpecProblem]]:
    """The SLOs of one Sloth document, and warnings; SpecError with every error. ``windows``:
    custom alert windows and period (:func:`load_alert_windows`); Sloth's 30-day default
    when None."""
    name = str(path)
    win = windows or default_windows()
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(name, 1, 1, "(document)", "not a Sloth spec")])
    if data.get("apiVersion") == OPENSLO_V1ALPHA:
        return _load_openslo_alpha(name, data, node, win)
    if data.get("kind") == "List" and "items" in data:
        slos: list[SLO] = []
        warnings: list[SpecProblem] = []
        problems: list[SpecProblem] = []
        for j, item in enumerate(data["items"]):
            try:
                found, warned = _load_service_level(name, item, node, win, ("items", j))
                slos += found
                warnings += warned
            except SpecError as err:
                problems += err.problems
        if problems:
            raise SpecError(problems)
        return slos, warnings
    if "apiVersion" in data:
        return _load_service_level(name, data, node, win, ())
    try:
        spec = _SlothFile.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(name, node, err)) from err
    return _convert(name, node, (), spec, win)


def _load_service_level(
    name: str, data: Any, node: Any, win: SlothWindows, prefix: tuple[str | int, ...]
) -> tuple[list[SLO], list[SpecProblem]]:
    if isinstance(data, dict) and data.get("kind") == WINDOWS_KIND:
        line, col = locate(node, (*prefix, "kind"))
        raise SpecError(
            [
                SpecProblem(
                    name,
                    line,
                    col,
                    field_path((*prefix, "kind")),
                    "an AlertWindows file is not an SLO spec: pass it as the Sloth windows "
                    "file (--sloth-windows)",
                )
            ]
        )
    try:
        obj = _ServiceLevel.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(name, node, err, prefix)) from err
    return _convert(name, node, (*prefix, "spec"), obj.spec, win)


def _convert(
    name: str,
    node: Any,
    base: tuple[str | int, ...],
    spec: _ServiceSLOs,
    win: SlothWindows,
) -> tuple[list[SLO], list[SpecProblem]]:
    """Sloth's service + SLOs (prometheus/v1 or the CRD's spec) as validated SLOs."""
    slos, problems, warnings = [], [], []

    def problem(loc: tuple[str | int, ...], message: str, severity: str = "error") -> SpecProblem:
        where = _as_written(node, (*base, *loc))
        line, col = locate(node, where)
        return SpecProblem(name, line, col, field_path(where), message, severity)  # type: ignore[arg-type]

    problems += _label_problems(problem, ("labels",), spec.labels)
    problems += _reserved(problem, ("labels",), spec.labels)
    series_tier = (
        f"label {c.LABEL_TIER!r} stays on the recorded series; on the alerts gpuslo's own "
        "tier label (page-fast, ..., no-data) replaces it"
    )
    if c.LABEL_TIER in spec.labels:
        warnings.append(problem(("labels", c.LABEL_TIER), series_tier, "warning"))
    plugin_note = (
        "Sloth SLO plugins only run inside Sloth and are ignored here; the rules are "
        "generated without them"
    )
    if spec.slo_plugins:
        warnings.append(problem(("slo_plugins",), plugin_note, "warning"))
    for i, item in enumerate(spec.slos):
        here: tuple[str | int, ...] = ("slos", i)
        try:
            s = _SlothSLO.model_validate(item)
        except ValidationError as err:
            problems += validation_problems(name, node, err, (*base, *here))
            continue
        line, col = locate(node, (*base, *here))
        problems += _label_problems(problem, (*here, "labels"), s.labels)
        problems += _reserved(problem, (*here, "labels"), s.labels)
        if c.LABEL_TIER in s.labels:
            warnings.append(problem((*here, "labels", c.LABEL_TIER), series_tier, "warning"))
        for loc, labels in (
            (("alerting", "labels"), s.alerting.labels),
            (("alerting", "page_alert", "labels"), s.alerting.page_alert.labels),
            (("alerting", "ticket_alert", "labels"), s.alerting.ticket_alert.labels),
        ):
            problems += _reserved(problem, (*here, *loc), labels)
            if c.LABEL_TIER in labels:
                warnings.append(
                    problem(
                        (*here, *loc, c.LABEL_TIER),
                        f"alert label {c.LABEL_TIER!r} is gpuslo's own (page-fast, ..., "
                        "no-data; the page-silences-ticket inhibition matches on it): this "
                        "value is dropped from the alerts; route on another label",
                        "warning",
                    )
                )
        for part in ("labels", "annotations"):
            problems += _label_problems(
                problem, (*here, "alerting", part), getattr(s.alerting, part), part == "labels"
            )
        for sev in ("page_alert", "ticket_alert"):
            alert = getattr(s.alerting, sev)
            for part in ("labels", "annotations"):
                problems += _label_problems(
                    problem, (*here, "alerting", sev, part), getattr(alert, part), part == "labels"
                )
        given = [k for k in ("events", "raw", "plugin") if getattr(s.sli, k) is not None]
        if len(given) != 1:
            problems.append(problem((*here, "sli"), "give exactly one of events, raw or plugin"))
            continue
        if s.sli.plugin is not None:
            problems.append(
                problem(
                    (*here, "sli", "plugin"),
                    f"Sloth SLI plugins ({s.sli.plugin.id}) only run "
                    "inside Sloth; write the plugin's queries as sli.events",
                )
            )
            continue
        if s.sli.events is not None:
            queries = {
                "events.error_query": s.sli.events.error_query,
                "events.total_query": s.sli.events.total_query,
            }
        else:
            assert s.sli.raw is not None
            queries = {"raw.error_ratio_query": s.sli.raw.error_ratio_query}
            warnings.append(
                problem(
                    (*here, "sli", "raw"),
                    "a raw error ratio has no event counts: long windows "
                    "average the ratio over time, not weighted by events",
                    "warning",
                )
            )
        rendered = {}
        for key, query in queries.items():
            text = _window(query)
            left = _TEMPLATE.search(text)
            if not text:
                problems.append(problem((*here, "sli", *key.split(".")), "must not be empty"))
            elif left:
                problems.append(
                    problem(
                        (*here, "sli", *key.split(".")),
                        f"unknown template {left.group(0)!r}: Sloth queries know only "
                        "{{.window}}",
                    )
                )
            rendered[key] = text
        if s.plugins:
            warnings.append(problem((*here, "plugins"), plugin_note, "warning"))
        for sev in ("page_alert", "ticket_alert"):
            if getattr(s.alerting, sev).for_:
                warnings.append(
                    problem(
                        (*here, "alerting", sev, "for"),
                        "the alert's 'for' is not kept: the multi-window condition already "
                        "confirms the burn, so this alert fires without the extra wait",
                        "warning",
                    )
                )
        if s.interval is not None:
            warnings.append(
                problem(
                    (*here, "interval"),
                    "Sloth's rule-group intervals are ignored: the rules run at the "
                    "Prometheus evaluation interval",
                    "warning",
                )
            )
        if s.sli.events is not None:
            errors_q = rendered["events.error_query"]
            total_q = rendered["events.total_query"]
        else:
            errors_q, total_q = rendered["raw.error_ratio_query"], "vector(1)"
        alerting = s.alerting
        disabled = frozenset(
            sev
            for sev, a in (("page", alerting.page_alert), ("ticket", alerting.ticket_alert))
            if a.disable
        )
        slos.append(
            _slo(
                s.name,
                spec.service,
                s.objective,
                errors_q,
                total_q,
                win,
                description=s.description,
                labels={**spec.labels, **s.labels},
                source=(name, line, col),
                alerting=alerting,
                disabled=disabled,
            )
        )
    if any(p.severity == "error" for p in problems):
        raise SpecError([p for p in problems if p.severity == "error"])
    return slos, warnings


def _reserved(
    problem: Any, loc: tuple[str | int, ...], labels: dict[str, str]
) -> list[SpecProblem]:
    """``slo`` and ``service`` name the SLO on every series: a spec label may not replace them."""
    return [
        problem((*loc, key), f"label {key!r} is set by gpuslo to the SLO's {key}; rename it")
        for key in (c.LABEL_SLO, c.LABEL_SERVICE)
        if key in labels
    ]


def _label_problems(
    problem: Any, loc: tuple[str | int, ...], labels: dict[str, str], is_label: bool = True
) -> list[SpecProblem]:
    """Sloth's label checks: Prometheus label names (not ``__name__``), non-empty values."""
    out = []
    for key, value in labels.items():
        if not _LABEL_NAME.match(key) or (is_label and key == "__name__"):
            what = "label" if is_label else "annotation"
            out.append(problem((*loc, key), f"{key!r} is not a valid Prometheus {what} name"))
        elif is_label and value == "":
            out.append(problem((*loc, key), "label values must not be empty"))
    return out


def _slo(
    name: str,
    service: str,
    objective: float,
    errors_q: str,
    total_q: str,
    win: SlothWindows,
    *,
    description: str,
    labels: dict[str, str],
    source: tuple[str, int, int],
    alerting: _Alerting,
    disabled: frozenset[str],
) -> SLO:
    return SLO(
        name=name,
        service=service,
        objective=round(objective / 100.0, 12),
        period=win.period,
        errors_query=errors_q,
        total_query=total_q,
        tiers=win.tiers,
        description=description,
        labels=tuple(sorted(labels.items())),
        source=source,
        kind="ratio",
        alert_name=alerting.name or c.ALERT_BUDGET_BURN,
        severity_labels=tuple(
            (
                sev,
                tuple(
                    sorted(
                        (k, v)
                        for k, v in {**alerting.labels, **alert.labels}.items()
                        if k != c.LABEL_TIER  # ours: the inhibition matches on it
                    )
                ),
            )
            for sev, alert in (("page", alerting.page_alert), ("ticket", alerting.ticket_alert))
        ),
        annotations=tuple(sorted(alerting.annotations.items())),
        severity_annotations=(
            ("page", tuple(sorted(alerting.page_alert.annotations.items()))),
            ("ticket", tuple(sorted(alerting.ticket_alert.annotations.items()))),
        ),
        disabled_severities=disabled,
    )


def _windows_for(period: float, win: SlothWindows) -> SlothWindows | None:
    """The windows for an SLO period, as Sloth picks them: the given windows when their period
    matches, else Google's fractions for Sloth's built-in 28 and 30 days."""
    if period == win.period:
        return win
    if period in (28 * 86400.0, 30 * 86400.0):
        return default_windows(format_duration(period))
    return None


def _load_openslo_alpha(
    name: str, data: Any, node: Any, win: SlothWindows
) -> tuple[list[SLO], list[SpecProblem]]:
    """OpenSLO v1alpha the way Sloth reads it: each objective is an SLO named
    ``<name>-<index>`` over its time window in days (the windows' period when none is
    given), errors = total - good, and no alerts (Sloth generates none for OpenSLO)."""
    try:
        doc = _OpenSLOAlpha.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(name, node, err)) from err
    spec = doc.spec
    problems, warnings = [], []

    def problem(loc: tuple[str | int, ...], message: str, severity: str = "error") -> SpecProblem:
        line, col = locate(node, loc)
        return SpecProblem(name, line, col, field_path(loc), message, severity)  # type: ignore[arg-type]

    if len(spec.timeWindows) > 1:
        problems.append(problem(("spec", "timeWindows"), "Sloth supports one time window"))
    elif spec.timeWindows:
        tw = spec.timeWindows[0]
        if tw.unit.lower() != "day":
            problems.append(
                problem(
                    ("spec", "timeWindows", 0, "unit"),
                    f"Sloth supports time windows in days only, not {tw.unit!r}",
                )
            )
        else:
            found = _windows_for(tw.count * 86400.0, win)
            if found is None:
                problems.append(
                    problem(
                        ("spec", "timeWindows", 0, "count"),
                        f"no alert windows for a {tw.count}-day period: Sloth has them for 28 "
                        f"and 30 days; give an AlertWindows file with sloPeriod {tw.count}d",
                    )
                )
            else:
                win = found
    if spec.budgetingMethod.lower() != "occurrences":
        warnings.append(
            problem(
                ("spec", "budgetingMethod"),
                f"Sloth counts {spec.budgetingMethod} objectives as occurrences "
                "(a ratio of events); so does this import",
                "warning",
            )
        )
    warnings.append(
        problem(
            ("kind",),
            "Sloth generates no alerts for openslo/v1alpha SLOs: only the recording rules "
            "(and the no-data alert) are generated",
            "warning",
        )
    )
    slos = []
    for i, o in enumerate(spec.objectives):
        here: tuple[str | int, ...] = ("spec", "objectives", i)
        ratio = o.ratioMetrics
        if ratio is None:
            problems.append(problem(here, "Sloth supports only ratioMetrics objectives"))
            continue
        queries: dict[str, str] = {}
        for part in ("good", "total"):
            q = getattr(ratio, part)
            if q is None:
                problems.append(
                    problem((*here, "ratioMetrics"), f"ratioMetrics.{part} is required")
                )
                continue
            if q.source not in ("prometheus", "sloth"):
                problems.append(
                    problem(
                        (*here, "ratioMetrics", part, "source"),
                        f"source must be prometheus or sloth, not {q.source!r}",
                    )
                )
            if q.queryType != "promql":
                problems.append(
                    problem(
                        (*here, "ratioMetrics", part, "queryType"),
                        f"queryType must be promql, not {q.queryType!r}",
                    )
                )
            queries[part] = _window(q.query)
        if len(queries) != 2:
            continue
        line, col = locate(node, here)
        slos.append(
            _slo(
                f"{doc.metadata.name}-{i}",
                spec.service,
                o.target * 100.0,
                f"({queries['total']}) - ({queries['good']})",
                queries["total"],
                win,
                description=spec.description,
                labels={},
                source=(name, line, col),
                alerting=_Alerting(),
                disabled=frozenset({"page", "ticket"}),
            )
        )
    if problems:
        raise SpecError(problems)
    return slos, warnings


def _window(query: str) -> str:
    return _WINDOW.sub(BASE_WINDOW, query.strip())


def describe(windows: SlothWindows) -> str:
    """One line naming the windows' period and tiers (for CLI output)."""
    tiers = ", ".join(
        f"{t.name} {t.factor(windows.period):.4g}x over {format_duration(t.long_window)}"
        for t in windows.tiers
    )
    return f"{format_duration(windows.period)} period: {tiers}"
