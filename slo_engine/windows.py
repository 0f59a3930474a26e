"""Alert tiers as versioned data (``alert_windows/*.yaml``), validated on load."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from gpuslo.foundation.durations import parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.resources import data_path
from gpuslo.foundation.specmodel import Duration, Strict
from gpuslo.foundation.yamlpos import load_documents, locate, validation_problems

from .model import AlertTier

DEFAULT_WINDOWS = data_path("gpuslo.slo_engine.alert_windows", "sre-workbook.yaml")


class _Tier(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    severity: Literal["page", "ticket"]
    budget_fraction: float = Field(gt=0, le=1)
    long_window: Duration
    short_window: Duration


class _Windows(Strict):
    version: Literal[1]
    tiers: list[_Tier] = Field(min_length=1)


def load_tiers(path: str | Path = DEFAULT_WINDOWS) -> tuple[AlertTier, ...]:
    """The tiers in a windows file; SpecError with file:line:col on any problem. Read once per
    file per process: every SLO of a spec set usually names the same file."""
    return _load_tiers(Path(path))


@functools.lru_cache(maxsize=64)
def _load_tiers(path: Path) -> tuple[AlertTier, ...]:
    data, node = load_documents(path)[0]
    try:
        spec = _Windows.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(str(path), node, err)) from err
    tiers = tuple(
        AlertTier(
            t.name,
            t.severity,
            t.budget_fraction,
            parse_duration(t.long_window),
            parse_duration(t.short_window),
        )
        for t in spec.tiers
    )
    problems = []
    for i, t in enumerate(tiers):
        if t.short_window >= t.long_window:
            line, col = locate(node, ("tiers", i, "short_window"))
            problems.append(
                SpecProblem(
                    str(path),
                    line,
                    col,
                    f"tiers[{i}].short_window",
                    "must be shorter than long_window",
                )
            )
    if len({t.name for t in tiers}) != len(tiers):
        problems.append(SpecProblem(str(path), 1, 1, "tiers", "tier names must be unique"))
    if problems:
        raise SpecError(problems)
    return tiers
