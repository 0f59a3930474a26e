"""Offline mode: run a scenario as fast as the model goes and write OpenMetrics history (for
``promtool tsdb create-blocks-from openmetrics``) plus the ground truth of every fault.

The history is what a Prometheus scraping the fleet would hold. Each node's GPU and fabric
series are the real agent's: a ``GpuCollector`` over the ``sim`` backend and an
``InfinibandCollector`` over a sysfs tree, fed from the fleet model each step
(``FleetAgents``, shared with live mode) and sampled once per step. Only what no agent
produces is written by the twin itself: the request telemetry (the twin aggregates requests
per pool, and states each serving pod's requests in flight as its server would), what a
cluster's kube-state-metrics serves about the replica pods and their Deployments
(``simulator/ksm.py``: readiness, owners, labels, the CPU pods' requests) and the twin's own
pool series.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

from prometheus_client.core import Metric

from gpuslo.collectors import Agent, GpuCollector, InfinibandCollector
from gpuslo.collectors.agent import Collector
from gpuslo.collectors.attribution import PodRef
from gpuslo.collectors.backends import SimBackend
from gpuslo.collectors.backends.sim import mig_uuid
from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import parse_duration as _seconds
from gpuslo.foundation.exposition import History, add, family

from .fabric_sysfs import IbPort, InfinibandTree
from .fleet import Fleet, Gpu, Histogram, IbLink
from .ksm import ksm_families
from .scenario import Scenario, node_names_of

TWIN_REPLICAS, TWIN_READY = c.TWIN_REPLICAS, c.TWIN_READY
TWIN_FALLBACK_SHARE, TWIN_REPLICA_INFO = c.TWIN_FALLBACK_SHARE, c.TWIN_REPLICA_INFO
SERVER_CONTAINER = "server"  # the container of every replica pod
FOREIGN_PID = 31337  # the process a noisy neighbour runs on a GPU (in a pod of its own)

# The agent families the history keeps, as a scrape's ``metric_relabel_configs: keep`` would:
# those the history had when the twin wrote them itself (with every series the agent serves
# of them: each throttle reason, each NVLink link), and memory used, which shows MIG instances.
# The rest (clocks, PCIe, NVLink traffic, ECC, energy, ...) is dropped: a GPU serves 167
# series, and a week of a 16-node fleet at one-minute steps would be some 60 GB.
_HISTORY_SPECS: tuple[c.MetricSpec, ...] = (
    c.GPU_UP,
    c.DCGM_GPU_UTIL,
    c.DCGM_POWER_USAGE,
    c.DCGM_GPU_TEMP,
    c.DCGM_PROF_GR_ENGINE_ACTIVE,
    c.DCGM_FB_USED,
    c.GPU_THROTTLE_SECONDS,
    c.GPU_XID_ERRORS,
    c.GPU_NVLINK_CRC_FLIT_ERRORS,
    c.GPU_POD_INFO,
    c.GPU_PROCESS_INFO,
    c.IB_STATE_ID,
)
_HISTORY_FABRIC = frozenset(
    {c.IB_PREFIX + "link_error_recovery_total", c.IB_PREFIX + "port_data_transmitted_bytes_total"}
)


def history_families(naming: c.GpuNaming | None = None) -> frozenset[str]:
    """The agent families the history keeps, as one dcgm-exporter generation names them."""
    naming = naming or c.gpu_naming()
    return frozenset(family(naming.spec(spec)).name for spec in _HISTORY_SPECS) | _HISTORY_FABRIC


HISTORY_FAMILIES: frozenset[str] = history_families()  # legacy names


def pod_name(pool: str, replica: int) -> str:
    return f"{pool}-{replica}"


# ---------------------------------------------------------------------------- the agents
class FleetPods:
    """The twin's kubelet for one node: which replica pod holds each of its GPUs and MIG
    instances, from the fleet's placement (the attributor its GPU collector asks)."""

    def __init__(self) -> None:
        self._holders: Mapping[str, list[PodRef]] = {}

    def holders(self) -> Mapping[str, list[PodRef]]:
        """GPU or MIG UUID -> the replica pod holding it."""
        return self._holders

    def update(self, fleet: Fleet, gpus: list[Gpu]) -> None:
        """Take the placement as it is now (one assignment: a reader sees old or new)."""
        holders: dict[str, list[PodRef]] = {}
        for gpu in gpus:
            if gpu.pool is not None and gpu.replica is not None:
                ns = fleet.pools[gpu.pool].spec.namespace
                holders[gpu.uuid] = [PodRef(ns, pod_name(gpu.pool, gpu.replica), SERVER_CONTAINER)]
            for slot in gpu.slices:  # GPU_I_ID = position + 1, as the sim backend numbers them
                if slot.pool is not None and slot.replica is not None:
                    ns = fleet.pools[slot.pool].spec.namespace
                    pod = PodRef(ns, pod_name(slot.pool, slot.replica), SERVER_CONTAINER)
                    holders[mig_uuid(gpu.uuid, slot.index - 1)] = [pod]
        self._holders = holders


class SimNode:
    """One simulated node and its agent: the ``sim`` GPU backend, a sysfs tree of the node's
    InfiniBand ports, a procfs holding the noisy neighbour's cgroup, and the kubelet's pods."""

    def __init__(
        self,
        name: str,
        gpus: list[Gpu],
        links: list[IbLink],
        workdir: Path,
        model_clock: Callable[[], float],
        agent_clock: Callable[[], float] | None,
        interval: float,
        naming: c.GpuNaming | None = None,
    ) -> None:
        """With an ``agent_clock`` (offline), nothing reads the node's files while they are
        written; without, the agent samples on its own threads meanwhile. ``naming``: the
        dcgm-exporter generation the node's GPU series are spelled in."""
        self.name, self.gpus, self.links = name, gpus, links
        self.naming = naming or c.gpu_naming()
        mig = [[s.profile for s in g.slices] for g in gpus] if gpus and gpus[0].slices else None
        profile = gpus[0].profile if gpus else "H100"
        # The fleet decides when a GPU throttles; the backend models power and temperature.
        self.backend = SimBackend(
            count=len(gpus),
            profile=profile,
            node=name,
            clock=model_clock,
            mig=mig,
            throttle_temp_c=None,
        )
        self.pods = FleetPods()
        procfs = workdir / "proc"
        _write_cgroup(procfs, name)
        self.ports = [IbPort(f"mlx5_{link.port}") for link in links]
        self.tree = InfinibandTree(workdir / "sys", atomic=agent_clock is None)
        self.tree.write(self.ports)
        collectors: list[Collector] = [
            GpuCollector(
                self.backend,
                hostname=name,
                attributor=self.pods,
                procfs=procfs,
                naming=self.naming,
            ),
            InfinibandCollector(workdir / "sys"),
        ]
        self.agent = Agent(collectors, interval=interval, clock=agent_clock or time.monotonic)
        self._xids: dict[int, dict[int, int]] = {}  # GPU index -> XID -> count injected
        self._crc: dict[int, int] = {}  # GPU index -> CRC errors added

    def feed(self, fleet: Fleet) -> None:
        """Push the model's state into the backend, the kubelet's pods and the sysfs tree."""
        backend = self.backend
        for gpu in self.gpus:
            i = gpu.index
            backend.set_load(i, gpu.util)
            backend.set_lost(i, gpu.lost)
            backend.set_thermal_throttle(i, "thermal_throttle" in gpu.faults)
            backend.set_processes(i, (FOREIGN_PID,) if "noisy_neighbour" in gpu.faults else ())
            seen = self._xids.setdefault(i, {})
            for xid, count in gpu.xids.items():
                for _ in range(count - seen.get(xid, 0)):
                    backend.inject_xid(i, xid)
                seen[xid] = count
            crc = int(gpu.crc_errors)
            if crc > self._crc.get(i, 0):
                backend.add_nvlink_errors(i, 0, crc - self._crc.get(i, 0))
                self._crc[i] = crc
        self.pods.update(fleet, self.gpus)
        for port, link in zip(self.ports, self.links, strict=True):
            port.state = "DOWN" if link.down else "ACTIVE"
            port.counters["link_downed"] = link.downed
            port.counters["link_error_recovery"] = int(link.recoveries)
            port.counters["port_xmit_data"] = int(link.sent_bytes) // 4  # 4-byte words
        self.tree.write(self.ports)

    def families(self, keep: Collection[str] | None = None) -> list[Metric]:
        """The agent's latest families (those in ``keep``, when given), as a Prometheus
        scraping this node with the target label ``Hostname=<node>`` (the naming's host label)
        stores them: the GPU series carry the agent's own already; fabric series get the
        target's."""
        out: list[Metric] = []
        for col in self.agent.collectors:
            snap = self.agent.snapshot(col.name)
            if snap is not None:
                out += [f for f in snap.families if keep is None or f.name in keep]
        return with_target_labels(out, {self.naming.host_label: self.name})


class FleetAgents:
    """One real agent per simulated node, fed from the fleet model: how live mode serves
    agents and offline mode records their series. The GPU model runs on model time."""

    def __init__(
        self,
        fleet: Fleet,
        workdir: Path,
        agent_clock: Callable[[], float] | None = None,
        interval: float = 1.0,
        naming: c.GpuNaming | None = None,
    ) -> None:
        """``agent_clock``: the agents' clock (real time when None; offline passes model
        time, so nothing in the history depends on how fast the machine runs); ``naming``:
        the dcgm-exporter generation the agents spell GPU series in (default: legacy)."""
        self.fleet = fleet
        by_node: dict[str, list[Gpu]] = {}
        for gpu in fleet.gpus:
            by_node.setdefault(gpu.node, []).append(gpu)
        links: dict[str, list[IbLink]] = {}
        for link in fleet.links:
            links.setdefault(link.node, []).append(link)
        self.nodes = [
            SimNode(
                node,
                by_node.get(node, []),
                links.get(node, []),
                workdir / node,
                self._model_time,
                agent_clock,
                interval,
                naming,
            )
            for group in fleet.scenario.nodes
            for node in node_names_of(group)
        ]
        self.feed()

    def _model_time(self) -> float:
        return self.fleet.t

    def __iter__(self) -> Iterator[SimNode]:
        return iter(self.nodes)

    def feed(self) -> None:
        """Push the model's state into every node's agent."""
        for node in self.nodes:
            node.feed(self.fleet)

    def sample(self) -> None:
        """Every agent samples each of its collectors once."""
        for node in self.nodes:
            node.agent.sample_all()


def workdir_for_agents() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for the agents' sysfs and procfs trees: in memory where the
    system has one (``/dev/shm``), as the trees are rewritten every step."""
    shm = "/dev/shm"
    ram = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
    return tempfile.TemporaryDirectory(prefix="gpuslo-twin-", dir=ram)


def _write_cgroup(procfs: Path, node: str) -> None:
    """The noisy neighbour's process: a pod's container by its cgroup (cgroup v2, systemd)."""
    h = hashlib.sha1(f"{node}/{FOREIGN_PID}".encode()).hexdigest()
    uid = f"{h[0:8]}_{h[8:12]}_{h[12:16]}_{h[16:20]}_{h[20:32]}"
    container = hashlib.sha256(h.encode()).hexdigest()
    path = procfs / str(FOREIGN_PID) / "cgroup"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "0::/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{uid}.slice/cri-containerd-{container}.scope\n"
    )


def with_target_labels(families: list[Metric], labels: Mapping[str, str]) -> list[Metric]:
    """The families with ``labels`` added to every sample that lacks them (a scrape's target
    labels with ``honor_labels``); families whose samples all have them are returned as is."""
    out: list[Metric] = []
    wanted = labels.keys()
    for fam in families:
        for s in fam.samples:
            if not wanted <= s.labels.keys():
                break
        else:
            out.append(fam)
            continue
        copy = Metric(fam.name, fam.documentation, fam.type)
        copy.samples = [
            s._replace(
                labels={**s.labels, **{k: v for k, v in labels.items() if k not in s.labels}}
            )
            for s in fam.samples
        ]
        out.append(copy)
    return out


# ---------------------------------------------------------------------------- twin series
def _spec(name: str, typ: c.MetricType, help_: str) -> Metric:
    return family(c.MetricSpec(name, typ, help_))


def request_families(fleet: Fleet) -> list[Metric]:
    """Every pool's request telemetry, per tenant, as an inference server's series."""
    requests = _spec(c.REQUESTS_TOTAL, "counter", c.CANONICAL_HELP[c.REQUESTS_TOTAL])
    tokens = _spec(c.TOKEN_USAGE_TOTAL, "counter", c.CANONICAL_HELP[c.TOKEN_USAGE_TOTAL])
    names = (c.TIME_TO_FIRST_TOKEN, c.TIME_PER_OUTPUT_TOKEN, c.REQUEST_DURATION)
    hists = [_spec(name, "histogram", c.CANONICAL_HELP[name]) for name in names]
    for (_, tenant), tot in fleet.totals.items():
        base = {
            c.LABEL_MODEL: tot.model,
            c.LABEL_TENANT: tenant,
            c.LABEL_NAMESPACE: tot.namespace,
            c.LABEL_SERVER: "twin",
        }
        for outcome, value in tot.outcomes.items():
            add(requests, {**base, c.LABEL_OUTCOME: outcome}, value)
        for kind, value in (("input", tot.input_tokens), ("output", tot.output_tokens)):
            add(tokens, {**base, c.LABEL_TOKEN_TYPE: kind}, value)
        for fam, hist in zip(hists, (tot.ttft, tot.tpot, tot.e2e), strict=True):
            histogram_samples(fam, base, hist)
    return [requests, tokens, *hists]


def histogram_samples(fam: Metric, base: dict[str, str], hist: Histogram) -> None:
    for le, count in zip(hist.buckets, hist.counts, strict=True):
        add(fam, {**base, "le": format(le, "g")}, count, "_bucket")
    add(fam, {**base, "le": "+Inf"}, hist.total, "_bucket")
    add(fam, base, hist.total, "_count")
    add(fam, base, hist.sum, "_sum")


def twin_families(fleet: Fleet) -> list[Metric]:
    """What neither the agents nor the request telemetry say: each serving pod's requests in
    flight (``gpuslo_server_requests_running{model, namespace, pod}``, as its server's scrape
    gives it: the canonical series that tie a pod to its model), which model each replica pod
    serves (the twin's own info series), the cluster's kube-state-metrics series
    (``ksm_families``: pods, owners, readiness; the CPU replicas' resource requests), and each
    pool's desired and ready replicas."""
    running = family(c.SERVER_REQUESTS_RUNNING)
    info = _spec(TWIN_REPLICA_INFO, "info", "Which model and pool a replica pod serves.")
    requests = _spec(c.KSM_POD_REQUESTS, "gauge", "Resources a pod's container requests.")
    replicas = _spec(TWIN_REPLICAS, "gauge", "Replicas of the pool, running or starting.")
    ready = _spec(TWIN_READY, "gauge", "Replicas of the pool past their cold start.")
    for name, state in fleet.pools.items():
        spec = state.spec
        serving = [h > 0 for h in state.healths[: len(state.replicas)]]
        for i in range(len(state.replicas)):
            pod = {c.LABEL_NAMESPACE: spec.namespace, c.LABEL_POD: pod_name(name, i)}
            add(info, {**pod, c.LABEL_MODEL: spec.model, c.LABEL_POOL: name}, 1.0)
            if i < len(serving) and serving[i]:  # a pod not serving answers no scrape
                server = {**pod, c.LABEL_MODEL: spec.model, c.LABEL_SERVER: "twin"}
                add(running, server, state.in_flight / sum(serving))
            if state.gpu_pool:
                continue
            for resource, unit, value in (
                ("cpu", "core", float(getattr(spec, "vcpus_per_replica", 0))),
                ("memory", "byte", getattr(spec, "memory_gib_per_replica", 0) * 2**30),
            ):
                labels = {**pod, c.LABEL_CONTAINER: SERVER_CONTAINER}
                add(requests, {**labels, "resource": resource, "unit": unit}, value)
    for name, state in fleet.pools.items():
        labels = {c.LABEL_POOL: name, c.LABEL_NAMESPACE: state.spec.namespace}
        add(replicas, labels, len(state.replicas))
        add(ready, labels, sum(1 for r in state.replicas if r.ready_at <= fleet.t))
    return [running, info, *ksm_families(fleet), requests, replicas, ready]


# ---------------------------------------------------------------------------- offline
def run_offline(
    scenario: Scenario,
    out_dir: Path,
    start: float,
    step: float | None = None,
    progress: Callable[[float], None] | None = None,
    samples_per_step: int = 0,
    families: Collection[str] | None = HISTORY_FAMILIES,
    naming: c.GpuNaming | None = None,
) -> dict[str, float]:
    """Simulate the whole scenario from ``start`` (Unix seconds); write ``history.om`` and
    ``incidents.json`` into ``out_dir`` (and ``samples.parquet``, requests sampled at each
    step for drift jobs, when ``samples_per_step`` > 0). ``families``: the agent families
    the history keeps (None: all of them; the default: ``history_families(naming)``);
    ``naming``: the dcgm-exporter generation of the GPU series. Returns counts."""
    naming = naming or c.gpu_naming()
    if families is HISTORY_FAMILIES:
        families = history_families(naming)
    out_dir.mkdir(parents=True, exist_ok=True)
    dt = step or _seconds(scenario.step)
    steps = int(_seconds(scenario.duration) // dt)
    fleet = Fleet(scenario)
    history = History()
    drawn: list[tuple[float, str, str, float, float]] = []
    # Each step makes thousands of short-lived samples and keeps few cycles: collecting the
    # young generation every 100,000 allocations instead of every 700 halves the agents' time.
    threshold = gc.get_threshold()
    gc.set_threshold(100_000, *threshold[1:])
    try:
        with workdir_for_agents() as workdir:
            agents = FleetAgents(fleet, Path(workdir), agent_clock=lambda: fleet.t, naming=naming)
            for n in range(steps):
                fleet.step(dt)
                at = start + fleet.t
                if samples_per_step:
                    drawn += [(at, *s) for s in fleet.sample_requests(samples_per_step)]
                agents.feed()
                agents.sample()
                history.add(request_families(fleet), at)
                for node in agents:
                    history.add(node.families(families), at)
                history.add(twin_families(fleet), at)
                if progress is not None and n % 500 == 0:
                    progress(n / steps)
    finally:
        gc.set_threshold(*threshold)
    with (out_dir / "history.om").open("w") as f:
        samples = history.write(f)
    if samples_per_step:
        import pandas as pd

        frame = pd.DataFrame(
            drawn, columns=["timestamp", "model", "tenant", "prompt_tokens", "output_tokens"]
        )
        frame.to_parquet(out_dir / "samples.parquet", index=False)
    incidents = [inc.truth(offset=start) for inc in fleet.incidents]
    (out_dir / "incidents.json").write_text(json.dumps(incidents, indent=1) + "\n")
    return {"steps": steps, "samples": samples, "series": history.series}
