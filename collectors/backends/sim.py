"""The ``sim`` backend: an in-process GPU model producing the same samples NVML would.

Power, temperature, clocks, energy and NVLink traffic follow the load set on each GPU;
faults (XID, GPU lost, thermal throttling, NVLink CRC storms) are injected through methods
the digital twin calls. Time is injectable so tests are deterministic.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpuslo.foundation import conventions as c

from .base import DriverInfo, GpuIdentity, GpuSample, MigSample, NvLinkSample, XidEvent

_NS = 1_000_000_000


@dataclass(frozen=True)
class GpuProfile:
    """Datasheet figures of a GPU model."""

    name: str
    memory_mib: int
    reserved_mib: int
    tdp_watts: float
    idle_watts: float
    nvlinks: int
    nvlink_bytes_per_s: float  # per link, per direction
    sm_clock_mhz: int
    mem_clock_mhz: int
    slice_memory_gib: int  # memory of a 1g MIG slice


PROFILES: dict[str, GpuProfile] = {
    "H100": GpuProfile("NVIDIA H100 80GB HBM3", 81559, 530, 700, 70, 18, 25e9, 1980, 2619, 10),
    "H200": GpuProfile("NVIDIA H200", 143771, 560, 700, 75, 18, 25e9, 1980, 3201, 18),
    "A100": GpuProfile("NVIDIA A100-SXM4-80GB", 81920, 490, 400, 55, 12, 25e9, 1410, 1593, 10),
}

_THROTTLE_TEMP_C = 87.0
_AMBIENT_C = 30.0


@dataclass
class _SimGpu:
    identity: GpuIdentity
    profile: GpuProfile
    load: float = 0.3
    memory_used_mib: float = 4096.0
    temperature: float = 35.0
    energy_mj: float = 0.0
    lost: bool = False
    forced_thermal: bool = False
    throttle_ns: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(c.THROTTLE_REASONS, 0)
    )
    link_tx: list[int] = field(default_factory=list)
    link_rx: list[int] = field(default_factory=list)
    link_crc: list[int] = field(default_factory=list)
    link_replay: list[int] = field(default_factory=list)
    links_down: set[int] = field(default_factory=set)
    pcie_tx: int = 0
    pcie_rx: int = 0
    ecc_sbe: int = 0
    ecc_dbe: int = 0
    mig_profiles: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()


class SimBackend:
    """A deterministic model of ``count`` GPUs of one profile on one node."""

    name = "sim"

    def __init__(
        self,
        count: int = 8,
        profile: str = "H100",
        node: str = "sim-node-0",
        clock: Callable[[], float] = time.monotonic,
        mig: Sequence[Sequence[str]] | None = None,
        throttle_temp_c: float | None = _THROTTLE_TEMP_C,
    ) -> None:
        """``throttle_temp_c``: the temperature at which a GPU clocks itself down; None for
        none, so only ``set_thermal_throttle`` throttles (the twin, whose model decides)."""
        if profile not in PROFILES:
            raise ValueError(f"unknown GPU profile {profile!r}; choose from {sorted(PROFILES)}")
        if count < 0:
            raise ValueError("GPU count must be >= 0")
        self._clock = clock
        self._throttle_temp = math.inf if throttle_temp_c is None else throttle_temp_c
        self._lock = threading.Lock()
        self._events: list[XidEvent] = []
        spec = PROFILES[profile]
        self._gpus = []
        for i in range(count):
            ident = GpuIdentity(
                index=i,
                uuid=gpu_uuid(node, i),
                name=spec.name,
                pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0",
                minor_number=i,
            )
            gpu = _SimGpu(ident, spec)
            gpu.link_tx = [0] * spec.nvlinks
            gpu.link_rx = [0] * spec.nvlinks
            gpu.link_crc = [0] * spec.nvlinks
            gpu.link_replay = [0] * spec.nvlinks
            if mig and i < len(mig):
                gpu.mig_profiles = tuple(mig[i])
            self._gpus.append(gpu)
        self._last = clock()

    # ------------------------------------------------------------------ protocol
    def open(self) -> DriverInfo:
        """Nothing to connect to."""
        return DriverInfo(driver_version="sim-1.0")

    def close(self) -> None:
        """Nothing to release."""

    def drain_xid_events(self) -> list[XidEvent]:
        """XIDs injected since the last call."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def sample(self) -> list[GpuSample]:
        """Advance the model to now and report every GPU."""
        with self._lock:
            now = self._clock()
            dt = max(0.0, now - self._last)
            self._last = now
            return [self._step(gpu, dt) for gpu in self._gpus]

    # ------------------------------------------------------------------ fault/load hooks
    def set_load(self, index: int, load: float, memory_used_mib: float | None = None) -> None:
        """Set a GPU's utilisation (0..1) and, optionally, its memory use."""
        with self._lock:
            gpu = self._gpus[index]
            gpu.load = min(1.0, max(0.0, load))
            if memory_used_mib is not None:
                gpu.memory_used_mib = memory_used_mib

    def set_processes(self, index: int, pids: Sequence[int]) -> None:
        """Set the compute processes running on a GPU."""
        with self._lock:
            self._gpus[index].pids = tuple(pids)

    def inject_xid(self, index: int, xid: int) -> None:
        """Raise an XID on a GPU; XID 79 also takes it off the bus, 48/94 count ECC errors."""
        with self._lock:
            gpu = self._gpus[index]
            self._events.append(XidEvent(uuid=gpu.identity.uuid, xid=xid))
            if xid == 79:
                gpu.lost = True
            elif xid == 48:
                gpu.ecc_dbe += 1
            elif xid == 94:
                gpu.ecc_sbe += 1

    def set_lost(self, index: int, lost: bool = True) -> None:
        """Take a GPU off the bus (or bring it back)."""
        with self._lock:
            self._gpus[index].lost = lost

    def set_thermal_throttle(self, index: int, on: bool = True) -> None:
        """Force thermal throttling regardless of temperature (a failed fan, say)."""
        with self._lock:
            self._gpus[index].forced_thermal = on

    def add_nvlink_errors(self, index: int, link: int, crc: int, replay: int = 0) -> None:
        """Add CRC (and replay) errors on one NVLink link: a CRC storm, in steps."""
        with self._lock:
            gpu = self._gpus[index]
            gpu.link_crc[link] += crc
            gpu.link_replay[link] += replay

    def set_nvlink_down(self, index: int, link: int, down: bool = True) -> None:
        """Take one NVLink link down (or up)."""
        with self._lock:
            links = self._gpus[index].links_down
            (links.add if down else links.discard)(link)

    # ------------------------------------------------------------------ model
    def _step(self, gpu: _SimGpu, dt: float) -> GpuSample:
        if gpu.lost:
            return GpuSample(gpu.identity, lost=True, error="GPU is lost")
        p = gpu.profile
        throttled = gpu.forced_thermal or gpu.temperature >= self._throttle_temp
        clock_factor = 0.6 if throttled else 1.0
        power = p.idle_watts + (p.tdp_watts - p.idle_watts) * gpu.load * clock_factor
        # First-order thermal model: settles at ambient + 80 C at TDP, time constant 30 s.
        target = _AMBIENT_C + 80.0 * power / p.tdp_watts + (15.0 if gpu.forced_thermal else 0.0)
        gpu.temperature += (target - gpu.temperature) * (1.0 - math.exp(-dt / 30.0))
        gpu.energy_mj += power * dt * 1000.0
        if throttled:
            gpu.throttle_ns["thermal"] += int(dt * _NS)
        if gpu.load < 0.05:
            gpu.throttle_ns["low_utilization"] += int(dt * _NS)
        for link in range(p.nvlinks):
            if link in gpu.links_down:
                continue
            moved = int(p.nvlink_bytes_per_s * gpu.load * 0.2 * dt)
            gpu.link_tx[link] += moved
            gpu.link_rx[link] += moved
        pcie_rate = 2e9 * gpu.load
        gpu.pcie_tx += int(pcie_rate * dt)
        gpu.pcie_rx += int(pcie_rate * 1.5 * dt)
        used = min(gpu.memory_used_mib, p.memory_mib - p.reserved_mib)
        fields = {
            c.DCGM_SM_CLOCK.name: round(p.sm_clock_mhz * clock_factor),
            c.DCGM_MEM_CLOCK.name: p.mem_clock_mhz,
            c.DCGM_GPU_TEMP.name: round(gpu.temperature),
            c.DCGM_MEMORY_TEMP.name: round(gpu.temperature + 4),
            c.DCGM_POWER_USAGE.name: round(power, 3),
            c.DCGM_TOTAL_ENERGY.name: round(gpu.energy_mj),
            c.DCGM_PCIE_TX_THROUGHPUT.name: round(pcie_rate / 1000),
            c.DCGM_PCIE_RX_THROUGHPUT.name: round(pcie_rate * 1.5 / 1000),
            c.DCGM_PCIE_REPLAY.name: 0,
            c.DCGM_GPU_UTIL.name: round(gpu.load * 100),
            c.DCGM_MEM_COPY_UTIL.name: round(gpu.load * 60),
            c.DCGM_ENC_UTIL.name: 0,
            c.DCGM_DEC_UTIL.name: 0,
            c.DCGM_FB_USED.name: round(used),
            c.DCGM_FB_FREE.name: round(p.memory_mib - p.reserved_mib - used),
            c.DCGM_FB_RESERVED.name: p.reserved_mib,
            c.DCGM_ECC_SBE_VOL.name: gpu.ecc_sbe,
            c.DCGM_ECC_DBE_VOL.name: gpu.ecc_dbe,
            c.DCGM_ECC_SBE_AGG.name: gpu.ecc_sbe,
            c.DCGM_ECC_DBE_AGG.name: gpu.ecc_dbe,
            c.DCGM_CORRECTABLE_REMAPPED_ROWS.name: gpu.ecc_sbe,
            c.DCGM_UNCORRECTABLE_REMAPPED_ROWS.name: gpu.ecc_dbe,
            c.DCGM_ROW_REMAP_PENDING.name: 1 if gpu.ecc_dbe else 0,
            c.DCGM_ROW_REMAP_FAILURE.name: 0,
            c.DCGM_PROF_GR_ENGINE_ACTIVE.name: round(gpu.load, 4),
            c.DCGM_PROF_SM_ACTIVE.name: round(gpu.load * 0.9, 4),
            c.DCGM_PROF_SM_OCCUPANCY.name: round(gpu.load * 0.5, 4),
            c.DCGM_PROF_PIPE_TENSOR_ACTIVE.name: round(gpu.load * 0.6, 4),
            c.DCGM_PROF_DRAM_ACTIVE.name: round(gpu.load * 0.7, 4),
        }
        links = tuple(
            NvLinkSample(
                link=i,
                up=i not in gpu.links_down,
                tx_bytes=gpu.link_tx[i],
                rx_bytes=gpu.link_rx[i],
                crc_flit_errors=gpu.link_crc[i],
                crc_data_errors=0,
                replay_errors=gpu.link_replay[i],
                recovery_errors=0,
            )
            for i in range(p.nvlinks)
        )
        return GpuSample(
            identity=gpu.identity,
            fields={k: float(v) for k, v in fields.items()},
            throttle_ns=dict(gpu.throttle_ns),
            pcie_tx_bytes=gpu.pcie_tx,
            pcie_rx_bytes=gpu.pcie_rx,
            nvlinks=links,
            mig=self._mig(gpu),
            pids=gpu.pids,
        )

    def _mig(self, gpu: _SimGpu) -> tuple[MigSample, ...]:
        out = []
        for i, profile in enumerate(gpu.mig_profiles):
            gib = int(profile.split(".")[1].removesuffix("gb"))
            total = gib * 1024.0
            used = min(total, gpu.memory_used_mib / max(1, len(gpu.mig_profiles)))
            out.append(
                MigSample(
                    gpu_instance_id=i + 1,
                    compute_instance_id=0,
                    profile=profile,
                    uuid=mig_uuid(gpu.identity.uuid, i),
                    fields={c.DCGM_FB_USED.name: round(used), c.DCGM_FB_FREE.name: total - used},
                )
            )
        return tuple(out)


def mig_uuid(gpu_uuid: str, instance: int) -> str:
    """The UUID of a GPU's MIG instance, by position (``GPU_I_ID`` is ``instance + 1``)."""
    return f"MIG-{gpu_uuid[4:]}-{instance}"


def gpu_uuid(node: str, index: int) -> str:
    """A stable, GPU-shaped UUID derived from the node name and index."""
    import hashlib

    h = hashlib.sha1(f"{node}/{index}".encode()).hexdigest()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
