"""Read SLO spec files of any supported format into validated SLOs, with lint warnings."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.yamlpos import load_documents

from .model import SLO
from .native import is_native, load_native
from .openslo import NotificationRoute, documents_of, load_openslo, notification_routes
from .rules import horizon_warning
from .sloth import SlothWindows, is_sloth, load_sloth

# A full outage should take at least this long to spend the whole budget, or the SLO pages
# before anyone can react.
MIN_BUDGET_SECONDS = 300.0


def load_specs(
    paths: Iterable[str | Path],
    unsupported: Literal["error", "warn"] = "error",
    sloth_windows: SlothWindows | None = None,
) -> tuple[list[SLO], list[SpecProblem]]:
    """Every SLO in the files and the lint warnings; SpecError lists every error of every file.

    ``unsupported="warn"`` (``slo validate``): what is valid in its spec but cannot become
    Prometheus rules (an OpenSLO Datadog source, a reference to a document not given) is a
    warning; by default it is an error, as every caller but ``validate`` needs the rules.
    ``sloth_windows``: a Sloth AlertWindows file's period and tiers for the Sloth specs."""
    slos: list[SLO] = []
    problems: list[SpecProblem] = []
    import_warnings: list[SpecProblem] = []
    openslo_docs: list[tuple[str, Any, Any]] = []
    for path in paths:
        try:
            for data, node in load_documents(path):
                if is_native(data):
                    slos += load_native(path, data, node)
                elif (found_docs := documents_of(str(path), data, node)) is not None:
                    openslo_docs += found_docs
                elif is_sloth(data):
                    found, warned = load_sloth(path, data, node, windows=sloth_windows)
                    slos += found
                    import_warnings += warned
                else:
                    kind = data.get("apiVersion") if isinstance(data, dict) else type(data).__name__
                    line = node.start_mark.line + 1
                    problems.append(
                        SpecProblem(
                            str(path),
                            line,
                            1,
                            "apiVersion",
                            f"unsupported spec format {kind!r}; expected gpuslo/v1, "
                            "openslo/v1 or Sloth prometheus/v1",
                        )
                    )
        except SpecError as err:
            problems += err.problems
    if openslo_docs:
        try:
            found, warned = load_openslo(openslo_docs, unsupported)
            slos += found
            import_warnings += warned
        except SpecError as err:
            problems += err.problems
    # An SLO is its service and name (as in Sloth): one name may serve two services.
    seen: dict[tuple[str, str], SLO] = {}
    for slo in slos:
        key = (slo.service, slo.name)
        if key in seen:
            problems.append(
                SpecProblem(
                    *slo.source,
                    "name",
                    f"SLO {slo.name!r} already defined at {seen[key].where}",
                )
            )
        seen[key] = slo
    if problems:
        raise SpecError(problems)
    return slos, import_warnings + lint(slos)


def openslo_documents(paths: Iterable[str | Path]) -> list[tuple[str, Any, Any]]:
    """The OpenSLO documents of the files (one, several or a list per file)."""
    out: list[tuple[str, Any, Any]] = []
    for path in paths:
        for data, node in load_documents(path):
            out += documents_of(str(path), data, node) or []
    return out


def openslo_routes(paths: Iterable[str | Path]) -> list[NotificationRoute]:
    """Where the OpenSLO alert policies of the files send their alerts."""
    docs = openslo_documents(paths)
    return notification_routes(docs) if docs else []


def lint(slos: Iterable[SLO]) -> list[SpecProblem]:
    """Warnings: tiers that can never fire, budgets a full outage spends in moments, calendar
    rules close to the end of the period boundaries they list."""
    out = []
    now = time.time()
    for slo in slos:
        at = slo.source
        if note := horizon_warning(slo, now):
            out.append(SpecProblem(*at, "window", note, "warning"))
        max_burn = 1.0 / slo.budget  # every event failing
        for tier in slo.tiers:
            factor = tier.factor(slo.period)
            if factor >= max_burn:
                out.append(
                    SpecProblem(
                        *at,
                        "objective",
                        (
                            f"tier {tier.name} can never fire: it needs a burn rate of "
                            f"{factor:.4g}x but a total outage burns at {max_burn:.4g}x"
                        ),
                        "warning",
                    )
                )
        outage = slo.period * slo.budget
        if outage < MIN_BUDGET_SECONDS:
            out.append(
                SpecProblem(
                    *at,
                    "objective",
                    (
                        f"a full outage spends the whole budget in {outage:.0f} s; loosen the "
                        "objective or lengthen the window"
                    ),
                    "warning",
                )
            )
    return out
