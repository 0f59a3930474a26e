"""The capacity plan's report: ``plan.json`` and ``index.html`` (with PNG charts beside it),
built with the report kit: per pool the schedule, warm pool and spot share with their
predicted cost and attainment; per policy the measured cost, SLO attainment and pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gpuslo.foundation import report as kit

from .plan import HOURS_OF_WEEK, PlanResult, scripted_scenario
from .scenario import Scenario

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def write_report(
    result: PlanResult, out_dir: Path, twin: Scenario | None = None
) -> dict[str, Path]:
    """Write ``plan.json`` and ``index.html`` (charts beside it) into ``out_dir``; with the
    ``twin`` scenario, ``scenario-<policy>.yaml`` too: each replay's actions scripted, for
    ``gpuslo twin offline`` (the agents' full history of what the policy did)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    body = result.to_json()
    js = out_dir / "plan.json"
    js.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    verdict = body["verdict"]
    page = kit.Page(
        "Capacity plan, proven in the twin",
        subtitle=f"{len(result.plans)} pools, {len(result.slos)} SLOs; every policy replayed "
        "over the same traffic",
        notes=[
            f"The plan costs {100 * verdict['saving_vs_static']:.1f}% less than static "
            f"provisioning for the peak; it meets every SLO: {verdict['plan_meets_every_slo']}; "
            f"pages: plan {verdict['plan_pages']}, reactive {verdict['reactive_pages']}, static "
            f"{verdict['static_pages']}."
        ],
    )
    measured = page.section("Measured in the twin")
    rows: list[dict[str, Any]] = []
    for r in result.replays:
        rows.append(
            {
                "policy": r.policy,
                f"cost ({result.currency})": r.cost,
                "GPU-hours": r.gpu_hours,
                "SLOs met": f"{sum(r.met.values())}/{len(r.met)}",
                "pages": sum(r.pages.values()),
                "spot reclaims": r.interruptions,
            }
        )
    cols = [
        "policy",
        f"cost ({result.currency})",
        "GPU-hours",
        "SLOs met",
        "pages",
        "spot reclaims",
    ]
    measured.table(rows, cols, formats={f"cost ({result.currency})": ".2f", "GPU-hours": ".1f"})
    slo_rows: list[dict[str, Any]] = []
    for s in result.slos:
        row: dict[str, Any] = {"SLO": s.name, "objective": f"{100 * s.objective:g}%"}
        for r in result.replays:
            row[f"{r.policy} attainment"] = f"{100 * r.attainment.get(s.name, 1.0):.3f}%"
            row[f"{r.policy} pages"] = r.pages.get(s.name, 0)
        slo_rows.append(row)
    slo_cols = ["SLO", "objective"] + [
        f"{r.policy} {what}" for r in result.replays for what in ("attainment", "pages")
    ]
    measured.table(slo_rows, slo_cols)
    fig, ax = kit.subplots(figsize=(7, 3))
    ax.bar([r.policy for r in result.replays], [r.cost for r in result.replays], color="#4a7")
    ax.set_ylabel(result.currency)
    ax.set_title("Measured cost per policy")
    fig.tight_layout()
    measured.chart(fig, "measured cost per policy", file="cost.png")
    for s in result.slos:
        fig, ax = kit.subplots(figsize=(9, 2.6))
        for r in result.replays:
            hourly = r.hourly.get(s.name, [])
            ax.plot(np.arange(len(hourly)), 100 * np.asarray(hourly), label=r.policy, lw=1)
        ax.axhline(100 * s.objective, color="k", ls=":", lw=1)
        ax.set_ylabel("% good (hour)")
        ax.set_xlabel("hour of the replay")
        ax.set_title(f"{s.name}: attainment by hour")
        ax.legend(loc="lower left", fontsize=7)
        fig.tight_layout()
        measured.chart(fig, f"{s.name} attainment by hour", file=f"slo-{s.name}.png")
    for plan in result.plans:
        sec = page.section(f"Pool {plan.pool} ({plan.model})")
        sec.paragraph(
            f"Sized for load {plan.max_load:.2f} (the highest at which every SLO of the model "
            f"spends at most its planning share of the error budget); {plan.warm} warm "
            f"replicas at most; spot share {100 * plan.spot_share:.0f}%; static baseline "
            f"{plan.static_replicas} replicas."
        )
        pred = plan.predicted
        sec.table(
            [
                {
                    "policy": name,
                    f"predicted cost ({result.currency})": pred.get(f"{name}.cost"),
                    **{
                        s.name: f"{100 * pred[f'{name}.{s.name}']:.3f}%"
                        for s in result.slos
                        if f"{name}.{s.name}" in pred
                    },
                }
                for name in ("plan", "static", "reactive")
            ],
            ["policy", f"predicted cost ({result.currency})"]
            + [s.name for s in result.slos if f"plan.{s.name}" in pred],
            formats={f"predicted cost ({result.currency})": ".2f"},
        )
        sec.table(
            [
                [day, *plan.schedule[d * 24 : (d + 1) * 24]]
                for d, day in enumerate(_DAYS)
                if (d + 1) * 24 <= HOURS_OF_WEEK
            ],
            ["day"] + [f"{h:02d}" for h in range(24)],
            row_headers=True,
        )
        fig, ax = kit.subplots(figsize=(9, 3))
        for r in result.replays:
            held = np.asarray(r.replicas.get(plan.pool, []))
            hours = np.arange(len(held)) * r.step / 3600
            ax.plot(hours, held, label=f"{r.policy} (serving and starting)", lw=1)
            if r.policy == "plan":
                ax.plot(hours, np.asarray(r.warm.get(plan.pool, [])), label="plan warm", lw=1)
        ax.set_xlabel("hour of the replay")
        ax.set_ylabel("replicas")
        ax.set_title(f"{plan.pool}: replicas per policy")
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        sec.chart(fig, f"{plan.pool} replicas per policy", file=f"replicas-{plan.pool}.png")
    files = page.write(out_dir / "index.html")
    out = {"json": js, "html": files}
    if twin is not None:
        for r in result.replays:
            path = out_dir / f"scenario-{r.policy}.yaml"
            path.write_text(
                yaml.safe_dump(scripted_scenario(twin, r), sort_keys=False), encoding="utf-8"
            )
            out[f"scenario-{r.policy}"] = path
    return out
