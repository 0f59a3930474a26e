"""Cross-layer correlation: from "this SLO burns" to "probably this, because that changed".

For a burn episode the engine

1. finds the SLO's blast radius from the attribution labels: the pods serving its model (any
   series with both ``model`` and ``pod`` labels), their GPUs (``gpuslo_gpu_pod_info``), the
   nodes of those GPUs (``Hostname``), the tenants sending it traffic;
2. gathers candidate signals there, one series per GPU, node, pod, pool or tenant: GPU up,
   XID and double-bit ECC errors, thermal throttling and temperature, NVLink CRC errors and
   throughput, PCIe replays, memory used, foreign processes and utilization, InfiniBand port
   state, link recoveries and throughput, queue length and KV-cache usage, ready replicas,
   request rate;
3. finds where each candidate changed most near the symptom's onset (a two-segment mean
   shift), and how much (effect size against its own baseline noise, Welch's t-test with
   scipy);
4. ranks causes: a change that comes before or with the symptom outranks one after it; hard
   fault signals (an XID, a lost GPU, throttling, CRC errors, a port going down, a process that
   serves no pod) outrank soft ones (utilization, temperature); per-GPU soft signals count only
   by how much more they moved than the same signal on the other GPUs of the radius (a load
   change moves all of them alike).

Signals outside the radius are never fetched: a throttled GPU serving another model cannot
be named as the cause.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gpuslo.foundation import conventions as c

Array = npt.NDArray[np.float64]

BEFORE = 15 * 60.0  # baseline length before a change point
AFTER = 8 * 60.0  # segment after it
SEARCH_BEFORE = 40 * 60.0  # change points searched from onset - this … (a backlog can take
# half an hour to turn a lost replica into shed requests)
SEARCH_AFTER = 5 * 60.0  # … to onset + this
LATE = 2 * 60.0  # a change later than onset + this is an effect, not a cause
EFFECT_CAP = 20.0


@dataclass(frozen=True)
class Signal:
    """One kind of candidate: a PromQL template over the radius and how to read it."""

    kind: str  # the cause it points to
    name: str  # human name
    expr: str  # with {uuids}, {nodes}, {pods}, {model}, {pools} placeholders
    by: tuple[str, ...]  # labels naming the entity
    prior: float  # 1.0 for hard fault signals, less for soft ones
    direction: int  # +1: trouble when it rises; -1: when it falls
    fill: float | None = None  # value for steps without a sample (info/count series)
    peer_relative: bool = False
    carry: bool = False  # a counter: 0 before its first sample, its last value in a gap


# The names in the signals' PromQL templates, from the naming contract (metrics by their
# family, ``{l_...}`` labels, ``{by_gpu}`` a GPU's identity); the radius fills the rest.
_NAMES: dict[str, str] = {
    "dcgm_ecc_dbe_vol_total": c.DCGM_ECC_DBE_VOL.name,
    "dcgm_fb_used": c.DCGM_FB_USED.name,
    "dcgm_gpu_temp": c.DCGM_GPU_TEMP.name,
    "dcgm_gpu_util": c.DCGM_GPU_UTIL.name,
    "dcgm_pcie_replay_counter": c.DCGM_PCIE_REPLAY.name,
    "gpu_nvlink_crc_flit_errors_total": c.GPU_NVLINK_CRC_FLIT_ERRORS.name,
    "gpu_nvlink_tx_bytes_total": c.GPU_NVLINK_TX_BYTES.name,
    "gpu_process_info": c.GPU_PROCESS_INFO.name,
    "gpu_throttle_seconds_total": c.GPU_THROTTLE_SECONDS.name,
    "gpu_up": c.GPU_UP.name,
    "gpu_xid_errors_total": c.GPU_XID_ERRORS.name,
    "server_kv_cache_usage_ratio": c.SERVER_KV_CACHE_USAGE.name,
    "server_requests_waiting": c.SERVER_REQUESTS_WAITING.name,
    "ib_state_id": c.IB_STATE_ID.name,
    "ib_link_error_recovery_total": c.IB_PREFIX + "link_error_recovery_total",
    "ib_port_data_transmitted_bytes_total": c.IB_PREFIX + "port_data_transmitted_bytes_total",
    "twin_pool_ready_replicas": c.TWIN_READY,
    "genai_requests_total": c.REQUESTS_TOTAL,
    "by_gpu": f"{c.LABEL_HOSTNAME}, {c.LABEL_GPU}, {c.LABEL_UUID}",
    "l_hostname": c.LABEL_HOSTNAME,
    "l_gpu": c.LABEL_GPU,
    "l_uuid": c.LABEL_UUID,
    "l_xid": c.LABEL_XID,
    "l_reason": c.LABEL_REASON,
    "l_pod": c.LABEL_POD,
    "l_model": c.LABEL_MODEL,
    "l_pool": c.LABEL_POOL,
    "l_tenant": c.LABEL_TENANT,
}


SIGNALS: tuple[Signal, ...] = (
    Signal(
        "gpu_lost",
        "GPU up",
        "min by ({by_gpu}) ({gpu_up}{{{l_uuid}=~{uuids}}})",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        -1,
    ),
    Signal(
        "xid",
        "XID errors",
        # The counter itself: it appears with its first XID, which rate() cannot see.
        "sum by ({by_gpu}, {l_xid}) ({gpu_xid_errors_total}{{{l_uuid}=~{uuids}}})",
        (c.LABEL_HOSTNAME, c.LABEL_GPU, c.LABEL_XID),
        1.0,
        1,
        fill=0.0,
        carry=True,
    ),
    Signal(
        "thermal_throttle",
        "thermal throttling (s/s)",
        "sum by ({by_gpu}) "
        '(rate({gpu_throttle_seconds_total}{{{l_uuid}=~{uuids},{l_reason}="thermal"}}[1m]))',
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        1,
        fill=0.0,
    ),
    Signal(
        "thermal_throttle",
        "GPU temperature (C)",
        "max by ({by_gpu}) ({dcgm_gpu_temp}{{{l_uuid}=~{uuids}}})",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.5,
        1,
        peer_relative=True,
    ),
    Signal(
        "nvlink_crc",
        "NVLink CRC errors (/s)",
        "sum by ({by_gpu}) (rate({gpu_nvlink_crc_flit_errors_total}{{{l_uuid}=~{uuids}}}[1m]))",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        1,
        fill=0.0,
    ),
    Signal(
        "noisy_neighbour",
        "processes of no serving pod",
        "count by ({by_gpu}) ({gpu_process_info}{{{l_uuid}=~{uuids},{l_pod}!~{pods}}})",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        1,
        fill=0.0,
    ),
    Signal(
        "noisy_neighbour",
        "GPU utilization (%)",
        "max by ({by_gpu}) ({dcgm_gpu_util}{{{l_uuid}=~{uuids}}})",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.4,
        1,
        peer_relative=True,
    ),
    Signal(
        "ecc",
        "double-bit ECC errors (/s)",
        "sum by ({by_gpu}) (rate({dcgm_ecc_dbe_vol_total}{{{l_uuid}=~{uuids}}}[2m]))",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        1,
        fill=0.0,
    ),
    Signal(
        "pcie",
        "PCIe replays (/s)",
        "sum by ({by_gpu}) (rate({dcgm_pcie_replay_counter}{{{l_uuid}=~{uuids}}}[2m]))",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.8,
        1,
        fill=0.0,
    ),
    Signal(
        "memory_pressure",
        "GPU memory used (MiB)",
        "max by ({by_gpu}) ({dcgm_fb_used}{{{l_uuid}=~{uuids}}})",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.4,
        1,
        peer_relative=True,
    ),
    Signal(
        "nvlink_crc",
        "NVLink throughput (bytes/s)",
        "sum by ({by_gpu}) (rate({gpu_nvlink_tx_bytes_total}{{{l_uuid}=~{uuids}}}[1m]))",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.3,
        -1,
        peer_relative=True,
    ),
    Signal(
        "ib_flap",
        "InfiniBand port state",
        "min by ({l_hostname}) ({ib_state_id}{{{l_hostname}=~{nodes}}})",
        (c.LABEL_HOSTNAME,),
        1.0,
        -1,
    ),
    Signal(
        "ib_flap",
        "InfiniBand link error recoveries (/s)",
        "sum by ({l_hostname}) (rate({ib_link_error_recovery_total}{{{l_hostname}=~{nodes}}}[1m]))",
        (c.LABEL_HOSTNAME,),
        1.0,
        1,
        fill=0.0,
    ),
    Signal(
        "ib_flap",
        "InfiniBand throughput (bytes/s)",
        "sum by ({l_hostname}) "
        "(rate({ib_port_data_transmitted_bytes_total}{{{l_hostname}=~{nodes}}}[1m]))",
        (c.LABEL_HOSTNAME,),
        0.3,
        -1,
    ),
    Signal(
        "queueing",
        "requests waiting in the server",
        'sum by ({l_pod}) ({server_requests_waiting}{{{l_model}="{model}"}})',
        (c.LABEL_POD,),
        0.3,
        1,
    ),
    Signal(
        "kv_cache",
        "KV-cache usage",
        'max by ({l_pod}) ({server_kv_cache_usage_ratio}{{{l_model}="{model}"}})',
        (c.LABEL_POD,),
        0.3,
        1,
    ),
    Signal(
        "replica_loss",
        "ready replicas",
        "sum by ({l_pool}) ({twin_pool_ready_replicas}{{{l_pool}=~{pools}}})",
        (c.LABEL_POOL,),
        0.8,
        -1,
    ),
    Signal(
        "traffic_drop",
        "requests/s by tenant (falling)",
        'sum by ({l_tenant}) (rate({genai_requests_total}{{{l_model}="{model}"}}[2m]))',
        (c.LABEL_TENANT,),
        0.6,
        -1,
        fill=0.0,
    ),
    Signal(
        "traffic_spike",
        "requests/s by tenant",
        'sum by ({l_tenant}) (rate({genai_requests_total}{{{l_model}="{model}"}}[2m]))',
        (c.LABEL_TENANT,),
        0.9,
        1,
        fill=0.0,
    ),
)


@dataclass
class Candidate:
    signal: Signal
    labels: dict[str, str]
    values: Array
    expr: str = ""  # the PromQL it came from, for the evidence

    @property
    def entity(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, self.labels.get(k, "")) for k in self.signal.by if k != "xid")

    @property
    def kind(self) -> str:
        if self.signal.kind == "xid" and self.labels.get("xid") == "79":
            return "gpu_lost"  # XID 79: the GPU fell off the bus
        return self.signal.kind


@dataclass
class Evidence:
    signal: str
    kind: str
    entity: tuple[tuple[str, str], ...]
    changed_at: float
    before: float
    after: float
    effect: float
    p_value: float
    score: float
    query: str = ""

    def sentence(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.entity if v)
        verb = "rose" if self.after > self.before else "fell"
        return (
            f"{self.signal} on {where or 'the fleet'} {verb} from {_num(self.before)} to "
            f"{_num(self.after)} (effect {self.effect:.1f}, p={self.p_value:.1g})"
        )


@dataclass
class Cause:
    kind: str
    entity: tuple[tuple[str, str], ...]
    score: float
    evidence: list[Evidence] = field(default_factory=list)

    def sentence(self, onset: float) -> str:
        first = self.evidence[0]
        lead = onset - first.changed_at
        when = f"{abs(lead) / 60:.1f} min {'before' if lead >= 0 else 'after'} the symptom"
        return f"{self.kind.replace('_', ' ')}: {first.sentence()}, {when}"

    def as_dict(self, onset: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "entity": dict(self.entity),
            "score": round(self.score, 4),
            "summary": self.sentence(onset),
            "evidence": [
                {
                    "signal": e.signal,
                    "changed_at": e.changed_at,
                    "before": _round(e.before),
                    "after": _round(e.after),
                    "effect": round(e.effect, 3),
                    "p_value": float(f"{e.p_value:.3g}"),
                    "query": e.query,
                }
                for e in self.evidence
            ],
        }


def _num(x: float) -> str:
    return f"{x:.3g}"


def _round(x: float) -> float | None:
    return None if math.isnan(x) else float(f"{x:.6g}")


# --------------------------------------------------------------------------- change points
def change_points(
    matrix: Array,
    times: Array,
    onset: float,
    directions: Array,
    search: tuple[float, float] = (SEARCH_BEFORE, SEARCH_AFTER),
    segments: tuple[float, float] = (BEFORE, AFTER),
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """For every row of ``matrix``: the split within ``onset - search[0] … onset + search[1]``
    with the largest directed mean shift between ``segments[0]`` before and ``segments[1]``
    after it, scaled by the noise before it. Returns the split index, mean before, mean after,
    effect size, Welch's p-value and a mask of rows with a shift in the asked direction."""
    from scipy import stats

    n, steps = matrix.shape
    step = float(np.median(np.diff(times))) if len(times) > 1 else 60.0
    nb, na = max(3, int(segments[0] / step)), max(3, int(segments[1] / step))
    lo = max(int(np.searchsorted(times, onset - search[0])), nb)
    hi = min(int(np.searchsorted(times, onset + search[1], side="right")), steps - na)
    empty = np.zeros(n)
    if hi <= lo or n == 0:
        return empty.astype(int), empty, empty, empty, np.ones(n), np.zeros(n, dtype=bool)
    means = np.nanmean(np.where(np.isfinite(matrix), matrix, np.nan), axis=1)
    means = np.where(np.isfinite(means), means, 0.0)
    v = np.where(np.isfinite(matrix), matrix, means[:, None])
    zero = np.zeros((n, 1))
    csum = np.concatenate((zero, np.cumsum(v, axis=1)), axis=1)
    csq = np.concatenate((zero, np.cumsum(v * v, axis=1)), axis=1)
    splits = np.arange(lo, hi)
    mean_b = (csum[:, splits] - csum[:, splits - nb]) / nb
    mean_a = (csum[:, splits + na] - csum[:, splits]) / na
    var_b = np.maximum((csq[:, splits] - csq[:, splits - nb]) / nb - mean_b**2, 0.0)
    scale = np.sqrt(var_b) + np.maximum(1e-3 * np.abs(mean_b), 1e-6)
    shift = directions[:, None] * (mean_a - mean_b) / scale
    best = np.argmax(shift, axis=1)
    rows = np.arange(n)
    effect = shift[rows, best]
    mb, ma = mean_b[rows, best], mean_a[rows, best]
    k = splits[best]
    # Welch's t-test between the two segments, with sample variances.
    vb = var_b[rows, best] * nb / (nb - 1)
    var_a = np.maximum((csq[rows, k + na] - csq[rows, k]) / na - ma**2, 0.0) * na / (na - 1)
    se2 = vb / nb + var_a / na
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ma - mb) / np.sqrt(se2)
        df = se2**2 / ((vb / nb) ** 2 / (nb - 1) + (var_a / na) ** 2 / (na - 1))
    p = 2 * stats.t.sf(np.abs(t), np.where(np.isfinite(df), df, 1.0))
    tiny = se2 <= 1e-18 * np.maximum(mb**2 + ma**2, 1e-300)  # both segments flat
    p = np.where(tiny, np.where(np.abs(ma - mb) > 0, 0.0, 1.0), p)
    p = np.where(np.isfinite(p), p, 1.0)
    return k, mb, ma, effect, p, effect > 0


def onset_of(ratio: Array, times: Array, detected: float) -> float:
    """When the symptom began: the SLI's largest rise in the half hour up to detection."""
    found = change_points(
        ratio[None, :],
        times,
        detected,
        np.ones(1),
        search=(30 * 60.0, 0.0),
        segments=(15 * 60.0, 3 * 60.0),
    )
    if not found[5][0]:
        return detected
    return float(min(times[int(found[0][0])], detected))


def trim(times: Array, rows: Sequence[Array]) -> tuple[Array, list[Array]]:
    """Cut the grid to start where the data does (before it, nothing is known: filling or
    averaging there would invent a change at the start of the history)."""
    first = len(times)
    for values in rows:
        finite = np.flatnonzero(np.isfinite(values))
        if len(finite):
            first = min(first, int(finite[0]))
    return times[first:], [v[first:] for v in rows]


def rank(candidates: Sequence[Candidate], times: Array, onset: float) -> list[Cause]:
    """Causes, most probable first."""
    evidence: list[tuple[Candidate, Evidence]] = []
    if candidates:
        matrix = np.vstack([c.values for c in candidates]).astype(np.float64)
        directions = np.array([c.signal.direction for c in candidates], dtype=np.float64)
        ks, befores, afters, effects, ps, valid = change_points(matrix, times, onset, directions)
        for i, cand in enumerate(candidates):
            if not valid[i]:
                continue
            changed = float(times[ks[i]])
            lead = onset - changed
            # Before or with the symptom: a cause; well after it: an effect. Long leads are
            # allowed (a backlog builds slowly) but weigh a little less.
            timing = 0.3 if lead < -LATE else 1.0 - 0.4 * max(0.0, lead - 600) / SEARCH_BEFORE
            p = float(ps[i])
            significant = 1.0 if p < 0.01 else 0.5 if p < 0.05 else 0.1
            effect = float(effects[i])
            score = cand.signal.prior * timing * significant * min(effect, EFFECT_CAP) / EFFECT_CAP
            evidence.append(
                (
                    cand,
                    Evidence(
                        cand.signal.name,
                        cand.kind,
                        cand.entity,
                        changed,
                        float(befores[i]),
                        float(afters[i]),
                        effect,
                        p,
                        score,
                        cand.expr,
                    ),
                )
            )
    # Soft per-GPU signals: only what a GPU moved beyond its peers counts.
    groups: dict[str, list[Evidence]] = {}
    for cand, ev in evidence:
        if cand.signal.peer_relative:
            groups.setdefault(cand.signal.name, []).append(ev)
    for evs in groups.values():
        if len(evs) >= 3:
            typical = float(np.median([e.effect for e in evs]))
            for e in evs:
                e.effect = max(0.0, e.effect - typical)
                e.score = e.score * (e.effect / max(e.effect + typical, 1e-9))
    causes: dict[tuple[str, tuple[tuple[str, str], ...]], Cause] = {}
    for cand, ev in evidence:
        if ev.score <= 0:
            continue
        key = (cand.kind, cand.entity)
        cause = causes.setdefault(key, Cause(cand.kind, cand.entity, 0.0))
        cause.evidence.append(ev)
    for cause in causes.values():
        cause.evidence.sort(key=lambda e: -e.score)
        scores = [e.score for e in cause.evidence]
        cause.score = scores[0] + 0.1 * sum(scores[1:4])  # corroboration adds a little
    return sorted(causes.values(), key=lambda c: -c.score)


# --------------------------------------------------------------------------- from Prometheus
def _regex(values: Sequence[str]) -> str:
    if not values:
        return '"__none__"'
    return '"' + "|".join(re.escape(v).replace("\\", "\\\\") for v in sorted(values)) + '"'


@dataclass
class Radius:
    model: str
    pods: list[str]
    uuids: list[str]
    nodes: list[str]
    pools: list[str]


def blast_radius(url: str, model: str, start: float, end: float) -> Radius:
    """Pods, GPUs, nodes and pools serving ``model`` at any time in [start, end]."""
    from gpuslo.foundation.prometheus import instant

    def query(expr: str, at: float) -> list[dict[str, Any]]:
        return instant(url, expr, at, timeout=120)

    span = max(60, int(end - start))
    at = end
    pods = query(
        f'group by (namespace, pod) (last_over_time({{model="{model}",pod!=""}}[{span}s]))', at
    )
    pod_names = sorted({r["metric"].get("pod", "") for r in pods} - {""})
    pools = sorted(
        {
            r["metric"].get("pool", "")
            for r in query(
                f"group by ({c.LABEL_POOL}) (last_over_time({c.TWIN_REPLICA_INFO}"
                f'{{{c.LABEL_MODEL}="{model}"}}[{span}s]))',
                at,
            )
        }
        - {""}
    )
    gpus = query(
        f"group by ({c.LABEL_UUID}, {c.LABEL_HOSTNAME}) (last_over_time({c.GPU_POD_INFO.name}"
        f"{{{c.LABEL_POD}=~{_regex(pod_names)}}}[{span}s]))",
        at,
    )
    uuids = sorted({r["metric"].get(c.LABEL_UUID, "") for r in gpus} - {""})
    nodes = sorted({r["metric"].get(c.LABEL_HOSTNAME, "") for r in gpus} - {""})
    return Radius(model, pod_names, uuids, nodes, pools)


def candidates_from_prometheus(
    url: str,
    radius: Radius,
    start: float,
    end: float,
    step: float,
    signals: Sequence[Signal] = SIGNALS,
) -> tuple[Array, list[Candidate]]:
    """Every signal's series over the radius, on one time grid."""
    from gpuslo.foundation.prometheus import on_grid, range_series

    n = round((end - start) / step) + 1
    times = start + step * np.arange(n, dtype=np.float64)
    out = []
    fill = {
        **_NAMES,
        "uuids": _regex(radius.uuids),
        "nodes": _regex(radius.nodes),
        "pods": _regex(radius.pods),
        "pools": _regex(radius.pools),
        "model": radius.model,
    }
    for signal in signals:
        expr = signal.expr.format(**fill)
        for series in range_series(url, expr, start, end, step):
            out.append(
                Candidate(signal, dict(series["metric"]), on_grid(series, start, step, n), expr)
            )
    # Where the history starts: the first sample of any always-present signal (GPU up, port
    # state, ready replicas). Before it, nothing is known; after it, a counter or info series
    # without a sample means "none" (no XID yet, no foreign process).
    times, _rows = trim(times, [c.values for c in out if c.signal.fill is None])
    cut = n - len(times)
    for cand in out:
        cand.values = cand.values[cut:]
        if cand.signal.carry:  # forward-fill gaps (a lost GPU stops reporting its counters)
            seen = np.isfinite(cand.values)
            last = np.maximum.accumulate(np.where(seen, np.arange(len(seen)), -1))
            carried = np.where(last >= 0, cand.values[np.maximum(last, 0)], np.nan)
            cand.values = carried
        if cand.signal.fill is not None:
            cand.values = np.where(np.isnan(cand.values), cand.signal.fill, cand.values)
    return times, out


@dataclass
class Explanation:
    slo: str
    detected: float  # when the page fired (or the time asked about)
    onset: float  # when the symptom began, from the SLI's own change point
    radius: Radius
    causes: list[Cause]
    candidates: int

    def as_dict(self, top: int = 5) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "detected": self.detected,
            "onset": self.onset,
            "radius": {
                "model": self.radius.model,
                "pods": self.radius.pods,
                "gpus": len(self.radius.uuids),
                "nodes": self.radius.nodes,
            },
            "candidates": self.candidates,
            "causes": [c.as_dict(self.onset) for c in self.causes[:top]],
        }


def explain(
    url: str, slo: Any, at: float, step: float = 60.0, lookback: float = 3600.0
) -> Explanation:
    """Rank the probable causes of ``slo`` burning at ``at`` (a time inside a burn episode, or
    its start), from the Prometheus at ``url``."""
    from gpuslo.foundation.prometheus import HistoryError

    from .evaluator import evaluate
    from .history import sli_from_prometheus

    model = dict(slo.selector).get("model") if slo.selector else None
    if not model:
        raise HistoryError(f"{slo.name}: correlation needs an SLO selecting one model")
    start = at - lookback
    data = sli_from_prometheus(url, slo, start - slo.period, at + SEARCH_AFTER + AFTER, step)
    ev = evaluate(slo, data)
    ts = ev.timestamps
    # The episode that contains ``at`` (or starts soonest after it): its first firing step.
    detected = at
    for e in ev.episodes:
        if e.start <= at < e.end or at <= e.start <= at + 5 * 60:
            detected = e.start
            break
    base = next(iter(ev.error_ratio))  # the base window, listed first
    sli_times, (ratio,) = trim(ts, [ev.error_ratio[base]])
    onset = onset_of(np.nan_to_num(ratio), sli_times, detected)

    lo, hi = onset - SEARCH_BEFORE - BEFORE, onset + SEARCH_AFTER + AFTER
    radius = blast_radius(url, model, lo, hi)
    times, cands = candidates_from_prometheus(url, radius, lo, hi, step)
    return Explanation(slo.name, detected, onset, radius, rank(cands, times, onset), len(cands))
