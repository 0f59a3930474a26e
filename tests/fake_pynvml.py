"""A faithful fake of the ``pynvml`` module API for driving the NVML backend without a GPU.

Constants, error classes (``NVMLError(code)`` maps to ``NVMLError_GpuIsLost`` etc.) and ctypes
structures are the real module's; only the calls into libnvidia-ml are replaced. Each fake
function keeps the real signature and raises the error code the real driver returns for the
situation (NOT_SUPPORTED for an absent field, GPU_IS_LOST once a GPU fell off the bus,
TIMEOUT from an event wait with nothing pending).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml as real

MIB = 1024 * 1024


@dataclass
class FakeMig:
    gi: int
    ci: int
    slices: int
    memory_mb: int
    uuid: str
    used_bytes: int


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    bus_id: str = "00000000:18:00.0"
    minor: int = 0
    lost: bool = False
    unsupported: set[str] = field(default_factory=set)  # function names answering NOT_SUPPORTED
    values: dict[str, Any] = field(default_factory=dict)
    links: int = 18
    link_state: dict[int, int] = field(default_factory=dict)
    link_errors: dict[tuple[int, int], int] = field(default_factory=dict)
    link_kib: dict[tuple[int, int], int] = field(default_factory=dict)  # (field id, link) -> KiB
    field_overrides: dict[int, tuple[int, int, Any]] = field(default_factory=dict)
    mig: list[FakeMig] = field(default_factory=list)
    gpm: bool = True
    pids: list[int] = field(default_factory=list)


DEFAULTS = {
    "sm_clock": 1980,
    "mem_clock": 2619,
    "temp": 41,
    "mem_temp": 45,
    "power_mw": 312_456,
    "energy_mj": 987_654_321,
    "pcie_tx_kbs": 1200,
    "pcie_rx_kbs": 3400,
    "pcie_replay": 2,
    "util_gpu": 87,
    "util_mem": 40,
    "enc": 0,
    "dec": 5,
    "mem_total": 81559 * MIB,
    "mem_reserved": 530 * MIB,
    "mem_used": 20480 * MIB,
    "ecc": {(0, 0): 3, (1, 0): 0, (0, 1): 11, (1, 1): 1},
    "remap": (4, 1, 0, 0),
    "violation_ns": {0: 1_500_000_000, 1: 250_000_000, 2: 0, 3: 0, 4: 9_000_000_000, 5: 0},
    "pcie_count_tx": 10_000_000,
    "pcie_count_rx": 20_000_000,
    "gpm": {1: 80.0, 2: 70.0, 3: 35.0, 5: 42.5, 10: 55.0},
}


class FakeNvml:
    """Module-shaped: ``NvmlBackend(nvml=FakeNvml(...))``."""

    def __init__(self, gpus: list[FakeGpu] | None = None, library_missing: bool = False) -> None:
        self._gpus = gpus or []
        self._library_missing = library_missing
        self._initialized = False
        self.events: queue.Queue[tuple[int, int]] = queue.Queue()  # (gpu index, xid)
        self.registered: set[int] = set()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        # Constants, error classes and structs come from the real module.
        if name.startswith(("NVML", "nvmlEventType", "nvmlMemory", "c_nvml")):
            return getattr(real, name)
        raise AttributeError(name)

    # ------------------------------------------------------------------ helpers
    def _err(self, code: int) -> Exception:
        return real.NVMLError(code)

    def _gpu(self, handle: Any, fn: str) -> FakeGpu:
        self.calls.append(fn)
        if not self._initialized:
            raise self._err(real.NVML_ERROR_UNINITIALIZED)
        gpu = handle if isinstance(handle, FakeGpu) else None
        if gpu is None:
            raise self._err(real.NVML_ERROR_INVALID_ARGUMENT)
        if gpu.lost:
            raise self._err(real.NVML_ERROR_GPU_IS_LOST)
        if fn in gpu.unsupported:
            raise self._err(real.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _v(self, gpu: FakeGpu, key: str) -> Any:
        return gpu.values.get(key, DEFAULTS[key])

    # ------------------------------------------------------------------ init
    def nvmlInit(self) -> None:
        if self._library_missing:
            raise self._err(real.NVML_ERROR_LIBRARY_NOT_FOUND)
        self._initialized = True

    def nvmlShutdown(self) -> None:
        self._initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.86.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if index >= len(self._gpus):
            raise self._err(real.NVML_ERROR_INVALID_ARGUMENT)
        return self._gpu(self._gpus[index], "nvmlDeviceGetHandleByIndex")

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        if isinstance(h, FakeMig):
            return h.uuid
        return self._gpu(h, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, h: Any) -> str:
        return self._gpu(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        return SimpleNamespace(busId=self._gpu(h, "nvmlDeviceGetPciInfo").bus_id)

    def nvmlDeviceGetMinorNumber(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetMinorNumber").minor

    # ------------------------------------------------------------------ fields
    def nvmlDeviceGetClockInfo(self, h: Any, clock: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetClockInfo")
        return int(self._v(g, "sm_clock" if clock == real.NVML_CLOCK_SM else "mem_clock"))

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        return int(self._v(self._gpu(h, "nvmlDeviceGetTemperature"), "temp"))

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        return int(self._v(self._gpu(h, "nvmlDeviceGetPowerUsage"), "power_mw"))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:
        return int(self._v(self._gpu(h, "nvmlDeviceGetTotalEnergyConsumption"), "energy_mj"))

    def nvmlDeviceGetPcieThroughput(self, h: Any, counter: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetPcieThroughput")
        key = "pcie_tx_kbs" if counter == real.NVML_PCIE_UTIL_TX_BYTES else "pcie_rx_kbs"
        return int(self._v(g, key))

    def nvmlDeviceGetPcieReplayCounter(self, h: Any) -> int:
        return int(self._v(self._gpu(h, "nvmlDeviceGetPcieReplayCounter"), "pcie_replay"))

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        g = self._gpu(h, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=self._v(g, "util_gpu"), memory=self._v(g, "util_mem"))

    def nvmlDeviceGetEncoderUtilization(self, h: Any) -> list[int]:
        return [self._v(self._gpu(h, "nvmlDeviceGetEncoderUtilization"), "enc"), 167000]

    def nvmlDeviceGetDecoderUtilization(self, h: Any) -> list[int]:
        return [self._v(self._gpu(h, "nvmlDeviceGetDecoderUtilization"), "dec"), 167000]

    def nvmlDeviceGetMemoryInfo(self, h: Any, version: int | None = None) -> Any:
        if isinstance(h, FakeMig):
            total = h.memory_mb * MIB
            return SimpleNamespace(total=total, free=total - h.used_bytes, used=h.used_bytes)
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        total, used = self._v(g, "mem_total"), self._v(g, "mem_used")
        if version == real.nvmlMemory_v2:
            reserved = self._v(g, "mem_reserved")
            return SimpleNamespace(
                version=version,
                total=total,
                reserved=reserved,
                free=total - reserved - used,
                used=used,
            )
        return SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetTotalEccErrors(self, h: Any, error_type: int, counter_type: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetTotalEccErrors")
        return int(self._v(g, "ecc")[(error_type, counter_type)])

    def nvmlDeviceGetRemappedRows(self, h: Any) -> tuple[int, int, int, int]:
        return tuple(self._v(self._gpu(h, "nvmlDeviceGetRemappedRows"), "remap"))

    def nvmlDeviceGetViolationStatus(self, h: Any, policy: int) -> Any:
        g = self._gpu(h, "nvmlDeviceGetViolationStatus")
        return SimpleNamespace(referenceTime=0, violationTime=self._v(g, "violation_ns")[policy])

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        g = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=p, usedGpuMemory=1 << 30) for p in g.pids]

    def nvmlDeviceGetFieldValues(self, h: Any, ids: list[Any]) -> Any:
        g = self._gpu(h, "nvmlDeviceGetFieldValues")
        values = (real.c_nvmlFieldValue_t * len(ids))()
        for i, fid in enumerate(ids):
            fid_, scope = fid if isinstance(fid, tuple) else (fid, 0)
            entry = values[i]
            entry.fieldId, entry.scopeId = fid_, scope
            entry.nvmlReturn = real.NVML_SUCCESS
            if fid_ in g.field_overrides:
                ret, vtype, val = g.field_overrides[fid_]
                entry.nvmlReturn, entry.valueType = ret, vtype
                if ret == real.NVML_SUCCESS:
                    entry.value.ullVal = val
            elif fid_ == real.NVML_FI_DEV_MEMORY_TEMP:
                entry.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
                entry.value.uiVal = self._v(g, "mem_temp")
            elif fid_ in (
                real.NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
                real.NVML_FI_DEV_PCIE_COUNT_RX_BYTES,
            ):
                entry.valueType = real.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                tx = fid_ == real.NVML_FI_DEV_PCIE_COUNT_TX_BYTES
                entry.value.ullVal = self._v(g, "pcie_count_tx" if tx else "pcie_count_rx")
            elif (fid_, scope) in g.link_kib:
                entry.valueType = real.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                entry.value.ullVal = g.link_kib[(fid_, scope)]
            else:
                entry.nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
        return values

    # ------------------------------------------------------------------ NVLink
    def nvmlDeviceGetNvLinkState(self, h: Any, link: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetNvLinkState")
        if link >= g.links:
            raise self._err(real.NVML_ERROR_INVALID_ARGUMENT)
        return g.link_state.get(link, real.NVML_FEATURE_ENABLED)

    def nvmlDeviceGetNvLinkErrorCounter(self, h: Any, link: int, counter: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetNvLinkErrorCounter")
        return g.link_errors.get((link, counter), 0)

    # ------------------------------------------------------------------ MIG
    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        g = self._gpu(h, "nvmlDeviceGetMigMode")
        mode = real.NVML_DEVICE_MIG_ENABLE if g.mig else real.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7 if self._gpu(h, "nvmlDeviceGetMaxMigDeviceCount").mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, index: int) -> FakeMig:
        g = self._gpu(h, "nvmlDeviceGetMigDeviceHandleByIndex")
        if index >= len(g.mig):
            raise self._err(real.NVML_ERROR_NOT_FOUND)
        return g.mig[index]

    def nvmlDeviceGetGpuInstanceId(self, mig: FakeMig) -> int:
        return mig.gi

    def nvmlDeviceGetComputeInstanceId(self, mig: FakeMig) -> int:
        return mig.ci

    def nvmlDeviceGetAttributes(self, mig: FakeMig) -> Any:
        return SimpleNamespace(gpuInstanceSliceCount=mig.slices, memorySizeMB=mig.memory_mb)

    # ------------------------------------------------------------------ GPM
    @staticmethod
    def c_nvmlGpmMetricsGet_t() -> Any:
        """Same fields as the real struct; samples are opaque handles, as in the C API."""
        metrics = [
            SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0)
            for _ in range(real.NVML_GPM_METRIC_MAX)
        ]
        return SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None, metrics=metrics)

    def nvmlGpmQueryDeviceSupport(self, h: Any) -> Any:
        g = self._gpu(h, "nvmlGpmQueryDeviceSupport")
        return SimpleNamespace(version=1, isSupportedDevice=1 if g.gpm else 0)

    def nvmlGpmSampleAlloc(self) -> Any:
        return SimpleNamespace(handle=None)

    def nvmlGpmSampleGet(self, h: Any, sample: Any) -> Any:
        sample.handle = self._gpu(h, "nvmlGpmSampleGet")
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        sample.handle = None

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        gpu = request.sample2.handle
        if request.sample1.handle is None:
            raise self._err(real.NVML_ERROR_INVALID_ARGUMENT)
        for i in range(request.numMetrics):
            metric = request.metrics[i]
            value = self._v(gpu, "gpm").get(metric.metricId)
            metric.nvmlReturn = real.NVML_SUCCESS if value is not None else 3
            metric.value = value or 0.0
        return request

    # ------------------------------------------------------------------ events
    def nvmlEventSetCreate(self) -> Any:
        return SimpleNamespace(name="eventset")

    def nvmlDeviceRegisterEvents(self, h: Any, types: int, event_set: Any) -> None:
        g = self._gpu(h, "nvmlDeviceRegisterEvents")
        self.registered.add(self._gpus.index(g))

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        try:
            index, xid = self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise self._err(real.NVML_ERROR_TIMEOUT) from None
        return SimpleNamespace(
            device=self._gpus[index],
            eventType=real.nvmlEventTypeXidCriticalError,
            eventData=xid,
            gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF,
        )

    def nvmlEventSetFree(self, event_set: Any) -> None:
        return None
