"""The analysis as text, JSON and an HTML page (``gpuslo.foundation.report``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from gpuslo.foundation.report import Cell, Page

from .analysis import CheckResult, Result


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def _p(value: float) -> str:
    return "1" if value >= 1 else f"{value:.2g}"


def text(result: Result) -> str:
    lines = [
        f"canary {result.name}: {result.decision.upper()} ({result.reason})",
        f"requests: baseline {result.requests['baseline']:.0f}, canary "
        f"{result.requests['canary']:.0f}; false-rollback rate {result.alpha:g} over the "
        f"rollout ({result.test_alpha:.2g} a test)",
        "",
        f"{'check':<28} {'baseline':>10} {'canary':>10}  {'tolerance':<28} {'verdict':<13} p",
    ]
    for r in result.checks:
        lines.append(
            f"{r.what:<28} {_num(r.baseline):>10} {_num(r.canary):>10}  {r.tolerance:<28} "
            f"{r.verdict:<13} {_p(r.p_value)}"
        )
    return "\n".join(lines) + "\n"


def promql_text(result: Result) -> str:
    out = []
    seen: set[str] = set()
    for r in result.checks:
        if r.check in seen:
            continue
        seen.add(r.check)
        out.append(f"# {r.check}")
        out += r.promql
    return "\n".join(out) + "\n"


def as_json(result: Result) -> str:
    return json.dumps(result.public(), indent=1, sort_keys=True, default=str) + "\n"


def html(result: Result) -> Page:
    page = Page(
        f"Canary analysis: {result.name}",
        subtitle=f"{result.decision.upper()}: {result.reason}",
        notes=[
            f"False-rollback rate {result.alpha:g} over the whole rollout, "
            f"{result.test_alpha:.2g} for each test at each step (mSPRT, always valid).",
        ],
    )
    page.paragraph(
        f"Requests in the window: baseline {result.requests['baseline']:.0f}, canary "
        f"{result.requests['canary']:.0f}."
    )
    page.table(
        [_row(r) for r in result.checks],
        ["check", "baseline", "canary", "tolerance", "verdict", "always-valid p", "detail"],
    )
    queries = page.section("PromQL")
    for r in result.checks:
        if r.promql:
            queries.paragraph(f"{r.what}: " + "  |  ".join(r.promql))
    return page


def _row(r: CheckResult) -> list[Cell]:
    return [
        r.what,
        _num(r.baseline),
        _num(r.canary),
        r.tolerance,
        r.verdict,
        _p(r.p_value),
        r.detail,
    ]


def write_html(result: Result, path: Path) -> Path:
    return html(result).write(path)
