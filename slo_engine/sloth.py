"""Sloth ``prometheus/v1`` specs, imported unchanged so Sloth users can switch.

Kept from Sloth: the SLO names, objectives, labels, the alert name, and the page/ticket alert
labels and annotations that Alertmanager routes on. ``sli.events`` queries are used as the
error and total rates over our 5m base window (``{{.window}}`` becomes ``5m``).
``sli.raw.error_ratio_query`` is accepted with a warning: a ratio has no event counts, so its
long windows average the ratio over time instead of weighting by events. Plugins cannot run
outside Sloth and are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.specmodel import Strict
from gpuslo.foundation.yamlpos import locate, validation_problems

from .model import SLO
from .native import BASE_WINDOW
from .windows import DEFAULT_WINDOWS, load_tiers

VERSION = "prometheus/v1"
SLOTH_DEFAULT_PERIOD = "30d"  # Sloth's --default-slo-period
_WINDOW = re.compile(r"\{\{\s*\.window\s*\}\}")


class _Events(Strict):
    error_query: str
    total_query: str


class _Raw(Strict):
    error_ratio_query: str


class _Plugin(Strict):
    id: str
    options: dict[str, Any] = Field(default_factory=dict)


class _SLI(Strict):
    events: _Events | None = None
    raw: _Raw | None = None
    plugin: _Plugin | None = None


class _SeverityAlert(Strict):
    disable: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class _Alerting(Strict):
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    page_alert: _SeverityAlert = Field(default_factory=_SeverityAlert)
    ticket_alert: _SeverityAlert = Field(default_factory=_SeverityAlert)


class _SlothSLO(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
    objective: float = Field(gt=0, lt=100)
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    sli: _SLI
    alerting: _Alerting = Field(default_factory=_Alerting)


class _SlothFile(Strict):
    version: str
    service: str
    labels: dict[str, str] = Field(default_factory=dict)
    slos: list[_SlothSLO] = Field(min_length=1)


def is_sloth(data: Any) -> bool:
    """True for Sloth prometheus/v1 documents."""
    return isinstance(data, dict) and data.get("version") == VERSION


def load_sloth(path: str | Path, data: Any, node: Any) -> tuple[list[SLO], list[SpecProblem]]:
    """The SLOs of one Sloth document, and warnings; SpecError on errors."""
    name = str(path)
    try:
        spec = _SlothFile.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(name, node, err)) from err
    tiers = load_tiers(DEFAULT_WINDOWS)
    slos, problems, warnings = [], [], []
    for i, s in enumerate(spec.slos):
        line, col = locate(node, ("slos", i))

        def at(field: str, message: str, severity: str = "error", i: int = i) -> SpecProblem:
            ln, cl = locate(node, ("slos", i, "sli", field))
            return SpecProblem(name, ln, cl, f"slos[{i}].sli.{field}", message, severity)  # type: ignore[arg-type]

        given = [k for k in ("events", "raw", "plugin") if getattr(s.sli, k) is not None]
        if len(given) != 1:
            problems.append(
                SpecProblem(
                    name, line, col, f"slos[{i}].sli", "give exactly one of events, raw or plugin"
                )
            )
            continue
        if s.sli.plugin is not None:
            problems.append(
                at(
                    "plugin",
                    f"Sloth SLI plugins ({s.sli.plugin.id}) only run "
                    "inside Sloth; write the plugin's queries as sli.events",
                )
            )
            continue
        if s.sli.events is not None:
            errors_q = _window(s.sli.events.error_query)
            total_q = _window(s.sli.events.total_query)
        else:
            assert s.sli.raw is not None
            errors_q, total_q = _window(s.sli.raw.error_ratio_query), "vector(1)"
            warnings.append(
                at(
                    "raw",
                    "a raw error ratio has no event counts: long windows "
                    "average the ratio over time, not weighted by events",
                    "warning",
                )
            )
        alerting = s.alerting
        disabled = frozenset(
            sev
            for sev, a in (("page", alerting.page_alert), ("ticket", alerting.ticket_alert))
            if a.disable
        )
        slos.append(
            SLO(
                name=s.name,
                service=spec.service,
                objective=round(s.objective / 100.0, 12),
                period=parse_duration(SLOTH_DEFAULT_PERIOD),
                errors_query=errors_q,
                total_query=total_q,
                tiers=tiers,
                description=s.description,
                labels=tuple(sorted({**spec.labels, **s.labels}.items())),
                source=(name, line, col),
                kind="ratio",
                alert_name=alerting.name or c.ALERT_BUDGET_BURN,
                severity_labels=(
                    (
                        "page",
                        tuple(sorted({**alerting.labels, **alerting.page_alert.labels}.items())),
                    ),
                    (
                        "ticket",
                        tuple(sorted({**alerting.labels, **alerting.ticket_alert.labels}.items())),
                    ),
                ),
                annotations=tuple(sorted(alerting.annotations.items())),
                severity_annotations=(
                    ("page", tuple(sorted(alerting.page_alert.annotations.items()))),
                    ("ticket", tuple(sorted(alerting.ticket_alert.annotations.items()))),
                ),
                disabled_severities=disabled,
            )
        )
    if problems:
        raise SpecError(problems)
    return slos, warnings


def _window(query: str) -> str:
    return _WINDOW.sub(BASE_WINDOW, query.strip())
