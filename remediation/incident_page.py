"""An incident's HTML page (``GET /incidents/{id}``), built with the report kit: the headline,
the ranked causes with their evidence and charts of the evidence series, the blast radius,
the hook's actions and the notifications sent."""

from __future__ import annotations

import threading
import time
from typing import Any

from gpuslo.foundation.report import Page, subplots

from .incidents import Incident

_CHARTS = threading.Lock()  # matplotlib's pyplot state is not thread-safe


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _entity(entity: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in entity.items() if v) or "the fleet"


def render(incident: Incident) -> str:
    """The whole HTML document."""
    ex = incident.explanation
    status = incident.status
    if incident.resolved is not None:
        status += f" after {(incident.resolved - incident.started) / 60:.1f} min"
    page = Page(
        f"Incident: {incident.slo} ({incident.service})",
        subtitle=f"{incident.alertname} {incident.severity} {incident.tier} · {status}",
        notes=[incident.headline()],
    )
    times = page.section("Timeline")
    times.table(
        [
            ("page started (startsAt)", _when(incident.started)),
            ("symptom began (onset)", _when(ex.get("onset"))),
            ("first delivery", _when(incident.received)),
            ("explained", _when(incident.explained)),
            ("resolved", _when(incident.resolved)),
        ],
        columns=["event", "time"],
    )
    causes = incident.causes()
    section = page.section("Probable causes")
    section.paragraph(
        f"Explanation: {incident.explanation_status}"
        + (f" ({ex['reason']})" if ex.get("reason") else "")
        + (f"; {ex['candidates']} candidate signals" if "candidates" in ex else "")
    )
    if causes:
        section.table(
            [
                (i, x["kind"], _entity(x["entity"]), x["score"], x["summary"])
                for i, x in enumerate(causes, 1)
            ],
            columns=["rank", "kind", "entity", "score", "summary"],
            formats={"score": ".3f"},
        )
    for i, cause in enumerate(causes, 1):
        sub = section.section(f"{i}. {cause['kind']} on {_entity(cause['entity'])}")
        sub.table(
            [
                (
                    e["signal"],
                    _when(e["changed_at"]),
                    e["before"],
                    e["after"],
                    e["effect"],
                    e["p_value"],
                )
                for e in cause["evidence"]
            ],
            columns=["signal", "changed", "before", "after", "effect", "p"],
            formats={"before": ".4g", "after": ".4g", "effect": ".2f", "p": ".2g"},
        )
        for e in cause["evidence"]:
            sub.paragraph(f"{e['signal']}: {e['query']}")
            if e.get("series"):
                _chart(sub, e, ex.get("onset"), incident.started)
    radius = ex.get("radius")
    if radius:
        page.section("Blast radius").table(
            [
                ("model", radius.get("model", "")),
                ("pods", ", ".join(radius.get("pods", []))),
                ("pools", ", ".join(radius.get("pools", []))),
                ("GPUs", radius.get("gpus", 0)),
                ("nodes", ", ".join(radius.get("nodes", []))),
            ],
            columns=["what", "in the radius"],
        )
    acts = page.section("Actions of the hook")
    if incident.actions:
        acts.table(
            [(e.id, e.policy, e.kind, e.status, e.target, e.reason) for e in incident.actions],
            columns=["entry", "policy", "action", "status", "target", "reason"],
        )
    else:
        acts.paragraph("No policy matched this page: nothing was done or refused.")
    if incident.deliveries:
        page.section("Notifications").table(
            [
                (
                    name,
                    _when(d.get("opened")),
                    _when(d.get("resolved")),
                    d.get("error", ""),
                )
                for name, d in sorted(incident.deliveries.items())
            ],
            columns=["target", "message", "update", "error"],
        )
    labels = page.section("Alert labels")
    labels.table(sorted(incident.labels.items()), columns=["label", "value"])
    return page.render()


def _chart(section: Any, evidence: dict[str, Any], onset: float | None, started: float) -> None:
    points = evidence["series"]
    xs = [(t - started) / 60 for t, _ in points]
    ys = [v for _, v in points]
    with _CHARTS:
        figure, ax = subplots(figsize=(8, 2.6), dpi=80)
        ax.plot(xs, ys, lw=1.2)
        ax.axvline((evidence["changed_at"] - started) / 60, color="tab:orange", ls="--")
        if onset is not None:
            ax.axvline((onset - started) / 60, color="tab:red", ls=":")
        ax.axvline(0, color="tab:red")
        ax.set_xlabel("minutes from the page (red: page, dotted: onset, dashed: the change)")
        ax.set_title(evidence["signal"], fontsize=10)
        figure.tight_layout()
        section.chart(figure, f"{evidence['signal']} around the page")
