"""Offline mode: run a scenario as fast as the model goes and write OpenMetrics history (for
``promtool tsdb create-blocks-from openmetrics``) plus the ground truth of every fault."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import parse_duration as _seconds

from .fleet import Fleet, Histogram, TenantTotals
from .scenario import Scenario, node_names_of

TWIN_REPLICAS, TWIN_READY = c.TWIN_REPLICAS, c.TWIN_READY
TWIN_FALLBACK_SHARE, TWIN_REPLICA_INFO = c.TWIN_FALLBACK_SHARE, c.TWIN_REPLICA_INFO
IB_BYTES_PER_S = 5e9  # collective traffic per InfiniBand port
CRC_ERRORS_PER_S = 40.0  # NVLink CRC flit errors a second on a link in a CRC storm


def _labels(pairs: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


class Recorder:
    """Samples every series at every step into compact arrays, then writes them family by
    family (OpenMetrics wants each family's samples together)."""

    def __init__(self) -> None:
        self.families: dict[str, dict[str, array[float]]] = {}
        self.steps: dict[str, array[int]] = {}  # the step index of every sample, per series
        self.types: dict[str, str] = {}
        self.step = 0  # set by the caller before each step's samples

    def add(self, family: str, name: str, labels: dict[str, str], value: float) -> None:
        series = self.families.setdefault(family, {})
        key = name + _labels(labels)
        values = series.get(key)
        if values is None:
            values = series[key] = array("d")
            self.steps[key] = array("l")
        values.append(value)
        self.steps[key].append(self.step)

    def write(self, out: TextIO, timestamps: list[float]) -> int:
        written = 0
        for family, series in self.families.items():
            if family in self.types:
                out.write(f"# TYPE {family} {self.types[family]}\n")
            for key, values in series.items():
                # Series may appear late (an XID counter) or come and go (a pod's replica).
                steps = self.steps[key]
                out.write(
                    "".join(
                        f"{key} {v:.6g} {timestamps[i]:.0f}\n"
                        for v, i in zip(values, steps, strict=True)
                    )
                )
                written += len(values)
        out.write("# EOF\n")
        return written


def request_series(rec: Recorder, pool: str, tenant: str, tot: TenantTotals) -> None:
    base = {
        c.LABEL_MODEL: tot.model,
        c.LABEL_TENANT: tenant,
        c.LABEL_NAMESPACE: tot.namespace,
        c.LABEL_SERVER: "twin",
    }
    for outcome, value in tot.outcomes.items():
        rec.add(
            "gen_ai_server_requests", c.REQUESTS_TOTAL, {**base, c.LABEL_OUTCOME: outcome}, value
        )
    for kind, value in (("input", tot.input_tokens), ("output", tot.output_tokens)):
        rec.add(
            "gen_ai_server_token_usage",
            c.TOKEN_USAGE_TOTAL,
            {**base, c.LABEL_TOKEN_TYPE: kind},
            value,
        )
    for name, hist in (
        (c.TIME_TO_FIRST_TOKEN, tot.ttft),
        (c.TIME_PER_OUTPUT_TOKEN, tot.tpot),
        (c.REQUEST_DURATION, tot.e2e),
    ):
        histogram_series(rec, name, base, hist)


def histogram_series(rec: Recorder, name: str, base: dict[str, str], hist: Histogram) -> None:
    # Plain series, no TYPE line: promtool then takes them as they are.
    for le, count in zip(hist.buckets, hist.counts, strict=True):
        rec.add(name + "_bucket", name + "_bucket", {**base, "le": format(le, "g")}, count)
    rec.add(name + "_bucket", name + "_bucket", {**base, "le": "+Inf"}, hist.total)
    rec.add(name + "_count", name + "_count", base, hist.total)
    rec.add(name + "_sum", name + "_sum", base, hist.sum)


def pod_name(pool: str, replica: int) -> str:
    return f"{pool}-{replica}"


def gpu_series(rec: Recorder, fleet: Fleet) -> None:
    for gpu in fleet.gpus:
        ident = {c.LABEL_GPU: str(gpu.index), c.LABEL_UUID: gpu.uuid, c.LABEL_HOSTNAME: gpu.node}
        rec.add(c.GPU_UP.name, c.GPU_UP.name, ident, 0.0 if gpu.lost else 1.0)
        if "noisy_neighbour" in gpu.faults:  # a process of no serving pod shares the GPU
            rec.add(
                c.GPU_PROCESS_INFO.name,
                c.GPU_PROCESS_INFO.name,
                {**ident, c.LABEL_PID: "31337", c.LABEL_NAMESPACE: "batch", c.LABEL_POD: "etl-job"},
                1.0,
            )
        if "nvlink_crc" in gpu.faults:
            gpu.crc_errors += CRC_ERRORS_PER_S * fleet.last_dt
        rec.add(
            c.GPU_NVLINK_CRC_FLIT_ERRORS.name.removesuffix("_total"),
            c.GPU_NVLINK_CRC_FLIT_ERRORS.name,
            {**ident, c.LABEL_LINK: "0"},
            gpu.crc_errors,
        )
        if gpu.lost:
            continue  # a lost GPU reports nothing but gpuslo_gpu_up
        rec.add(c.DCGM_GPU_UTIL.name, c.DCGM_GPU_UTIL.name, ident, round(gpu.util * 100))
        rec.add(c.DCGM_POWER_USAGE.name, c.DCGM_POWER_USAGE.name, ident, gpu.power)
        rec.add(c.DCGM_GPU_TEMP.name, c.DCGM_GPU_TEMP.name, ident, round(gpu.temperature))
        rec.add(
            c.GPU_THROTTLE_SECONDS.name.removesuffix("_total"),
            c.GPU_THROTTLE_SECONDS.name,
            {**ident, c.LABEL_REASON: "thermal"},
            gpu.throttle_s,
        )
        for slot in gpu.slices:
            rec.add(
                c.DCGM_PROF_GR_ENGINE_ACTIVE.name,
                c.DCGM_PROF_GR_ENGINE_ACTIVE.name,
                {**ident, c.LABEL_GPU_I_ID: str(slot.index), c.LABEL_GPU_I_PROFILE: slot.profile},
                round(slot.util, 4),
            )
        for xid, count in gpu.xids.items():
            rec.add(
                c.GPU_XID_ERRORS.name.removesuffix("_total"),
                c.GPU_XID_ERRORS.name,
                {**ident, c.LABEL_XID: str(xid)},
                count,
            )


def attribution_series(rec: Recorder, fleet: Fleet) -> None:
    """What the agent and kube-state-metrics would say about placement: each GPU or MIG
    instance a replica pod holds (``gpuslo_gpu_pod_info``), which model each pod serves
    (``gpuslo_twin_replica_info``), and CPU replicas' resource requests."""
    for gpu in fleet.gpus:
        ident = {c.LABEL_GPU: str(gpu.index), c.LABEL_UUID: gpu.uuid, c.LABEL_HOSTNAME: gpu.node}
        holders: list[tuple[str, int, dict[str, str]]] = []
        if gpu.pool is not None and gpu.replica is not None:
            holders.append((gpu.pool, gpu.replica, {}))
        for slot in gpu.slices:  # a MIG instance: its id and profile, as the agent labels it
            if slot.pool is not None and slot.replica is not None:
                mig = {c.LABEL_GPU_I_ID: str(slot.index), c.LABEL_GPU_I_PROFILE: slot.profile}
                holders.append((slot.pool, slot.replica, mig))
        for pool, replica, mig in holders:
            namespace = fleet.pools[pool].spec.namespace
            labels = {
                **ident,
                **mig,
                c.LABEL_NAMESPACE: namespace,
                c.LABEL_POD: pod_name(pool, replica),
            }
            rec.add(c.GPU_POD_INFO.name, c.GPU_POD_INFO.name, labels, 1.0)
    for name, state in fleet.pools.items():
        spec = state.spec
        for i in range(len(state.replicas)):
            pod = {c.LABEL_NAMESPACE: spec.namespace, c.LABEL_POD: pod_name(name, i)}
            info = {**pod, c.LABEL_MODEL: spec.model, "pool": name}
            rec.add(TWIN_REPLICA_INFO, TWIN_REPLICA_INFO, info, 1.0)
            if state.gpu_pool:
                continue
            for resource, unit, value in (  # CPU replicas, as kube-state-metrics has them
                ("cpu", "core", float(getattr(spec, "vcpus_per_replica", 0))),
                ("memory", "byte", getattr(spec, "memory_gib_per_replica", 0) * 2**30),
            ):
                labels = {**pod, c.LABEL_CONTAINER: "server", "resource": resource, "unit": unit}
                rec.add(c.KSM_POD_REQUESTS, c.KSM_POD_REQUESTS, labels, value)


def fabric_series(rec: Recorder, fleet: Fleet) -> None:
    """Each node's InfiniBand ports (node_exporter's names, plus ``Hostname`` so a port can
    be placed): state 4 (active) or 1 (down) while its node's link flaps, and the link error
    recoveries that come with it."""
    flapping = {
        inc.node
        for inc in fleet.incidents
        if inc.kind == "ib_flap" and inc.start <= fleet.t < inc.end
    }
    for group in fleet.scenario.nodes:
        for node in node_names_of(group):
            for port in range(group.ib_ports):
                labels = {
                    c.LABEL_IB_DEVICE: f"mlx5_{port}",
                    c.LABEL_IB_PORT: "1",
                    c.LABEL_HOSTNAME: node,
                }
                key = f"{node}/{port}"
                recoveries = fleet.ib_recoveries.get(key, 0.0)
                down = node in flapping and int(fleet.t // 30) % 2 == 0  # down half the time
                if node in flapping:
                    recoveries += 1.0
                fleet.ib_recoveries[key] = recoveries
                rec.add(c.IB_STATE_ID.name, c.IB_STATE_ID.name, labels, 1.0 if down else 4.0)
                rec.add(
                    c.IB_PREFIX + "link_error_recovery",
                    c.IB_PREFIX + "link_error_recovery_total",
                    labels,
                    recoveries,
                )
                # Collective traffic: a steady 5 GB/s per port, none while the link is down.
                sent = fleet.ib_bytes.get(key, 0.0) + (
                    0.0 if down else IB_BYTES_PER_S * fleet.last_dt
                )
                fleet.ib_bytes[key] = sent
                rec.add(
                    c.IB_PREFIX + "port_data_transmitted_bytes",
                    c.IB_PREFIX + "port_data_transmitted_bytes_total",
                    labels,
                    sent,
                )


def run_offline(
    scenario: Scenario,
    out_dir: Path,
    start: float,
    step: float | None = None,
    progress: Callable[[float], None] | None = None,
    samples_per_step: int = 0,
) -> dict[str, float]:
    """Simulate the whole scenario from ``start`` (Unix seconds); write ``history.om`` and
    ``incidents.json`` into ``out_dir`` (and ``samples.parquet``, requests sampled at each
    step for drift jobs, when ``samples_per_step`` > 0). Returns counts for the caller."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dt = step or _seconds(scenario.step)
    steps = int(_seconds(scenario.duration) // dt)
    fleet = Fleet(scenario)
    rec = Recorder()
    rec.types.update({"gen_ai_server_requests": "counter", "gen_ai_server_token_usage": "counter"})
    timestamps: list[float] = []
    drawn: list[tuple[float, str, str, float, float]] = []
    for n in range(steps):
        rec.step = n
        fleet.step(dt)
        if samples_per_step:
            at = start + fleet.t
            drawn += [(at, *s) for s in fleet.sample_requests(samples_per_step)]
        timestamps.append(start + fleet.t)
        for (pool, tenant), tot in fleet.totals.items():
            request_series(rec, pool, tenant, tot)
        gpu_series(rec, fleet)
        fabric_series(rec, fleet)
        attribution_series(rec, fleet)
        for name, state in fleet.pools.items():
            labels = {"pool": name, c.LABEL_NAMESPACE: state.spec.namespace}
            rec.add(TWIN_REPLICAS, TWIN_REPLICAS, labels, len(state.replicas))
            rec.add(
                TWIN_READY,
                TWIN_READY,
                labels,
                sum(1 for r in state.replicas if r.ready_at <= fleet.t),
            )
        if progress is not None and n % 500 == 0:
            progress(n / steps)
    with (out_dir / "history.om").open("w") as f:
        samples = rec.write(f, timestamps)
    if samples_per_step:
        import pandas as pd

        frame = pd.DataFrame(
            drawn, columns=["timestamp", "model", "tenant", "prompt_tokens", "output_tokens"]
        )
        frame.to_parquet(out_dir / "samples.parquet", index=False)
    incidents = [inc.truth(offset=start) for inc in fleet.incidents]
    (out_dir / "incidents.json").write_text(json.dumps(incidents, indent=1) + "\n")
    return {
        "steps": steps,
        "samples": samples,
        "series": sum(len(s) for s in rec.families.values()),
    }
