"""Benchmark cross-layer correlation: is the true cause ranked first, and is nothing named
when nothing broke?

For each fault scenario of the digital twin and each seed, a variant of the scenario is run
offline: the seed changes the traffic noise, every fault's start moves by up to eight minutes
either way (faults that overlap in the scenario move together: they happen at once), and a
GPU fault lands on a GPU drawn from those serving the affected pool, on another replica than
the faults it overlaps (an InfiniBand flap on a node drawn from those hosting it). Every run's
history is backfilled into one real Prometheus (each run on days of its own). For each run,
the SLOs of every model (time to first token, time per output token and availability,
one-hour period, compressed tiers) are evaluated; every page episode is explained with
``slo_engine.correlate.explain`` (timed) and its named causes are compared with the faults
active when the symptom began, in the model's blast radius (kind and GPU, node or tenant).

What counts (docs/benchmarks.md, the correlation section):

- **true cause first / in the top 3**: over page episodes with a fault of the model active,
  whether the first cause (any of the top three) names the one nearest the symptom's onset
  or a fault at once with it (overlapping it in time);
- **both in the top 3**: episodes with two faults of the model active at once (overlapping
  in time: ``two-faults``), both named among the top three;
- **outside the radius named**: episodes during which a fault hit another model's pool
  (``hot-gpu-other-pool``'s hot GPU) and a cause names that GPU or node;
- **bump named first**: episodes during which a tenant's traffic rose inside the pool's
  capacity (its pool's load with the bump at most ``BUMP_LOAD``; not a cause) and the first
  cause is that bump (``tenant-bump-in-capacity``);
- **false pages / false causes**: page episodes with no fault of the model active (every page
  of the ``fault-free-day`` runs, whose pool peaks at ``PEAK_LOAD``), and those of them for
  which any cause is named.

Replica readiness and pod -> pool come from the kube-state-metrics series the twin emits
(pools by owner, the default); GPU series are spelled in ``--dcgm-names`` (the twin writes
and the correlator reads the same generation).

Also timed: ranking 10,000 candidate series for one episode.

    .venv/bin/python bench/correlation.py [--seeds 5] [--days 1] [--scenario NAME ...] \
        [--dcgm-names legacy|current] [--verbose] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results import write_block  # noqa: E402
from gpuslo.foundation import conventions as c  # noqa: E402
from gpuslo.foundation.durations import format_duration, parse_duration  # noqa: E402
from gpuslo.foundation.promlab import Prometheus  # noqa: E402
from gpuslo.simulator.fleet import Fleet  # noqa: E402
from gpuslo.simulator.offline import run_offline  # noqa: E402
from gpuslo.simulator.scenario import Scenario, load_scenario  # noqa: E402
from gpuslo.slo_engine import load_specs  # noqa: E402
from gpuslo.slo_engine.correlate import (  # noqa: E402
    SIGNALS,
    Candidate,
    Cause,
    Config,
    Explanation,
    explain,
    rank,
)
from gpuslo.slo_engine.evaluator import evaluate  # noqa: E402
from gpuslo.slo_engine.history import sli_from_prometheus  # noqa: E402

SCENARIOS = (
    "thermal-throttling",
    "gpu-lost",
    "fabric-degradation",
    "noisy-neighbour",
    "traffic-spike",
    "two-faults",
    "hot-gpu-other-pool",
    "tenant-bump-in-capacity",
)
FAULT_FREE = "fault-free-day"  # run --days times (one seed a day)
EXPECTED = {  # incident kind -> the cause kind that names it
    "thermal_throttle": "thermal_throttle",
    "xid79": "gpu_lost",
    "xid48": "xid",
    "xid94": "xid",
    "nvlink_crc": "nvlink_crc",
    "ib_flap": "ib_flap",
    "noisy_neighbour": "noisy_neighbour",
    "traffic_spike": "traffic_spike",
}
WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.05, long_window: 5m, short_window: 1m}
  - {name: page-slow, severity: page, budget_fraction: 0.1, long_window: 15m, short_window: 2m}
"""
STEP = 15.0
DAY = 86400.0


LOAD = 0.75  # each GPU pool's load before the faults
PEAK_LOAD = 0.85  # a fault-free day's pool load at its daily peak
BUMP_LOAD = 0.8  # a traffic rise keeping its pool's load at most this is inside capacity


def variant(base: Scenario, seed: int) -> Scenario:
    """The scenario with its faults moved in time and onto other GPUs of the same pool, and
    its traffic scaled so every pool runs at ``LOAD`` before them (the scenarios start at the
    daily trough, where most faults would not hurt at all); a scenario without faults is
    scaled so every pool runs at ``PEAK_LOAD`` at its daily peak (a fleet sized for it).

    Faults that overlap in the scenario move by the same shift (they happen at once), and a
    GPU fault overlapping earlier ones lands on another replica than theirs."""
    rng = random.Random(seed * 7919)
    fleet = Fleet(base)  # where the replicas land, to draw fault targets from
    peak = not base.faults
    demand: dict[str, float] = {}
    for i, tenant in enumerate(base.tenants):
        pool = next(p for p in base.pools if p.model == tenant.model)
        rps = tenant.requests_per_second * (1 + tenant.diurnal) if peak else fleet.tenant_rps(i)
        demand[pool.name] = demand.get(pool.name, 0.0) + rps * tenant.output_tokens
    tenants = []
    for tenant in base.tenants:
        pool = next(p for p in base.pools if p.model == tenant.model)
        load = PEAK_LOAD if peak else LOAD
        scale = load * pool.replicas * pool.tokens_per_second / demand[pool.name]
        tenants.append(
            tenant.model_copy(update={"requests_per_second": tenant.requests_per_second * scale})
        )
    faults = []
    placed: list[tuple[float, float, float, set[tuple[str, int | None]]]] = []
    for fault in base.faults:
        begin = parse_duration(fault.at)
        finish = begin + parse_duration(fault.for_)
        shift = rng.uniform(-480, 480)
        overlapping = [p for p in placed if p[0] < finish and begin < p[1]]
        if overlapping:
            shift = overlapping[0][2]
        taken = {r for p in overlapping for r in p[3]}
        at = max(600.0, begin + shift)
        update: dict[str, object] = {"at": format_duration(round(at / STEP) * STEP)}
        replicas: set[tuple[str, int | None]] = set()
        if fault.node is not None:
            gpus = [g for g in fleet.gpus if g.node == fault.node and fault.gpu in (None, g.index)]
            held = next((g.pool for g in gpus if g.pool), None) or next(
                (s.pool for g in gpus for s in g.slices if s.pool), None
            )
            same = [
                g for g in fleet.gpus if g.pool == held or any(s.pool == held for s in g.slices)
            ]
            free = [g for g in same if (g.pool or "", g.replica) not in taken] or same
            if same and fault.kind != "ib_flap":
                pick = rng.choice(free)
                update |= {"node": pick.node, "gpu": pick.index}
                replicas.add((pick.pool or "", pick.replica))
            elif same:
                update |= {"node": rng.choice(sorted({g.node for g in same}))}
        placed.append((begin, finish, shift, replicas))
        faults.append(fault.model_copy(update=update))
    return base.model_copy(update={"seed": seed, "faults": faults, "tenants": tenants})


def annotate(scenario: Scenario) -> list[dict[str, object]]:
    """Per fault of a variant: the models it can hurt (the pool of its GPU, the pools on its
    node, its tenant's model) and whether it is a decoy (a traffic rise inside capacity)."""
    fleet = Fleet(scenario)
    model_of = {p.name: p.model for p in scenario.pools}
    share: dict[str, float] = {}  # tenant -> its share of its pool's demand (output tokens)
    totals: dict[str, float] = {}
    for t in scenario.tenants:
        totals[t.model] = totals.get(t.model, 0.0) + t.requests_per_second * t.output_tokens
    for t in scenario.tenants:
        share[t.name] = t.requests_per_second * t.output_tokens / totals[t.model]
    out: list[dict[str, object]] = []
    for f in scenario.faults:
        models: set[str] = set()
        decoy = False
        if f.tenant is not None:
            tenant = next(t for t in scenario.tenants if t.name == f.tenant)
            models.add(tenant.model)
            if f.kind == "traffic_spike":
                decoy = LOAD * (1 + share[f.tenant] * (f.factor - 1)) <= BUMP_LOAD
        for g in fleet.gpus:
            if g.node == f.node and f.gpu in (None, g.index):
                pools = {g.pool} | {s.pool for s in g.slices}
                models |= {model_of[p] for p in pools if p in model_of}
        out.append({"models": sorted(models), "decoy": decoy})
    return out


def slo_spec(models: list[str]) -> str:
    lines = [
        "apiVersion: gpuslo/v1",
        "kind: SLOs",
        "defaults:",
        "  service: bench",
        "  window: 1h",
        "  alerting: {base_window: 1m, windows: windows.yaml, min_events: 20}",
        "slos:",
    ]
    for m in models:
        lines += [
            f"  - name: {m}-ttft",
            "    objective: 99",
            f"    selector: {{model: {m}}}",
            "    latency: {metric: ttft, threshold: 5s}",
            f"  - name: {m}-tpot",
            "    objective: 93",
            f"    selector: {{model: {m}}}",
            "    latency: {metric: tpot, threshold: 100ms}",
            f"  - name: {m}-availability",
            "    objective: 99.5",
            f"    selector: {{model: {m}}}",
            "    availability: {}",
        ]
    return "\n".join(lines) + "\n"


Incident = dict[str, Any]  # one entry of incidents.json, with annotate()'s notes


def live(incidents: list[Incident], onset: float, detected: float) -> list[Incident]:
    """The faults active when the symptom began (or when it was detected)."""
    return [i for i in incidents if i["start"] - 120 <= detected and onset <= i["end"] + 600]


def names_target(cause: Cause, incident: Incident) -> bool:
    """Whether a cause (of any kind) names the incident's GPU or node."""
    entity = dict(cause.entity)
    if incident.get("node") is None or entity.get("Hostname") != incident["node"]:
        return False
    if incident.get("gpu") is None:
        return True
    return entity.get("gpu") == str(incident["gpu"])


def matches(cause: Cause, incident: Incident) -> bool:
    if cause.kind != EXPECTED.get(incident["kind"]):
        return False
    entity = dict(cause.entity)
    if incident["kind"] == "traffic_spike":
        return entity.get("tenant") == incident.get("tenant")
    if entity.get("Hostname") != incident.get("node"):
        return False
    return (
        "gpu" not in entity or incident.get("gpu") is None or entity["gpu"] == str(incident["gpu"])
    )


def ranking_speed(n: int = 10_000, steps: int = 240) -> float:
    rng = np.random.default_rng(3)
    times = np.arange(steps, dtype=np.float64) * STEP
    onset = times[150]
    cands = []
    # one GPU's throttling changes; everything else is noise
    target = len(SIGNALS) * 20 + next(
        i for i, s in enumerate(SIGNALS) if s.kind == "thermal_throttle"
    )
    for i in range(n):
        v = rng.normal(50, 3, steps)
        if i == target:
            v[140:] += 40
        signal = SIGNALS[i % len(SIGNALS)]
        labels = {"Hostname": f"n{i // 8}", "gpu": str(i % 8), "tenant": f"t{i}", "pool": f"p{i}"}
        cands.append(Candidate(signal, labels, v))
    started = time.perf_counter()
    causes = rank(cands, times, onset)
    took = time.perf_counter() - started
    top = dict(causes[0].entity)
    assert (top.get("Hostname"), top.get("gpu")) == (f"n{target // 8}", str(target % 8)), top
    return took


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # The defaults keep a full run under 15 minutes on two loaded cores (simulation is most).
    ap.add_argument("--seeds", type=int, default=5, help="variants of each fault scenario")
    ap.add_argument("--days", type=int, default=1, help="fault-free days (0: none)")
    ap.add_argument(
        "--scenario", action="append", choices=(*SCENARIOS, FAULT_FREE), help="default: all"
    )
    ap.add_argument("--verbose", action="store_true", help="print every episode's verdict")
    ap.add_argument("--dcgm-names", choices=c.DCGM_GENERATIONS, default=c.DEFAULT_DCGM_GENERATION)
    ap.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = ap.parse_args()
    names = args.scenario or [*SCENARIOS, *([FAULT_FREE] if args.days else [])]
    naming = c.gpu_naming(args.dcgm_names)
    config = Config(naming=naming)
    started = time.perf_counter()
    runs = []
    t0 = float(int(time.time() // DAY * DAY) - 120 * DAY)
    with tempfile.TemporaryDirectory(prefix="gpuslo-corr-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "windows.yaml").write_text(WINDOWS)
        day = 0
        for name in names:
            base = load_scenario(ROOT / "simulator" / "scenarios" / f"{name}.yaml")
            duration = parse_duration(base.duration)
            for seed in range(1, (args.days if name == FAULT_FREE else args.seeds) + 1):
                out = tmp / f"{name}-{seed}"
                start = t0 + day * DAY
                scenario = variant(base, seed)
                run_offline(scenario, out, start, naming=naming)
                models = sorted({p.model for p in base.pools})
                runs.append((name, seed, out, start, duration, models, annotate(scenario)))
                # Days of its own, and one empty one after: explain() looks an hour back.
                day += math.ceil(duration / DAY) + 1
        (tmp / "slos.yaml").write_text(slo_spec(sorted({m for r in runs for m in r[5]})))
        slos = {s.name: s for s in load_specs([tmp / "slos.yaml"])[0]}
        simulated = time.perf_counter() - started
        per_scenario: dict[str, Counter[str]] = {n: Counter() for n in names}
        took: list[float] = []
        with Prometheus(tmp / "prom") as prom:
            for run in runs:
                prom.backfill_openmetrics(run[2] / "history.om")
            prom.restart()
            loaded = time.perf_counter() - started
            for name, seed, out, start, duration, models, notes in runs:
                incidents = json.loads((out / "incidents.json").read_text())
                for incident, note in zip(incidents, notes, strict=True):
                    incident.update(note)
                for model in models:
                    for kind in ("ttft", "tpot", "availability"):
                        slo = slos[f"{model}-{kind}"]
                        data = sli_from_prometheus(prom.url, slo, start, start + duration, STEP)
                        ev = evaluate(slo, data)
                        for episode in (e for e in ev.episodes if e.tier == "page-fast"):
                            began = time.perf_counter()
                            exp = explain(prom.url, slo, episode.start, STEP, config=config)
                            took.append(time.perf_counter() - began)
                            verdict = score(
                                per_scenario[name],
                                exp,
                                live(incidents, exp.onset, exp.detected),
                                model,
                            )
                            if args.verbose:
                                top = [
                                    (c.kind, dict(c.entity), round(c.score, 3))
                                    for c in exp.causes[:3]
                                ]
                                print(
                                    f"{name} seed {seed} {slo.name}: {verdict}; top {top}",
                                    file=sys.stderr,
                                )
        total = time.perf_counter() - started
    speed = ranking_speed()
    text = report(args, names, per_scenario, took, speed, total, simulated, loaded)
    print(text)
    if args.write:
        write_block(args.write, "correlation", text)
    return 0


def score(tally: Counter[str], exp: Explanation, active: list[Incident], model: str) -> str:
    """Count one page episode into its scenario's tally; returns the verdict."""
    causes = exp.causes
    real = [i for i in active if model in i["models"] and not i["decoy"]]
    outside = [i for i in active if model not in i["models"] and i.get("node") is not None]
    decoys = [i for i in active if model in i["models"] and i["decoy"]]
    tally["episodes"] += 1
    notes = []
    if outside:
        tally["outside"] += 1
        if any(names_target(c, i) for c in causes for i in outside):
            tally["outside named"] += 1
            notes.append("names a fault outside the radius")
    if decoys:
        tally["bump"] += 1
        if causes and any(matches(causes[0], i) for i in decoys):
            tally["bump first"] += 1
            notes.append("names the bump inside capacity first")
    if not real:
        tally["false pages"] += 1
        if causes:
            tally["false causes"] += 1
        return "; ".join(["no fault: " + ("causes named" if causes else "none named"), *notes])
    # The fault nearest the onset, and those at once with it (overlapping it in time): naming
    # any of them counts.
    truth = min(real, key=lambda i: abs(i["start"] - exp.onset))
    together = [i for i in real if i["start"] < truth["end"] and truth["start"] < i["end"]]
    hits = [any(matches(c, i) for i in together) for c in causes]
    first = bool(hits[:1] and hits[0])
    top3 = any(hits[:3])
    tally["scored"] += 1
    tally["top1"] += first
    tally["top3"] += top3
    verdict = "top1" if first else "top3" if top3 else "miss"
    where = {k: truth.get(k) for k in ("kind", "node", "gpu", "tenant") if truth.get(k) is not None}
    if len(together) >= 2:
        pair = sorted(together, key=lambda i: abs(i["start"] - exp.onset))[:2]
        both = all(any(matches(c, i) for c in causes[:3]) for i in pair)
        tally["two"] += 1
        tally["both top3"] += both
        notes.append("both in the top 3" if both else "not both in the top 3")
    return "; ".join([f"{verdict} (truth {where})", *notes])


def report(
    args: argparse.Namespace,
    names: list[str],
    per_scenario: dict[str, Counter[str]],
    took: list[float],
    speed: float,
    total: float,
    simulated: float,
    loaded: float,
) -> str:
    results: Counter[str] = Counter()
    for tally in per_scenario.values():
        results.update(tally)
    rows = []
    for name in names:
        t = per_scenario[name]
        runs = args.days if name == FAULT_FREE else args.seeds
        rows.append(
            f"| {name} | {runs} | {t['episodes']} | {t['scored']} | "
            f"{_share(t['top1'], t['scored'])} | {_share(t['top3'], t['scored'])} | "
            f"{t['false pages']} | {t['false causes']} |"
        )
    runs = sum(args.days if n == FAULT_FREE else args.seeds for n in names)
    p50, p99 = (np.percentile(took, q) if took else float("nan") for q in (50, 99))
    r = results
    command = (
        f"`.venv/bin/python bench/correlation.py --seeds {args.seeds} --days {args.days} "
        + (f"--dcgm-names {args.dcgm_names} " if args.dcgm_names != "legacy" else "")
        + "--write docs/benchmarks.md`"
    )
    if args.scenario:
        command += " (only " + ", ".join(names) + ")"
    days = per_scenario.get(FAULT_FREE, Counter())
    ndays = args.days if FAULT_FREE in names else 0
    return "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
            f"cores, Python {platform.python_version()}.",
            "",
            f"Command: {command}",
            "",
            "| scenario | runs | page episodes | with a fault active | true cause first | "
            "in the top 3 | false pages | with a cause named |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            f"| **all** | {runs} | {r['episodes']} | {r['scored']} | "
            f"**{_share(r['top1'], r['scored'])}** | **{_share(r['top3'], r['scored'])}** | "
            f"{r['false pages']} | {r['false causes']} |",
            "",
            f"- two faults at once, both in the top 3: **{_share(r['both top3'], r['two'])}** "
            "of the episodes with two faults of the model active at once;",
            f"- a fault on another model's pool (outside the radius) named: "
            f"**{r['outside named']}** of {r['outside']} episodes during one;",
            f"- a tenant's bump inside capacity named first: **{r['bump first']}** of "
            f"{r['bump']} episodes during one;",
            f"- false pages: **{r['false pages']}** ({days['false pages']} in {ndays} "
            f"fault-free day{'' if ndays == 1 else 's'}); false-cause rate "
            f"(a cause named for a false page): **{_share(r['false causes'], r['false pages'])}**;",
            f"- explanation latency (`explain()` per episode, {len(took)} episodes): "
            f"p50 **{p50:.2f} s**, p99 **{p99:.2f} s**.",
            "",
            f"Ranking 10,000 candidate series for one episode: **{speed:.2f} s**. The whole run "
            f"took {total:.0f} s (simulation {simulated:.0f} s, backfill "
            f"{loaded - simulated:.0f} s, evaluation and explanations {total - loaded:.0f} s).",
        ]
    )


def _share(n: int, d: int) -> str:
    return f"{n / d:.0%} ({n}/{d})" if d else "-"


if __name__ == "__main__":
    raise SystemExit(main())
