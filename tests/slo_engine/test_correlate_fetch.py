"""The candidate fetch: the per-GPU ``max``/``min`` the correlator computes from the raw
series (``Signal.local_agg``) must equal what Prometheus answers for the signal's own PromQL,
series for series and value for value, in Prometheus' order: also for a GPU whose series
splits in two (dcgm-exporter's ``pod`` label changes when the pod is replaced), series that
overlap, gaps, and the current dcgm-exporter generation's units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuslo.foundation import conventions as c
from gpuslo.foundation.prometheus import grid_matrix, range_series
from gpuslo.foundation.promlab import Prometheus
from gpuslo.slo_engine.correlate import (
    SIGNALS,
    Config,
    Radius,
    aggregate,
    candidates_from_prometheus,
)

START = 1_791_000_000.0
STEP = 60.0
STEPS = 90
LOCAL = [s for s in SIGNALS if s.local_agg]


def test_every_locally_aggregated_signal_spells_the_promql_it_computes() -> None:
    assert {s.name for s in LOCAL} >= {"GPU up", "GPU temperature (C)"}
    for signal in LOCAL:
        assert signal.local_expr() == signal.expr
        assert signal.local_agg in ("max", "min")


def test_aggregate_groups_reduces_and_orders_like_prometheus() -> None:
    found = [
        {"metric": {"UUID": "b", "gpu": "1", "pod": "p2"}},
        {"metric": {"UUID": "a", "gpu": "0", "pod": "p1"}},
        {"metric": {"UUID": "b", "gpu": "1", "pod": "p1"}},
        {"metric": {"UUID": "c", "gpu": "", "pod": "p1"}},  # an empty label is no label
    ]
    nan = np.nan
    matrix = np.array([[nan, 5.0, 7.0], [1.0, 2.0, 3.0], [4.0, nan, 9.0], [nan, nan, nan]])
    series, got = aggregate(found, matrix, "max", ["Hostname", "gpu", "UUID"], 2.0)
    assert [s["metric"] for s in series] == [
        {"UUID": "a", "gpu": "0"},
        {"UUID": "b", "gpu": "1"},
        {"UUID": "c"},
    ]
    np.testing.assert_array_equal(got, [[0.5, 1.0, 1.5], [2.0, 2.5, 4.5], [nan, nan, nan]])
    _, low = aggregate(found, matrix, "min", ["gpu", "UUID"], 1.0)
    np.testing.assert_array_equal(low[1], [4.0, 5.0, 7.0])


def _history(path: Path, host: str) -> None:
    naming = c.gpu_naming("current" if host == "hostname" else "legacy")
    lines = []
    gpus = [("GPU-0001", "0", "node-a"), ("GPU-0002", "1", "node-a"), ("GPU-0003", "0", "node-b")]
    for field in (c.GPU_UP, c.DCGM_GPU_TEMP, c.DCGM_GPU_UTIL, c.DCGM_FB_USED):
        name = naming.name(field)
        lines.append(f"# TYPE {name} gauge")
        for g, (uuid, gpu, node) in enumerate(gpus):
            # GPU-0002's series splits: its pod is replaced at step 40, and both series
            # report for five steps (the old one until it goes, the new one from its start)
            pods = [("p-old", 0, 45), ("p-new", 40, STEPS)] if g == 1 else [("p", 0, STEPS)]
            for pod, lo, hi in pods:
                labels = f'UUID="{uuid}",gpu="{gpu}",{host}="{node}",pod="{pod}"'
                for k in range(lo, hi):
                    if g == 2 and 20 <= k < 30:
                        continue  # a gap
                    value = 1.0 if field is c.GPU_UP else 1000.0 + (k * 7 + g * 13) % 17
                    if field is c.GPU_UP and g == 2 and k >= 60:
                        value = 0.0
                    if pod == "p-new":
                        value += 3.5 if field is not c.GPU_UP else 0.0
                    lines.append(f"{name}{{{labels}}} {value:g} {START + k * STEP:.0f}")
    path.write_text("\n".join(lines) + "\n# EOF\n")


@pytest.mark.component
@pytest.mark.parametrize("generation", ["legacy", "current"])
def test_local_aggregation_equals_prometheus_answer(tmp_path: Path, generation: str) -> None:
    naming = c.gpu_naming(generation)
    _history(tmp_path / "h.om", naming.host_label)
    config = Config(naming=naming)
    radius = Radius("m", ["p"], ["GPU-0001", "GPU-0002", "GPU-0003"], ["node-a", "node-b"], [])
    start, end = START + 5 * STEP, START + (STEPS - 1) * STEP
    n = round((end - start) / STEP) + 1
    with Prometheus(tmp_path / "prom") as prom:
        prom.backfill_openmetrics(tmp_path / "h.om")
        prom.restart()
        times, cands = candidates_from_prometheus(
            prom.url, radius, start, end, STEP, signals=LOCAL, config=config
        )
        for signal in LOCAL:
            mine = [cand for cand in cands if cand.signal is signal]
            assert len(mine) == 3
            expr = mine[0].expr
            theirs = range_series(prom.url, expr, start, end, STEP, timeout=30)
            want = grid_matrix(theirs, start, STEP, n)[:, n - len(times) :]
            host = naming.host_label
            labels = [
                {(c.LABEL_HOSTNAME if k == host else k): v for k, v in s["metric"].items()}
                for s in theirs
            ]
            assert [cand.labels for cand in mine] == labels
            np.testing.assert_array_equal(np.vstack([cand.values for cand in mine]), want)
