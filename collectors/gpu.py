"""GPU collector: backend samples -> dcgm-exporter-named families plus ``gpuslo_gpu_*``."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client.core import Metric

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family

from .attribution import Attributor, PodRef, ProcessRef, process_ref
from .backends.base import BackendUnavailable, DriverInfo, GpuBackend, GpuSample
from .errors import CollectorUnavailable

log = logging.getLogger(__name__)
_DEFAULT_NAMING = c.gpu_naming()  # dcgm-exporter's default generation of GPU names

# DCGM's blank sentinels (dcgm_structs.h: DCGM_INT32_BLANK 0x7ffffff0, DCGM_INT64_BLANK
# 0x7ffffffffffffff0, each followed by a few "not found/not supported" codes) and NVML's
# all-ones "N/A". A sentinel is never a reading, so it is never exported.
_INT32_BLANK = 0x7FFFFFF0
_INT64_BLANK = 0x7FFFFFFFFFFFFFF0


def is_blank(value: float) -> bool:
    """True for placeholder values that mean "no reading"."""
    if math.isnan(value) or math.isinf(value):
        return True
    if value < 0:
        return False
    return (
        _INT32_BLANK <= value <= 0x7FFFFFFF
        or value >= _INT64_BLANK
        or value in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
    )


_NS_PER_S = 1e9


class GpuCollector:
    """Samples a GPU backend; accumulates XIDs per code (events are counted, not last-valued)."""

    name = c.COLLECTOR_GPU

    def __init__(
        self,
        backend: GpuBackend,
        hostname: str,
        attributor: Attributor | None = None,
        procfs: str | Path = "/proc",
        naming: c.GpuNaming = _DEFAULT_NAMING,
        max_processes: int = c.GPU_PROCESS_CAP,
    ) -> None:
        self.backend = backend
        self._hostname = hostname
        # dcgm-exporter's legacy or current (DCGM-4) names, units and host label.
        self.naming = naming
        self._attributor = attributor
        self._procfs = procfs
        self._driver: DriverInfo | None = None
        self._xids: dict[str, dict[int, int]] = {}  # GPU UUID -> XID code -> count
        self._last_xid: dict[str, int] = {}
        self.max_processes = max_processes  # processes listed per GPU; the rest are counted
        self._procs_dropped: dict[str, int] = {}  # GPU UUID -> processes left out so far

    def _ensure_open(self) -> DriverInfo:
        if self._driver is None:
            try:
                self._driver = self.backend.open()
            except BackendUnavailable as err:
                # Absent hardware; anything else escapes and is logged as a broken collector.
                raise CollectorUnavailable(str(err)) from err
        return self._driver

    def close(self) -> None:
        """Release the backend."""
        if self._driver is not None:
            self.backend.close()

    def collect(self) -> Iterable[Metric]:
        """Sample every GPU and build the families fresh."""
        driver = self._ensure_open()
        samples = self.backend.sample()
        for event in self.backend.drain_xid_events():
            counts = self._xids.setdefault(event.uuid, {})
            counts[event.xid] = counts.get(event.xid, 0) + 1
            self._last_xid[event.uuid] = event.xid
        holders: Mapping[str, list[PodRef]] = self._attributor.holders() if self._attributor else {}
        return self._families(samples, driver, holders)

    def _families(
        self,
        samples: list[GpuSample],
        driver: DriverInfo,
        by_device: Mapping[str, list[PodRef]],
    ) -> list[Metric]:
        naming = self.naming
        # Keyed by the legacy name backends report by; each family as the generation spells it,
        # with the factor that turns a backend's legacy-unit value into the generation's unit.
        fams = {spec.name: family(naming.spec(spec)) for spec in c.GPU_FIELDS}
        factors = {spec.name: naming.factor(spec) for spec in c.GPU_FIELDS}
        up = family(c.GPU_UP)
        info = family(c.GPU_INFO)
        xid_last = family(naming.spec(c.DCGM_XID_ERRORS))
        xid_total = family(c.GPU_XID_ERRORS)
        throttle = family(c.GPU_THROTTLE_SECONDS)
        energy = family(c.GPU_ENERGY_JOULES)
        pcie_tx, pcie_rx = family(c.GPU_PCIE_TX_BYTES), family(c.GPU_PCIE_RX_BYTES)
        link_specs = (
            (c.GPU_NVLINK_TX_BYTES, "tx_bytes"),
            (c.GPU_NVLINK_RX_BYTES, "rx_bytes"),
            (c.GPU_NVLINK_CRC_FLIT_ERRORS, "crc_flit_errors"),
            (c.GPU_NVLINK_CRC_DATA_ERRORS, "crc_data_errors"),
            (c.GPU_NVLINK_REPLAY_ERRORS, "replay_errors"),
            (c.GPU_NVLINK_RECOVERY_ERRORS, "recovery_errors"),
        )
        link_up = family(c.GPU_NVLINK_UP)
        link_fams = [(family(spec), attr) for spec, attr in link_specs]
        pod_info = family(c.GPU_POD_INFO)
        proc_info = family(c.GPU_PROCESS_INFO)
        procs_dropped = family(c.GPU_PROCESSES_DROPPED)

        for s in samples:
            ident = s.identity
            owners = by_device.get(ident.uuid, [])
            labels = self._gpu_labels(s, owners)
            add(up, labels, 0.0 if s.lost else 1.0)
            add(
                info,
                {**labels, c.LABEL_DRIVER_VERSION: driver.driver_version},
                1.0,
            )
            for xid, count in sorted(self._xids.get(ident.uuid, {}).items()):
                add(xid_total, {**labels, c.LABEL_XID: str(xid)}, count)
            if s.lost:
                continue  # a lost GPU reports nothing but up=0 and its XIDs
            add(xid_last, labels, float(self._last_xid.get(ident.uuid, 0)))
            for name, value in s.fields.items():
                fam = fams.get(name)
                if fam is not None and not is_blank(value):
                    add(fam, labels, _scaled(value, factors[name]))
            energy_mj = s.fields.get(c.DCGM_TOTAL_ENERGY.name)
            if energy_mj is not None and not is_blank(energy_mj):
                add(energy, labels, energy_mj / 1000.0)
            for reason in c.THROTTLE_REASONS:
                if reason in s.throttle_ns:
                    add(
                        throttle,
                        {**labels, c.LABEL_REASON: reason},
                        s.throttle_ns[reason] / _NS_PER_S,
                    )
            if s.pcie_tx_bytes is not None:
                add(pcie_tx, labels, s.pcie_tx_bytes)
            if s.pcie_rx_bytes is not None:
                add(pcie_rx, labels, s.pcie_rx_bytes)
            for link in s.nvlinks:
                link_labels = {**labels, c.LABEL_LINK: str(link.link)}
                add(link_up, link_labels, 1.0 if link.up else 0.0)
                for fam, attr in link_fams:
                    value = getattr(link, attr)
                    if value is not None:
                        add(fam, link_labels, value)
            for mig in s.mig:
                mig_owners = by_device.get(mig.uuid, [])
                mig_labels = {
                    **self._gpu_labels(s, mig_owners),
                    c.LABEL_GPU_I_ID: str(mig.gpu_instance_id),
                    c.LABEL_GPU_I_PROFILE: mig.profile,
                }
                for spec in c.MIG_FIELDS:
                    mig_value = mig.fields.get(spec.name)
                    if mig_value is not None and not is_blank(mig_value):
                        add(fams[spec.name], mig_labels, _scaled(mig_value, factors[spec.name]))
                for ref in mig_owners:
                    add(pod_info, {**mig_labels, **_pod_labels(ref)}, 1.0)
            for ref in owners:
                add(pod_info, {**labels, **_pod_labels(ref)}, 1.0)
            # Every process, also on GPUs the kubelet attributes: a process in no serving
            # pod's cgroup (a noisy neighbour) is the strongest sign of a shared GPU.
            kept = self._processes(s.pids)
            self._procs_dropped[ident.uuid] = (
                self._procs_dropped.get(ident.uuid, 0) + len(s.pids) - len(kept)
            )
            add(procs_dropped, labels, self._procs_dropped[ident.uuid])
            for proc in kept:
                add(
                    proc_info,
                    {
                        **labels,
                        c.LABEL_PID: str(proc.pid),
                        c.LABEL_POD_UID: proc.pod_uid,
                        c.LABEL_CONTAINER_ID: proc.container_id,
                    },
                    1.0,
                )
        ordered = [up, info, *fams.values(), xid_last, xid_total, energy, throttle]
        ordered += [pcie_tx, pcie_rx, link_up, *(f for f, _ in link_fams), pod_info, proc_info]
        ordered.append(procs_dropped)
        return ordered

    def _processes(self, pids: Sequence[int]) -> list[ProcessRef]:
        """At most ``max_processes`` of a GPU's processes, traced to their pods: one of each
        pod first (so a pod's many workers cannot hide another pod's process), then the rest
        in the order the driver lists them. Only ``4 * max_processes`` cgroups are read."""
        cap = self.max_processes
        refs = [process_ref(pid, self._procfs) for pid in pids[: 4 * cap]]
        seen: set[str] = set()
        first: list[ProcessRef] = []
        rest: list[ProcessRef] = []
        for ref in refs:
            key = ref.pod_uid or f"pid:{ref.pid}"  # a process outside any pod is its own
            (rest if key in seen else first).append(ref)
            seen.add(key)
        kept = (first + rest)[:cap]
        order = {ref.pid: i for i, ref in enumerate(refs)}
        return sorted(kept, key=lambda r: order[r.pid])

    def _gpu_labels(self, s: GpuSample, owners: list[PodRef]) -> dict[str, str]:
        ident = s.identity
        minor = ident.minor_number if ident.minor_number is not None else ident.index
        # dcgm-exporter puts pod labels on a GPU's series only when one container holds it;
        # a shared (time-sliced) GPU keeps them empty and lists holders in gpuslo_gpu_pod_info.
        owner = owners[0] if len(owners) == 1 else PodRef("", "", "")
        return {
            c.LABEL_GPU: str(ident.index),
            c.LABEL_UUID: ident.uuid,
            c.LABEL_PCI_BUS_ID: ident.pci_bus_id,
            c.LABEL_DEVICE: f"nvidia{minor}",
            c.LABEL_MODEL_NAME: ident.name,
            self.naming.host_label: self._hostname,
            c.LABEL_CONTAINER: owner.container,
            c.LABEL_NAMESPACE: owner.namespace,
            c.LABEL_POD: owner.pod,
        }


def _scaled(value: float, factor: float) -> float:
    """A legacy-unit value in the generation's unit; legacy values pass through untouched.
    Down-scaling divides (18 mJ / 1000 is 0.018 J; 18 * 0.001 is 0.018000000000000002)."""
    if factor == 1.0:
        return value
    return value / (1.0 / factor) if factor < 1.0 else value * factor


def _pod_labels(ref: PodRef) -> dict[str, str]:
    return {
        c.LABEL_CONTAINER: ref.container,
        c.LABEL_NAMESPACE: ref.namespace,
        c.LABEL_POD: ref.pod,
    }
