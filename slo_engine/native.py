"""The native gpuslo SLO format: compact, for inference (availability, latency, cost).

apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat, window: 30d}
slos:
  - name: chat-ttft
    objective: 99            # percent of requests
    selector: {model: llama-3-70b}
    latency: {metric: ttft, threshold: 500ms}
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.promql import bucket_le_matcher, matchers, number, quote
from gpuslo.foundation.specmodel import DNS_LABEL, Duration
from gpuslo.foundation.specmodel import Strict as _Strict
from gpuslo.foundation.yamlpos import locate, validation_problems

from .model import CALENDAR_PERIODS, SLO, AlertTier, Calendar
from .windows import DEFAULT_WINDOWS, load_tiers

API_VERSION = "gpuslo/v1"
KIND = "SLOs"
BASE_WINDOW = "5m"
SELECTOR_LABELS = (c.LABEL_MODEL, c.LABEL_TENANT, c.LABEL_NAMESPACE, c.LABEL_SERVER, c.LABEL_POD)
LATENCY_METRICS = {
    "ttft": c.TIME_TO_FIRST_TOKEN,
    "tpot": c.TIME_PER_OUTPUT_TOKEN,
    "e2e": c.REQUEST_DURATION,
}
Outcome = Literal["error", "rejected", "cancelled"]
# A load-shedding 503 fails the user as surely as an error; a client cancel does not.
DEFAULT_BAD: tuple[Outcome, ...] = ("error", "rejected")
_NAME = DNS_LABEL


class Availability(_Strict):
    """Share of requests that did not fail."""

    bad_outcomes: list[Outcome] = Field(default_factory=lambda: list(DEFAULT_BAD), min_length=1)


class Latency(_Strict):
    """Share of requests faster than a threshold, from a canonical request histogram."""

    metric: Literal["ttft", "tpot", "e2e"]
    threshold: Duration


class Cost(_Strict):
    """A cost ceiling for the selected model: per 1M tokens, per 1k requests, or dollars per
    hour. Each evaluation is a time slice, bad while the cost is above the ceiling; the
    cost recording rules (``gpuslo cost rules``) must run in the same Prometheus."""

    per_million_tokens: float | None = Field(default=None, gt=0)
    per_thousand_requests: float | None = Field(default=None, gt=0)
    dollars_per_hour: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Cost:
        given = [
            v
            for v in (self.per_million_tokens, self.per_thousand_requests, self.dollars_per_hour)
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of per_million_tokens, per_thousand_requests, dollars_per_hour"
            )
        return self


class Alerting(_Strict):
    min_events: int = Field(default=0, ge=0)
    base_window: Duration = BASE_WINDOW  # shorter only for compressed-time demos
    no_data_for: Duration = "10m"
    runbook_url: str = ""
    windows: str | None = None  # a tiers file instead of the SRE workbook defaults


def _check_window(value: str | CalendarWindow | None) -> str | CalendarWindow | None:
    """A rolling duration (``30d``), one UTC calendar unit by name (``day``, ``week``,
    ``month``, ``quarter``, ``year``), or a calendar window (``{calendar: 1Q, start: ...,
    time_zone: ...}``, checked by its model)."""
    if isinstance(value, str) and value not in CALENDAR_PERIODS:
        try:
            parse_duration(value)
        except ValueError:
            if value[-1:] in ("M", "Q", "Y"):
                raise ValueError(
                    f"{value!r} is a calendar duration: write window: {{calendar: {value}}}"
                ) from None
            raise
    return value


class CalendarWindow(_Strict):
    """A calendar window: ``calendar`` is 1d, 1w, 1M, 1Q, 1Y or a count of them (2w, 6M),
    ``start`` the local date-time periods are counted from (default: the unit's natural start),
    ``time_zone`` an IANA zone (DST included)."""

    calendar: str
    start: str = ""
    time_zone: str = "UTC"

    @field_validator("start", mode="before")
    @classmethod
    def _unquoted(cls, value: Any) -> Any:
        """YAML reads an unquoted 2026-01-01T00:00:00 as a date-time: take it as written."""
        return value.isoformat() if isinstance(value, (date, datetime)) else value

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str) -> str:
        Calendar.parse(value)
        return value

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        Calendar("day", start=value).anchor()
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        Calendar("day", time_zone=value).zone()
        return value

    def to_calendar(self) -> Calendar:
        return Calendar.parse(self.calendar, self.start, self.time_zone)


def _window_kind(value: Any) -> str:
    return _CALENDAR_TAG if isinstance(value, (dict, CalendarWindow)) else _DURATION_TAG


# The tags only steer validation to one kind of window; they are left out of error paths.
_CALENDAR_TAG, _DURATION_TAG = "~calendar", "~duration"
Window = Annotated[
    Annotated[str, Tag(_DURATION_TAG)] | Annotated[CalendarWindow, Tag(_CALENDAR_TAG)],
    Discriminator(_window_kind),
]


class _Untagged:
    """A ValidationError's errors without the window tags in their locations."""

    def __init__(self, err: ValidationError) -> None:
        self._err = err

    def errors(self) -> list[Any]:
        tags = (_CALENDAR_TAG, _DURATION_TAG)
        return [
            {**e, "loc": tuple(p for p in e["loc"] if p not in tags)} for e in self._err.errors()
        ]


def _calendar_of(window: str | CalendarWindow) -> Calendar | None:
    """The calendar a window names, or None for a rolling one."""
    if isinstance(window, CalendarWindow):
        return window.to_calendar()
    return CALENDAR_PERIODS.get(window)


class Defaults(_Strict):
    service: str | None = None
    window: Window = "30d"
    alerting: Alerting = Field(default_factory=Alerting)
    labels: dict[str, str] = Field(default_factory=dict)

    _window = field_validator("window")(_check_window)


class NativeSLO(_Strict):
    name: str = Field(pattern=_NAME, max_length=63)
    service: str | None = None
    description: str = ""
    objective: float = Field(gt=0, lt=100, description="percent of good events")
    window: Window | None = None
    selector: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    alerting: Alerting | None = None
    availability: Availability | None = None
    latency: Latency | None = None
    cost: Cost | None = None

    _window = field_validator("window")(_check_window)

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SELECTOR_LABELS))
        if unknown:
            raise ValueError(f"unknown label {unknown[0]!r}; use {', '.join(SELECTOR_LABELS)}")
        return value

    @model_validator(mode="after")
    def _one_sli(self) -> NativeSLO:
        if sum(getattr(self, k) is not None for k in _SLI_KINDS) != 1:
            raise ValueError(_ONE_SLI)
        return self


class NativeFile(_Strict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["SLOs"]
    defaults: Defaults = Field(default_factory=Defaults)
    slos: list[NativeSLO] = Field(min_length=1)


def is_native(data: Any) -> bool:
    """True for documents in this format."""
    return isinstance(data, dict) and data.get("apiVersion") == API_VERSION


def load_native(path: str | Path, data: Any, node: Any) -> list[SLO]:
    """Validate one native document and turn it into SLOs; SpecError lists every problem."""
    name = str(path)
    try:
        spec = NativeFile.model_validate(data)
    except ValidationError as err:
        found = {
            *_sli_count_problems(name, data, node),
            *validation_problems(name, node, _Untagged(err)),
        }
        raise SpecError(sorted(found)) from err
    out, problems = [], []
    for i, s in enumerate(spec.slos):
        line, col = locate(node, ("slos", i))

        def problem(field: str, message: str, i: int = i) -> SpecProblem:
            ln, cl = locate(node, ("slos", i, field))
            return SpecProblem(name, ln, cl, f"slos[{i}].{field}", message)

        service = s.service or spec.defaults.service
        if not service:
            problems.append(problem("service", "no service, and no defaults.service"))
            continue
        if s.cost is not None and not s.selector.get("model"):
            problems.append(problem("selector", "a cost SLO needs selector.model"))
            continue
        alerting = s.alerting or spec.defaults.alerting
        try:
            windows = Path(path).parent / alerting.windows if alerting.windows else DEFAULT_WINDOWS
            tiers: tuple[AlertTier, ...] = load_tiers(windows)
        except SpecError as err:
            problems += err.problems
            continue
        errors_q, total_q, kind = _queries(s, alerting.base_window)
        unit = "time slices" if kind == "cost" else "requests"
        window = s.window or spec.defaults.window
        out.append(
            SLO(
                name=s.name,
                service=service,
                objective=round(s.objective / 100.0, 12),
                period=cal.nominal
                if (cal := _calendar_of(window))
                else parse_duration(str(window)),
                calendar=cal,
                errors_query=errors_q,
                total_query=total_q,
                tiers=tiers,
                description=s.description,
                labels=tuple(sorted({**spec.defaults.labels, **s.labels}.items())),
                min_events=alerting.min_events,
                no_data_for=parse_duration(alerting.no_data_for),
                runbook_url=alerting.runbook_url,
                source=(name, line, col),
                kind=kind,
                base_window=parse_duration(alerting.base_window),
                histogram=LATENCY_METRICS[s.latency.metric] if s.latency else "",
                selector=tuple(sorted(s.selector.items())),
                threshold=parse_duration(s.latency.threshold) if s.latency else 0.0,
                unit=unit,
            )
        )
    if problems:
        raise SpecError(problems)
    return out


_SLI_KINDS = ("availability", "latency", "cost")
_ONE_SLI = "give exactly one SLI: availability, latency or cost"


def _sli_count_problems(name: str, data: Any, node: Any) -> list[SpecProblem]:
    """The one-SLI rule on the raw document, so it is reported beside field errors (pydantic
    skips model validators once a field fails)."""
    slos = data.get("slos") if isinstance(data, dict) else None
    out = []
    for i, entry in enumerate(slos if isinstance(slos, list) else []):
        if isinstance(entry, dict) and sum(k in entry for k in _SLI_KINDS) != 1:
            line, col = locate(node, ("slos", i))
            out.append(SpecProblem(name, line, col, f"slos[{i}]", _ONE_SLI))
    return out


def _cost_sli(model: str, cost: Cost) -> tuple[str, str]:
    """A cost SLI as time slices: each evaluation is one slice, bad while the model's cost
    (per 1M tokens, per 1k requests, or $/hour) is above the ceiling. It reads the cost
    recording rules (``gpuslo cost rules``) by their names in the naming contract."""
    sel = f"{{{c.LABEL_MODEL}={quote(model)}}}"
    if cost.per_million_tokens is not None:
        series, ceiling, scale = c.COST_PER_1M_TOKENS, cost.per_million_tokens, ""
    elif cost.per_thousand_requests is not None:
        series, ceiling, scale = c.COST_PER_1K_REQUESTS, cost.per_thousand_requests, ""
    else:
        assert cost.dollars_per_hour is not None  # the model validator asks for exactly one
        series, ceiling, scale = c.COST_MODEL, cost.dollars_per_hour, " * 3600"
    return f"(max({series}{sel}){scale}) > bool {number(ceiling)}", f"count({series}{sel})"


def _queries(s: NativeSLO, base: str = BASE_WINDOW) -> tuple[str, str, str]:
    sel = dict(sorted(s.selector.items()))
    if s.cost is not None:
        errors, total = _cost_sli(sel["model"], s.cost)
        return errors, total, "cost"
    if s.availability is not None:
        metric = c.REQUESTS_TOTAL
        bad = "|".join(sorted(s.availability.bad_outcomes))
        total = f"sum(rate({metric}{matchers(sel)}[{base}]))"
        errors_sel = matchers(sel, extra=f'{c.LABEL_OUTCOME}=~"{bad}"')
        # No error series yet means zero errors, not "no data".
        errors = f"(sum(rate({metric}{errors_sel}[{base}])) or vector(0))"
        return errors, total, "availability"
    assert s.latency is not None
    hist = LATENCY_METRICS[s.latency.metric]
    threshold = parse_duration(s.latency.threshold)
    total = f"sum(rate({hist}_count{matchers(sel)}[{base}]))"
    good_sel = matchers(sel, extra=bucket_le_matcher(threshold))
    good = f"sum(rate({hist}_bucket{good_sel}[{base}]))"
    return f"({total} - {good})", total, "latency"
