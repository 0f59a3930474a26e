"""Benchmark cross-layer correlation: is the true cause ranked first?

For each fault scenario of the digital twin and each seed, a variant of the scenario is run
offline: the seed changes the traffic noise, every fault's start moves by up to eight minutes
either way, and a GPU fault lands on a GPU drawn from those serving the affected pool (an
InfiniBand flap on a node drawn from those hosting it). Every run's history is backfilled into
one real Prometheus (each run on its own day). For each run, the SLOs of the affected model
(time to first token and availability, one-hour period, compressed tiers) are evaluated; every
page episode is explained with ``slo_engine.correlate.explain`` and its ranked causes are
compared with the fault that was active when the symptom began (kind and GPU, node or tenant).

Replica readiness and pod -> pool come from the kube-state-metrics series the twin emits
(pools by owner, the default); GPU series are spelled in ``--dcgm-names`` (the twin writes
and the correlator reads the same generation).

Also timed: ranking 10,000 candidate series for one episode.

    .venv/bin/python bench/correlation.py [--seeds 10] [--dcgm-names legacy|current] \
        [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

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
from gpuslo.slo_engine.correlate import SIGNALS, Candidate, Config, explain, rank  # noqa: E402
from gpuslo.slo_engine.evaluator import evaluate  # noqa: E402
from gpuslo.slo_engine.history import sli_from_prometheus  # noqa: E402

SCENARIOS = (
    "thermal-throttling",
    "gpu-lost",
    "fabric-degradation",
    "noisy-neighbour",
    "traffic-spike",
)
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


def variant(base: Scenario, seed: int) -> Scenario:
    """The scenario with its faults moved in time and onto other GPUs of the same pool, and
    its traffic scaled so every pool runs at ``LOAD`` before them (the scenarios start at the
    daily trough, where most faults would not hurt at all)."""
    rng = random.Random(seed * 7919)
    fleet = Fleet(base)  # where the replicas land, to draw fault targets from
    demand: dict[str, float] = {}
    for i, tenant in enumerate(base.tenants):
        pool = next(p for p in base.pools if p.model == tenant.model)
        demand[pool.name] = demand.get(pool.name, 0.0) + fleet.tenant_rps(i) * tenant.output_tokens
    tenants = []
    for tenant in base.tenants:
        pool = next(p for p in base.pools if p.model == tenant.model)
        scale = LOAD * pool.replicas * pool.tokens_per_second / demand[pool.name]
        tenants.append(
            tenant.model_copy(update={"requests_per_second": tenant.requests_per_second * scale})
        )
    faults = []
    for fault in base.faults:
        at = max(600.0, parse_duration(fault.at) + rng.uniform(-480, 480))
        update: dict[str, object] = {"at": format_duration(round(at / STEP) * STEP)}
        if fault.node is not None:
            gpus = [g for g in fleet.gpus if g.node == fault.node and fault.gpu in (None, g.index)]
            pool = next((g.pool for g in gpus if g.pool), None) or next(
                (s.pool for g in gpus for s in g.slices if s.pool), None
            )
            same = [
                g for g in fleet.gpus if g.pool == pool or any(s.pool == pool for s in g.slices)
            ]
            if same and fault.kind != "ib_flap":
                pick = rng.choice(same)
                update |= {"node": pick.node, "gpu": pick.index}
            elif same:
                update |= {"node": rng.choice(sorted({g.node for g in same}))}
        faults.append(fault.model_copy(update=update))
    return base.model_copy(update={"seed": seed, "faults": faults, "tenants": tenants})


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


def truth_for(incidents: list[dict], onset: float, detected: float) -> dict | None:
    """The fault active when the symptom began (or when it was detected)."""
    live = [i for i in incidents if i["start"] - 120 <= detected and onset <= i["end"] + 600]
    if not live:
        return None
    return min(live, key=lambda i: abs(i["start"] - onset))


def matches(cause, incident: dict) -> bool:
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
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    ap.add_argument("--verbose", action="store_true", help="print every episode's verdict")
    ap.add_argument("--dcgm-names", choices=c.DCGM_GENERATIONS, default=c.DEFAULT_DCGM_GENERATION)
    ap.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = ap.parse_args()
    names = args.scenario or list(SCENARIOS)
    naming = c.gpu_naming(args.dcgm_names)
    config = Config(naming=naming)
    started = time.perf_counter()
    runs = []
    t0 = float(int(time.time() // DAY * DAY) - 90 * DAY)
    with tempfile.TemporaryDirectory(prefix="gpuslo-corr-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "windows.yaml").write_text(WINDOWS)
        k = 0
        for name in names:
            base = load_scenario(ROOT / "simulator" / "scenarios" / f"{name}.yaml")
            for seed in range(1, args.seeds + 1):
                out = tmp / f"{name}-{seed}"
                start = t0 + k * DAY
                run_offline(variant(base, seed), out, start, naming=naming)
                models = sorted({p.model for p in base.pools})
                runs.append((name, seed, out, start, parse_duration(base.duration), models))
                k += 1
        (tmp / "slos.yaml").write_text(slo_spec(sorted({m for r in runs for m in r[5]})))
        slos = {s.name: s for s in load_specs([tmp / "slos.yaml"])[0]}
        simulated = time.perf_counter() - started
        results: Counter[str] = Counter()
        per_scenario: dict[str, Counter[str]] = {n: Counter() for n in names}
        with Prometheus(tmp / "prom") as prom:
            for run in runs:
                prom.backfill_openmetrics(run[2] / "history.om")
            prom.restart()
            loaded = time.perf_counter() - started
            import json

            for name, seed, out, start, duration, models in runs:
                incidents = json.loads((out / "incidents.json").read_text())
                for model in models:
                    for kind in ("ttft", "tpot", "availability"):
                        slo = slos[f"{model}-{kind}"]
                        data = sli_from_prometheus(prom.url, slo, start, start + duration, STEP)
                        ev = evaluate(slo, data)
                        pages = [e for e in ev.episodes if e.tier == "page-fast"]
                        for episode in pages:
                            exp = explain(prom.url, slo, episode.start, STEP, config=config)
                            truth = truth_for(incidents, exp.onset, exp.detected)
                            tally = per_scenario[name]
                            tally["episodes"] += 1
                            if truth is None:
                                tally["no fault"] += 1
                                verdict = "no fault active"
                            else:
                                hits = [matches(c, truth) for c in exp.causes]
                                first = bool(hits[:1] and hits[0])
                                top3 = any(hits[:3])
                                tally["scored"] += 1
                                tally["top1"] += first
                                tally["top3"] += top3
                                verdict = "top1" if first else "top3" if top3 else "miss"
                            if args.verbose:
                                top = [(c.kind, dict(c.entity)) for c in exp.causes[:3]]
                                where = truth and {
                                    k: truth.get(k) for k in ("kind", "node", "gpu", "tenant")
                                }
                                print(
                                    f"{name} seed {seed} {slo.name}: {verdict}; truth {where}; "
                                    f"top {top}",
                                    file=sys.stderr,
                                )
        total = time.perf_counter() - started
    for tally in per_scenario.values():
        results.update(tally)
    speed = ranking_speed()
    rows = []
    for name in names:
        t = per_scenario[name]
        rows.append(
            f"| {name} | {args.seeds} | {t['episodes']} | {t['scored']} | "
            f"{_share(t['top1'], t['scored'])} | {_share(t['top3'], t['scored'])} |"
        )
    text = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
            f"cores, Python {platform.python_version()}.",
            "",
            f"Command: `.venv/bin/python bench/correlation.py --seeds {args.seeds} "
            + (f"--dcgm-names {args.dcgm_names} " if args.dcgm_names != "legacy" else "")
            + "--write docs/benchmarks.md`",
            "",
            "| scenario | runs | page episodes | with a fault active | true cause first | "
            "in the top 3 |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            f"| **all** | {args.seeds * len(names)} | {results['episodes']} | "
            f"{results['scored']} | **{_share(results['top1'], results['scored'])}** | "
            f"**{_share(results['top3'], results['scored'])}** |",
            "",
            f"Ranking 10,000 candidate series for one episode: **{speed:.2f} s**. The whole run "
            f"took {total:.0f} s (simulation {simulated:.0f} s, backfill "
            f"{loaded - simulated:.0f} s).",
        ]
    )
    print(text)
    if args.write:
        write_block(args.write, "correlation", text)
    return 0


def _share(n: int, d: int) -> str:
    return f"{n / d:.0%} ({n}/{d})" if d else "-"


if __name__ == "__main__":
    raise SystemExit(main())
