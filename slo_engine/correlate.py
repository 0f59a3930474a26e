"""Cross-layer correlation: from "this SLO burns" to "probably this, because that changed".

For a burn episode the engine

1. finds the SLO's blast radius from the attribution labels: the pods serving its model (the
   canonical request series, ``gen_ai_server_*`` and ``gpuslo_server_*``, carry ``model``,
   ``namespace`` and ``pod``), their pools (from kube-state-metrics: the Deployment or other
   controller owning each pod, or a pod label; ``PoolIdentity``), their GPUs
   (``gpuslo_gpu_pod_info``), the nodes of those GPUs (the naming's host label), the tenants
   sending it traffic;
2. gathers candidate signals there, one series per GPU, node, pod, pool or tenant: GPU up,
   XID and double-bit ECC errors, thermal throttling and temperature, NVLink CRC errors and
   throughput, PCIe replays, memory used, foreign processes and utilization, InfiniBand port
   state, link recoveries and throughput, queue length and KV-cache usage, ready replicas
   (``kube_pod_status_ready`` summed per pool), request rate;
3. finds where each candidate changed most near the symptom's onset (a two-segment mean
   shift), and how much (effect size against its own baseline noise, Welch's t-test with
   scipy);
4. ranks causes: a change that comes before or with the symptom outranks one after it; hard
   fault signals (an XID, a lost GPU, throttling, CRC errors, a port going down, a process that
   serves no pod) outrank soft ones (utilization, temperature); per-GPU soft signals count only
   by how much more they moved than the same signal on the other GPUs of the radius (a load
   change moves all of them alike), and a GPU's temperature counts only by how much more it
   rose than its own utilization did (heat that follows load is the load's effect).

GPU series are read as one dcgm-exporter generation spells them (``Config.naming``: names,
host label, units; values are brought back to the legacy units the signals are named in), and
every cause names its host as ``Hostname`` whatever the generation. Nothing here reads the
digital twin's own ``gpuslo_twin_*`` series: the twin emits the kube-state-metrics series too.

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
MIN_SCORE = 0.1  # a cause scoring less is not named (a page with no fault names nothing)
WHOLE_RISE = 0.3  # a tenant's rise counts in full from 30% of the model's traffic


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
    follows: str = ""  # the signal (by name) whose rise on the same entity explains this one's
    # A share of a whole (a tenant's requests of the model's): a rise counts by how much it
    # adds to the sum of every series of the signal, in full from this fraction of the sum.
    whole: float = 0.0
    # ``agg by ({by_gpu}) (selector){u_unit}``, done here instead of in Prometheus: the raw
    # ``selector`` is fetched and its series reduced per GPU (``max``/``min`` are exact in any
    # order; Prometheus grouping thousands of GPUs at every step costs more than the rest of
    # the query). ``expr`` stays the PromQL it equals, quoted in the evidence.
    local_agg: str = ""
    selector: str = ""
    unit: str = ""  # the _GPU_FIELDS key whose factor brings the field to its legacy unit

    def local_expr(self) -> str:
        """The PromQL template ``local_agg`` computes (``expr`` for such signals)."""
        unit = f"{{u_{self.unit}}}" if self.unit else ""
        return f"{self.local_agg} by ({{by_gpu}}) ({self.selector}){unit}"


# The names in the signals' PromQL templates, from the naming contract (metrics by their
# family, ``{l_...}`` labels, ``{by_gpu}`` a GPU's identity, ``{u_...}`` the division that
# brings a GPU field back to its legacy unit); the radius fills the rest.
_GPU_FIELDS: dict[str, c.MetricSpec] = {
    "dcgm_ecc_dbe_vol_total": c.DCGM_ECC_DBE_VOL,
    "dcgm_fb_used": c.DCGM_FB_USED,
    "dcgm_gpu_temp": c.DCGM_GPU_TEMP,
    "dcgm_gpu_util": c.DCGM_GPU_UTIL,
    "dcgm_pcie_replay_counter": c.DCGM_PCIE_REPLAY,
    "gpu_nvlink_crc_flit_errors_total": c.GPU_NVLINK_CRC_FLIT_ERRORS,
    "gpu_nvlink_tx_bytes_total": c.GPU_NVLINK_TX_BYTES,
    "gpu_process_info": c.GPU_PROCESS_INFO,
    "gpu_throttle_seconds_total": c.GPU_THROTTLE_SECONDS,
    "gpu_up": c.GPU_UP,
    "gpu_xid_errors_total": c.GPU_XID_ERRORS,
    "gpu_pod_info": c.GPU_POD_INFO,
}
_OTHER_NAMES: dict[str, str] = {
    "server_kv_cache_usage_ratio": c.SERVER_KV_CACHE_USAGE.name,
    "server_requests_waiting": c.SERVER_REQUESTS_WAITING.name,
    "ib_state_id": c.IB_STATE_ID.name,
    "ib_link_error_recovery_total": c.IB_PREFIX + "link_error_recovery_total",
    "ib_port_data_transmitted_bytes_total": c.IB_PREFIX + "port_data_transmitted_bytes_total",
    "ksm_pod_status_ready": c.KSM_POD_STATUS_READY,
    "ksm_pod_info": c.KSM_POD_INFO,
    "genai_requests_total": c.REQUESTS_TOTAL,
    "l_gpu": c.LABEL_GPU,
    "l_uuid": c.LABEL_UUID,
    "l_xid": c.LABEL_XID,
    "l_reason": c.LABEL_REASON,
    "l_pod": c.LABEL_POD,
    "l_pod_uid": c.LABEL_POD_UID,
    "l_uid": c.LABEL_UID,
    "l_namespace": c.LABEL_NAMESPACE,
    "l_condition": c.LABEL_CONDITION,
    "l_model": c.LABEL_MODEL,
    "l_pool": c.LABEL_POOL,
    "l_tenant": c.LABEL_TENANT,
}


def template_names(naming: c.GpuNaming) -> dict[str, str]:
    """The signal templates' names for one dcgm-exporter generation."""
    out = dict(_OTHER_NAMES)
    for key, spec in _GPU_FIELDS.items():
        out[key] = naming.name(spec)
        factor = naming.factor(spec)
        out["u_" + key] = "" if factor == 1.0 else f" / {factor!r}"
    out["l_hostname"] = naming.host_label
    out["by_gpu"] = f"{naming.host_label}, {c.LABEL_GPU}, {c.LABEL_UUID}"
    return out


# --------------------------------------------------------------------------- pools
@dataclass(frozen=True)
class PoolIdentity:
    """How a pod's pool is found from kube-state-metrics.

    ``owner`` (the default, nothing to configure): the pod's controller as ``kube_pod_owner``
    names it; a ReplicaSet is followed to the Deployment owning it (``kube_replicaset_owner``),
    any other kind (StatefulSet, a LeaderWorkerSet's StatefulSets, a custom controller) is the
    pool itself. ``label``: the value of a pod label (``kube_pod_labels``' ``label_<name>``,
    which kube-state-metrics exports only for labels given to ``--metric-labels-allowlist``),
    for pools that span controllers (a LeaderWorkerSet: ``leaderworkerset.sigs.k8s.io/name``).
    """

    by: str = "owner"
    label: str = c.LABEL_POOL

    @property
    def ksm_label(self) -> str:
        """kube_pod_labels' name for the label (``label_`` + the name, others as ``_``)."""
        return c.KSM_LABEL_PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", self.label)

    def describe(self) -> str:
        return "owner" if self.by == "owner" else f"label:{self.label}"


def pool_identity(text: str) -> PoolIdentity:
    """``owner``, ``label`` (the ``pool`` label) or ``label:NAME``; a clear ValueError else."""
    kind, colon, name = text.partition(":")
    if kind == "owner" and not colon:
        return PoolIdentity("owner")
    if kind == "label":
        name = name if colon else c.LABEL_POOL
        if re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_./]*", name):
            return PoolIdentity("label", name)
    raise ValueError(
        f"pool identity {text!r}: use owner, label or label:NAME (a Kubernetes pod label)"
    )


def pool_map_expr(
    identity: PoolIdentity,
    namespaces: str,
    pods: str | None = None,
    pools: str | None = None,
    window: str | None = None,
) -> str:
    """PromQL for one series per pod, value 1, labelled ``namespace``, ``pod`` and ``pool``,
    from kube-state-metrics. ``pods``/``pools``: regex matchers (quoted) restricting it;
    ``window``: read each series' last sample over it (``last_over_time``) instead of now."""

    def sel(metric: str, matchers: list[str]) -> str:
        text = f"{metric}{{{','.join(matchers)}}}"
        return f"last_over_time({text}[{window}])" if window else text

    ns = f"{c.LABEL_NAMESPACE}=~{namespaces}"
    pod = [f"{c.LABEL_POD}=~{pods}"] if pods else []
    pool = c.LABEL_POOL
    if identity.by == "label":
        key = identity.ksm_label
        match = [ns, *pod, f"{key}=~{pools}" if pools else f'{key}!=""']
        return (
            f"max by ({c.LABEL_NAMESPACE}, {c.LABEL_POD}, {pool}) (label_replace("
            f'{sel(c.KSM_POD_LABELS, match)}, "{pool}", "$1", "{key}", "(.+)"))'
        )
    kind, name = c.LABEL_OWNER_KIND, c.LABEL_OWNER_NAME
    owner = [f"{name}=~{pools}"] if pools else []
    direct = sel(c.KSM_POD_OWNER, [ns, *pod, f'{kind}!~"ReplicaSet|{c.KSM_NO_OWNER}"', *owner])
    by_rs = sel(c.KSM_POD_OWNER, [ns, *pod, f'{kind}="ReplicaSet"'])
    rs_owner = sel(c.KSM_REPLICASET_OWNER, [ns, f'{kind}="Deployment"', *owner])
    rs = c.LABEL_REPLICASET
    return (
        f"max by ({c.LABEL_NAMESPACE}, {c.LABEL_POD}, {pool}) ("
        f'label_replace({direct}, "{pool}", "$1", "{name}", "(.+)") '
        f"or on ({c.LABEL_NAMESPACE}, {c.LABEL_POD}) ("
        f"max by ({c.LABEL_NAMESPACE}, {c.LABEL_POD}, {rs}) "
        f'(label_replace({by_rs}, "{rs}", "$1", "{name}", "(.+)")) '
        f"* on ({c.LABEL_NAMESPACE}, {rs}) group_left ({pool}) "
        f"max by ({c.LABEL_NAMESPACE}, {rs}, {pool}) "
        f'(label_replace({rs_owner}, "{pool}", "$1", "{name}", "(.+)"))))'
    )


@dataclass(frozen=True)
class Config:
    """What the correlator assumes of the cluster: how dcgm-exporter spells GPU series, and
    how a pod's pool is found."""

    naming: c.GpuNaming = field(default_factory=c.gpu_naming)
    pools: PoolIdentity = field(default_factory=PoolIdentity)
    # Every window of the analysis (baseline, segment, search, lateness) times this: 1 on a
    # real cluster; below 1 where time is compressed (the demo's one-hour SLO period).
    time_scale: float = 1.0


SIGNALS: tuple[Signal, ...] = (
    Signal(
        "gpu_lost",
        "GPU up",
        "min by ({by_gpu}) ({gpu_up}{{{l_uuid}=~{uuids}}})",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        -1,
        local_agg="min",
        selector="{gpu_up}{{{l_uuid}=~{uuids}}}",
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
        "max by ({by_gpu}) ({dcgm_gpu_temp}{{{l_uuid}=~{uuids}}}){u_dcgm_gpu_temp}",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.5,
        1,
        peer_relative=True,
        follows="GPU utilization (%)",  # more load, more power, more heat
        local_agg="max",
        selector="{dcgm_gpu_temp}{{{l_uuid}=~{uuids}}}",
        unit="dcgm_gpu_temp",
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
        # A process whose cgroup names no serving pod (by UID, from kube-state-metrics).
        "count by ({by_gpu}) ({gpu_process_info}{{{l_uuid}=~{uuids}}} unless on ({l_pod_uid}) "
        "label_replace({ksm_pod_info}{{{l_namespace}=~{namespaces},{l_pod}=~{pods}}}, "
        '"{l_pod_uid}", "$1", "{l_uid}", "(.+)"))',
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        1,
        fill=0.0,
    ),
    Signal(
        "noisy_neighbour",
        "GPU utilization (%)",
        "max by ({by_gpu}) ({dcgm_gpu_util}{{{l_uuid}=~{uuids}}}){u_dcgm_gpu_util}",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.4,
        1,
        peer_relative=True,
        local_agg="max",
        selector="{dcgm_gpu_util}{{{l_uuid}=~{uuids}}}",
        unit="dcgm_gpu_util",
    ),
    Signal(
        "ecc",
        "double-bit ECC errors (/s)",
        "sum by ({by_gpu}) (rate({dcgm_ecc_dbe_vol_total}{{{l_uuid}=~{uuids}}}[2m]))"
        "{u_dcgm_ecc_dbe_vol_total}",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        1.0,
        1,
        fill=0.0,
    ),
    Signal(
        "pcie",
        "PCIe replays (/s)",
        "sum by ({by_gpu}) (rate({dcgm_pcie_replay_counter}{{{l_uuid}=~{uuids}}}[2m]))"
        "{u_dcgm_pcie_replay_counter}",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.8,
        1,
        fill=0.0,
    ),
    Signal(
        "memory_pressure",
        "GPU memory used (MiB)",
        "max by ({by_gpu}) ({dcgm_fb_used}{{{l_uuid}=~{uuids}}}){u_dcgm_fb_used}",
        (c.LABEL_HOSTNAME, c.LABEL_GPU),
        0.4,
        1,
        peer_relative=True,
        local_agg="max",
        selector="{dcgm_fb_used}{{{l_uuid}=~{uuids}}}",
        unit="dcgm_fb_used",
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
        # Pods whose Ready condition is true, per pool (a restarted pod's new UID included).
        "sum by ({l_namespace}, {l_pool}) (max by ({l_namespace}, {l_pod}) "
        '({ksm_pod_status_ready}{{{l_condition}="true",{l_namespace}=~{namespaces}}}) '
        "* on ({l_namespace}, {l_pod}) group_left ({l_pool}) {pool_map})",
        (c.LABEL_NAMESPACE, c.LABEL_POOL),
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
        # A tenant adding a few percent to the model's traffic stays inside the headroom a
        # pool keeps: a sharp but small bump is no cause; a third more traffic can be.
        whole=WHOLE_RISE,
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


def onset_of(
    ratio: Array, times: Array, detected: float, since: float | None = None, scale: float = 1.0
) -> float:
    """When the symptom began: the SLI's largest rise in the half hour up to detection (after
    ``since``, the end of an earlier burn, when given); ``scale`` scales the windows."""
    half_hour = 30 * 60.0 * scale
    back = half_hour if since is None else min(half_hour, max(0.0, detected - since))
    found = change_points(
        ratio[None, :],
        times,
        detected,
        np.ones(1),
        search=(back, 0.0),
        segments=(15 * 60.0 * scale, 3 * 60.0 * scale),
    )
    if not found[5][0]:
        return detected
    return float(min(times[int(found[0][0])], detected))


QUIET = 5 * 60.0  # alerts quiet this long before a page: it is a new burn


def quiet_since(episodes: Sequence[Any], detected: float, scale: float = 1.0) -> float | None:
    """When an earlier burn ended, if every tier was quiet for at least ``QUIET`` from then to
    ``detected``: the new page's symptom began after it (an earlier burn's tail, still in the
    SLI, must not be taken for its onset). None when some tier fires on through."""
    if any(e.start < detected < e.end for e in episodes):
        return None
    ended = [e.end for e in episodes if e.end <= detected]
    if not ended or detected - max(ended) < QUIET * scale:
        return None
    return float(max(ended))


def trim(times: Array, rows: Sequence[Array]) -> tuple[Array, list[Array]]:
    """Cut the grid to start where the data does (before it, nothing is known: filling or
    averaging there would invent a change at the start of the history)."""
    first = len(times)
    for values in rows:
        finite = np.flatnonzero(np.isfinite(values))
        if len(finite):
            first = min(first, int(finite[0]))
    return times[first:], [v[first:] for v in rows]


def rank(
    candidates: Sequence[Candidate],
    times: Array,
    onset: float,
    min_score: float = MIN_SCORE,
    time_scale: float = 1.0,
) -> list[Cause]:
    """Causes scoring at least ``min_score``, most probable first (none when nothing changed
    enough to name); ``time_scale`` scales every window (``Config.time_scale``)."""
    evidence: list[tuple[Candidate, Evidence]] = []
    late, search_before = LATE * time_scale, SEARCH_BEFORE * time_scale
    if candidates:
        matrix = np.vstack([c.values for c in candidates]).astype(np.float64)
        directions = np.array([c.signal.direction for c in candidates], dtype=np.float64)
        ks, befores, afters, effects, ps, valid = change_points(
            matrix,
            times,
            onset,
            directions,
            (search_before, SEARCH_AFTER * time_scale),
            (BEFORE * time_scale, AFTER * time_scale),
        )
        wholes = _wholes(candidates, matrix, times, ks, BEFORE * time_scale)
        for i, cand in enumerate(candidates):
            if not valid[i]:
                continue
            changed = float(times[ks[i]])
            lead = onset - changed
            # Before or with the symptom: a cause; well after it: an effect. Long leads are
            # allowed (a backlog builds slowly) but weigh a little less.
            timing = (
                0.3
                if lead < -late
                else 1.0 - 0.4 * max(0.0, lead - 600 * time_scale) / search_before
            )
            p = float(ps[i])
            significant = 1.0 if p < 0.01 else 0.5 if p < 0.05 else 0.1
            effect = float(effects[i])
            score = cand.signal.prior * timing * significant * min(effect, EFFECT_CAP) / EFFECT_CAP
            if cand.signal.whole > 0:  # by the share of the whole the rise adds
                rise = max(0.0, float(afters[i] - befores[i]))
                score *= min(1.0, rise / max(cand.signal.whole * float(wholes[i]), 1e-12))
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
    # A signal that follows another (temperature follows load) counts only by how much more it
    # moved than the one it follows did on the same entity at or before its change.
    by_name = {(cand.signal.name, ev.entity): ev for cand, ev in evidence}
    for cand, ev in evidence:
        cause_ev = by_name.get((cand.signal.follows, ev.entity)) if cand.signal.follows else None
        if cause_ev is None or cause_ev.effect <= 0 or cause_ev.changed_at > ev.changed_at + late:
            continue
        ev.score *= 1.0 - min(1.0, cause_ev.effect / max(ev.effect, 1e-9))
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
    named = [cause for cause in causes.values() if cause.score >= min_score]
    return sorted(named, key=lambda c: -c.score)


def _wholes(
    candidates: Sequence[Candidate], matrix: Array, times: Array, ks: Array, before: float = BEFORE
) -> Array:
    """For candidates of a ``whole`` signal: the mean of the sum of all that signal's series
    over the baseline before each one's change point (0 for the others)."""
    out = np.zeros(len(candidates))
    groups: dict[str, list[int]] = {}
    for i, cand in enumerate(candidates):
        if cand.signal.whole > 0:
            groups.setdefault(cand.signal.name, []).append(i)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 60.0
    nb = max(3, int(before / step))
    for rows in groups.values():
        total = np.nansum(np.where(np.isfinite(matrix[rows]), matrix[rows], 0.0), axis=0)
        for i in rows:
            k = int(ks[i])
            out[i] = float(np.mean(total[max(0, k - nb) : max(k, 1)]))
    return out


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
    namespaces: list[str] = field(default_factory=list)
    pod_pools: dict[str, str] = field(default_factory=dict)  # "namespace/pod" -> pool


def canonical_selector(model: str) -> str:
    """The canonical request series of ``model`` that name a pod (what an inference server's
    scrape or an OTLP push carries: ``model``, ``namespace``, ``pod``)."""
    names = "|".join(re.escape(n) for n in sorted(c.CANONICAL_HELP))
    return (
        f'{{__name__=~"({names})(_bucket|_count|_sum)?",'
        f'{c.LABEL_MODEL}="{model}",{c.LABEL_POD}!=""}}'
    )


def blast_radius(
    url: str,
    model: str,
    start: float,
    end: float,
    config: Config | None = None,
    timeout: float = 120.0,
) -> Radius:
    """Pods, pools, GPUs and nodes serving ``model`` at any time in [start, end]."""
    from gpuslo.foundation.prometheus import instant

    config = config or Config()

    def query(expr: str, at: float) -> list[dict[str, Any]]:
        return instant(url, expr, at, timeout=timeout)

    span = max(60, int(end - start))
    at = end
    ns_l, pod_l = c.LABEL_NAMESPACE, c.LABEL_POD
    pods = query(
        f"group by ({ns_l}, {pod_l}) (last_over_time({canonical_selector(model)}[{span}s]))", at
    )
    pod_names = sorted({r["metric"].get(pod_l, "") for r in pods} - {""})
    namespaces = sorted({r["metric"].get(ns_l, "") for r in pods} - {""})
    mapping = (
        query(
            pool_map_expr(
                config.pools, _regex(namespaces), pods=_regex(pod_names), window=f"{span}s"
            ),
            at,
        )
        if pod_names
        else []
    )
    pod_pools = {
        f"{r['metric'].get(ns_l, '')}/{r['metric'].get(pod_l, '')}": r["metric"][c.LABEL_POOL]
        for r in mapping
        if r["metric"].get(c.LABEL_POOL)
    }
    host = config.naming.host_label
    gpus = query(
        f"group by ({c.LABEL_UUID}, {host}, {ns_l}, {pod_l}) "
        f"(last_over_time({config.naming.name(c.GPU_POD_INFO)}"
        f"{{{c.LABEL_POD}=~{_regex(pod_names)}}}[{span}s]))",
        at,
    )
    # A pod's name is unique only in its namespace: another namespace's pod of the same name
    # serves something else, and its GPUs are outside the radius.
    serving = {(r["metric"].get(ns_l, ""), r["metric"].get(pod_l, "")) for r in pods}
    gpus = [
        r
        for r in gpus
        if (r["metric"].get(ns_l, ""), r["metric"].get(pod_l, "")) in serving
        or ("", r["metric"].get(pod_l, "")) in serving
    ]
    uuids = sorted({r["metric"].get(c.LABEL_UUID, "") for r in gpus} - {""})
    nodes = sorted({r["metric"].get(host, "") for r in gpus} - {""})
    pools = sorted(set(pod_pools.values()))
    return Radius(model, pod_names, uuids, nodes, pools, namespaces, pod_pools)


def candidates_from_prometheus(
    url: str,
    radius: Radius,
    start: float,
    end: float,
    step: float,
    signals: Sequence[Signal] = SIGNALS,
    config: Config | None = None,
    timeout: float = 300.0,
) -> tuple[Array, list[Candidate]]:
    """Every signal's series over the radius, on one time grid; ``timeout``: per query."""
    from gpuslo.foundation.prometheus import concurrently, grid_matrix, range_series

    config = config or Config()
    n = round((end - start) / step) + 1
    times = start + step * np.arange(n, dtype=np.float64)
    out = []
    namespaces = _regex(radius.namespaces)
    fill = {
        **template_names(config.naming),
        "uuids": _regex(radius.uuids),
        "nodes": _regex(radius.nodes),
        "pods": _regex(radius.pods),
        "pools": _regex(radius.pools),
        "namespaces": namespaces,
        "pool_map": pool_map_expr(config.pools, namespaces, pools=_regex(radius.pools)),
        "model": radius.model,
    }
    host = config.naming.host_label
    exprs = [signal.expr.format(**fill) for signal in signals]

    by_gpu = [label.strip() for label in fill["by_gpu"].split(",")]

    def fetch(signal: Signal) -> tuple[list[dict[str, Any]], Array]:
        query = signal.selector if signal.local_agg else signal.expr
        found = range_series(url, query.format(**fill), start, end, step, timeout=timeout)
        matrix = grid_matrix(found, start, step, n)
        if signal.local_agg:
            factor = config.naming.factor(_GPU_FIELDS[signal.unit]) if signal.unit else 1.0
            found, matrix = aggregate(found, matrix, signal.local_agg, by_gpu, factor)
        return found, matrix

    # The signals' queries run concurrently (a bounded pool: one answer is decoded and gridded
    # while Prometheus evaluates the next); the candidates keep the order of the signals and
    # of each answer's series.
    answers = concurrently(fetch, signals)
    # Where the history starts: the first sample of any always-present signal (GPU up, port
    # state, ready replicas). Before it, nothing is known; after it, a counter or info series
    # without a sample means "none" (no XID yet, no foreign process).
    first = n
    for signal, (_found, matrix) in zip(signals, answers, strict=True):
        if signal.fill is None and len(matrix):
            known = np.flatnonzero(np.isfinite(matrix).any(axis=0))
            if len(known):
                first = min(first, int(known[0]))
    times = times[first:]
    for signal, expr, (found, matrix) in zip(signals, exprs, answers, strict=True):
        matrix = matrix[:, first:]
        if signal.carry and matrix.size:  # forward-fill gaps (a lost GPU stops reporting)
            seen = np.isfinite(matrix)
            cols = np.arange(matrix.shape[1])
            last = np.maximum.accumulate(np.where(seen, cols, -1), axis=1)
            rows = np.arange(matrix.shape[0])[:, None]
            matrix = np.where(last >= 0, matrix[rows, np.maximum(last, 0)], np.nan)
        if signal.fill is not None:
            matrix = np.where(np.isnan(matrix), signal.fill, matrix)
        for series, values in zip(found, matrix, strict=True):
            labels = dict(series["metric"])
            if host != c.LABEL_HOSTNAME and host in labels:  # causes name hosts one way
                labels[c.LABEL_HOSTNAME] = labels.pop(host)
            out.append(Candidate(signal, labels, values, expr))
    return times, out


def aggregate(
    found: Sequence[dict[str, Any]], matrix: Array, op: str, by: Sequence[str], factor: float
) -> tuple[list[dict[str, Any]], Array]:
    """``op by (by) (series) / factor`` of gridded series as Prometheus answers it: one
    series per distinct value of ``by`` (labels without a value left out), in Prometheus'
    order (by label set), its value at each step the max (min) of the series present there,
    none where none is."""
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, series in enumerate(found):
        metric = series["metric"]
        key = tuple(sorted((k, metric[k]) for k in by if metric.get(k)))
        groups.setdefault(key, []).append(i)
    reduce = np.fmax if op == "max" else np.fmin  # NaN only where every series has none
    keys = sorted(groups)
    out = np.empty((len(keys), matrix.shape[1]))
    for j, key in enumerate(keys):
        rows = groups[key]
        out[j] = matrix[rows[0]] if len(rows) == 1 else reduce.reduce(matrix[rows], axis=0)
    if factor != 1.0:
        out = out / factor
    return [{"metric": dict(key)} for key in keys], out


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
                "pools": self.radius.pools,
            },
            "candidates": self.candidates,
            "causes": [c.as_dict(self.onset) for c in self.causes[:top]],
        }


def explain(
    url: str,
    slo: Any,
    at: float,
    step: float = 60.0,
    lookback: float = 3600.0,
    config: Config | None = None,
    timeout: float = 300.0,
) -> Explanation:
    """Rank the probable causes of ``slo`` burning at ``at`` (a time inside a burn episode, or
    its start), from the Prometheus at ``url``; ``config``: the cluster's GPU naming and how
    pools are found (the defaults: legacy dcgm-exporter names, pools by owner); ``timeout``:
    per query of the blast radius and the candidates."""
    from gpuslo.foundation.prometheus import HistoryError

    from .evaluator import evaluate
    from .history import sli_from_prometheus

    model = dict(slo.selector).get("model") if slo.selector else None
    if not model:
        raise HistoryError(f"{slo.name}: correlation needs an SLO selecting one model")
    scale = (config or Config()).time_scale
    start = at - lookback
    data = sli_from_prometheus(
        url, slo, start - slo.period, at + (SEARCH_AFTER + AFTER) * scale, step
    )
    ev = evaluate(slo, data)
    ts = ev.timestamps
    # The episode that contains ``at`` (or starts soonest after it): its first firing step.
    detected = at
    for e in ev.episodes:
        if e.start <= at < e.end or at <= e.start <= at + 5 * 60 * scale:
            detected = e.start
            break
    base = next(iter(ev.error_ratio))  # the base window, listed first
    sli_times, (ratio,) = trim(ts, [ev.error_ratio[base]])
    since = quiet_since(ev.episodes, detected, scale)
    onset = onset_of(np.nan_to_num(ratio), sli_times, detected, since, scale)

    lo = onset - (SEARCH_BEFORE + BEFORE) * scale
    hi = onset + (SEARCH_AFTER + AFTER) * scale
    radius = blast_radius(url, model, lo, hi, config, timeout=min(120.0, timeout))
    times, cands = candidates_from_prometheus(
        url, radius, lo, hi, step, config=config, timeout=timeout
    )
    causes = rank(cands, times, onset, time_scale=scale)
    return Explanation(slo.name, detected, onset, radius, causes, len(cands))
