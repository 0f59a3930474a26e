"""NVML backend (nvidia-ml-py). The only module that imports ``pynvml``.

The module is passed in (``NvmlBackend(nvml=...)``) so tests drive this exact code with a
faithful fake of the pynvml API, errors included.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from gpuslo.foundation import conventions as c

from .base import (
    BackendUnavailable,
    DriverInfo,
    GpuIdentity,
    GpuSample,
    MigSample,
    NvLinkSample,
    XidEvent,
)

log = logging.getLogger(__name__)

_MIB = 1024 * 1024

# NVML perf policy constant name per throttle reason (nvmlPerfPolicyType_t).
_POLICIES = {
    "power": "NVML_PERF_POLICY_POWER",
    "thermal": "NVML_PERF_POLICY_THERMAL",
    "sync_boost": "NVML_PERF_POLICY_SYNC_BOOST",
    "board_limit": "NVML_PERF_POLICY_BOARD_LIMIT",
    "low_utilization": "NVML_PERF_POLICY_LOW_UTILIZATION",
    "reliability": "NVML_PERF_POLICY_RELIABILITY",
}
# GPM metric (percent, 0-100) -> DCGM profiling field (ratio, 0-1).
_GPM_METRICS = {
    "NVML_GPM_METRIC_GRAPHICS_UTIL": c.DCGM_PROF_GR_ENGINE_ACTIVE.name,
    "NVML_GPM_METRIC_SM_UTIL": c.DCGM_PROF_SM_ACTIVE.name,
    "NVML_GPM_METRIC_SM_OCCUPANCY": c.DCGM_PROF_SM_OCCUPANCY.name,
    "NVML_GPM_METRIC_ANY_TENSOR_UTIL": c.DCGM_PROF_PIPE_TENSOR_ACTIVE.name,
    "NVML_GPM_METRIC_DRAM_BW_UTIL": c.DCGM_PROF_DRAM_ACTIVE.name,
}
# NVML's "not available" for unsigned fields.
_NVML_BLANKS = {0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}


class _GpuLost(Exception):
    pass


class _Device:
    """A GPU handle and what was learned about it at open time."""

    def __init__(self, identity: GpuIdentity, handle: Any) -> None:
        self.identity = identity
        self.handle = handle
        self.links: list[int] = []
        self.gpm_supported = False
        self.gpm_prev: Any = None


class NvmlBackend:
    """Reads GPUs through NVML; XID errors arrive through an NVML event set on a thread."""

    name = "nvml"

    def __init__(self, nvml: Any | None = None, event_timeout_ms: int = 500) -> None:
        self._nvml: Any = nvml
        self._event_timeout_ms = event_timeout_ms
        self._devices: list[_Device] = []
        self._events: list[XidEvent] = []
        self._events_lock = threading.Lock()
        self._stop = threading.Event()
        self._event_thread: threading.Thread | None = None
        self._event_set: Any = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> DriverInfo:
        """Initialise NVML and enumerate GPUs; ``BackendUnavailable`` when there is no driver."""
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as err:  # pragma: no cover - dependency of the package
                raise BackendUnavailable("nvidia-ml-py is not installed") from err
            self._nvml = pynvml
        n = self._nvml
        try:
            n.nvmlInit()
        except n.NVMLError as err:
            raise BackendUnavailable(f"NVML unavailable: {err}") from err
        driver = _text(self._call_or(n.nvmlSystemGetDriverVersion, ""))
        # open() is retried after a failure: start from a clean device list each time.
        self._devices = [self._open_device(i) for i in range(n.nvmlDeviceGetCount())]
        self._start_event_thread()
        return DriverInfo(driver_version=driver)

    def close(self) -> None:
        """Stop the event thread and shut NVML down."""
        self._stop.set()
        if self._event_thread is not None:
            self._event_thread.join(timeout=5)
        n = self._nvml
        if n is None:
            return
        for dev in self._devices:
            if dev.gpm_prev is not None:
                self._call_or(n.nvmlGpmSampleFree, None, dev.gpm_prev)
        if self._event_set is not None:
            self._call_or(n.nvmlEventSetFree, None, self._event_set)
        self._call_or(n.nvmlShutdown, None)

    def _open_device(self, index: int) -> _Device:
        n = self._nvml
        try:
            handle = n.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(n.nvmlDeviceGetUUID(handle))
            name = _text(n.nvmlDeviceGetName(handle))
            pci = n.nvmlDeviceGetPciInfo(handle)
            bus_id = _text(getattr(pci, "busId", ""))
        except n.NVMLError as err:
            # A GPU already off the bus at start: keep its slot so it reports up=0.
            log.error("GPU %d could not be opened: %s", index, err)
            return _Device(GpuIdentity(index, f"unknown-{index}", "", ""), None)
        minor = self._call_or(n.nvmlDeviceGetMinorNumber, None, handle)
        dev = _Device(GpuIdentity(index, uuid, name, bus_id, minor), handle)
        for link in range(getattr(n, "NVML_NVLINK_MAX_LINKS", 18)):
            try:
                n.nvmlDeviceGetNvLinkState(handle, link)
            except n.NVMLError:
                continue  # link absent on this board (NOT_SUPPORTED / INVALID_ARGUMENT)
            dev.links.append(link)
        try:
            support = n.nvmlGpmQueryDeviceSupport(handle)
            dev.gpm_supported = bool(support.isSupportedDevice)
        except (n.NVMLError, AttributeError):
            dev.gpm_supported = False
        return dev

    # ------------------------------------------------------------------ XID events
    def _start_event_thread(self) -> None:
        n = self._nvml
        try:
            self._event_set = n.nvmlEventSetCreate()
        except n.NVMLError as err:
            log.warning("NVML events unavailable, XID errors will not be counted: %s", err)
            return
        registered = 0
        for dev in self._devices:
            if dev.handle is None:
                continue
            try:
                n.nvmlDeviceRegisterEvents(
                    dev.handle, n.nvmlEventTypeXidCriticalError, self._event_set
                )
                registered += 1
            except n.NVMLError as err:
                log.warning("GPU %s: XID events not supported: %s", dev.identity.uuid, err)
        if registered:
            self._event_thread = threading.Thread(
                target=self._event_loop, name="nvml-xid-events", daemon=True
            )
            self._event_thread.start()

    def _event_loop(self) -> None:
        n = self._nvml
        while not self._stop.is_set():
            try:
                data = n.nvmlEventSetWait_v2(self._event_set, self._event_timeout_ms)
            except n.NVMLError as err:
                if err.value != n.NVML_ERROR_TIMEOUT:
                    log.error("NVML event wait failed: %s", err)
                    self._stop.wait(1.0)
                continue
            if data.eventType & n.nvmlEventTypeXidCriticalError:
                uuid = self._uuid_of(data.device)
                with self._events_lock:
                    self._events.append(XidEvent(uuid=uuid, xid=int(data.eventData)))

    def _uuid_of(self, handle: Any) -> str:
        for dev in self._devices:
            if dev.handle is not None and _same_handle(dev.handle, handle):
                return dev.identity.uuid
        return _text(self._call_or(self._nvml.nvmlDeviceGetUUID, "unknown", handle))

    def drain_xid_events(self) -> list[XidEvent]:
        """XID events seen since the last call."""
        with self._events_lock:
            events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ sampling
    def sample(self) -> list[GpuSample]:
        """Read every GPU; a lost GPU is reported as lost and the others carry on."""
        out = []
        for dev in self._devices:
            if dev.handle is None:
                out.append(GpuSample(dev.identity, lost=True, error="GPU could not be opened"))
                continue
            try:
                out.append(self._sample_device(dev))
            except _GpuLost as err:
                out.append(GpuSample(dev.identity, lost=True, error=str(err)))
        return out

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call NVML; None when the field is unsupported; _GpuLost when the GPU is gone."""
        n = self._nvml
        try:
            return fn(*args)
        except n.NVMLError as err:
            if err.value in (n.NVML_ERROR_GPU_IS_LOST, getattr(n, "NVML_ERROR_RESET_REQUIRED", -1)):
                raise _GpuLost(str(err)) from err
            return None

    def _call_or(self, fn: Callable[..., Any], default: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return default

    def _sample_device(self, dev: _Device) -> GpuSample:
        n, h = self._nvml, dev.handle
        fields: dict[str, float] = {}

        def put(name: str, value: Any, scale: float = 1.0) -> None:
            if value is None or (isinstance(value, int) and value in _NVML_BLANKS):
                return
            fields[name] = float(value) * scale

        put(c.DCGM_SM_CLOCK.name, self._read(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM))
        put(c.DCGM_MEM_CLOCK.name, self._read(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM))
        put(
            c.DCGM_GPU_TEMP.name,
            self._read(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
        )
        put(c.DCGM_POWER_USAGE.name, self._read(n.nvmlDeviceGetPowerUsage, h), 1e-3)
        put(c.DCGM_TOTAL_ENERGY.name, self._read(n.nvmlDeviceGetTotalEnergyConsumption, h))
        put(
            c.DCGM_PCIE_TX_THROUGHPUT.name,
            self._read(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_TX_BYTES),
        )
        put(
            c.DCGM_PCIE_RX_THROUGHPUT.name,
            self._read(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_RX_BYTES),
        )
        put(c.DCGM_PCIE_REPLAY.name, self._read(n.nvmlDeviceGetPcieReplayCounter, h))
        util = self._read(n.nvmlDeviceGetUtilizationRates, h)
        if util is not None:
            put(c.DCGM_GPU_UTIL.name, util.gpu)
            put(c.DCGM_MEM_COPY_UTIL.name, util.memory)
        enc = self._read(n.nvmlDeviceGetEncoderUtilization, h)
        if enc is not None:
            put(c.DCGM_ENC_UTIL.name, enc[0])
        dec = self._read(n.nvmlDeviceGetDecoderUtilization, h)
        if dec is not None:
            put(c.DCGM_DEC_UTIL.name, dec[0])
        fields.update(self._memory_fields(h, with_reserved=True))
        for spec, kind, counter in (
            (c.DCGM_ECC_SBE_VOL, "NVML_MEMORY_ERROR_TYPE_CORRECTED", "NVML_VOLATILE_ECC"),
            (c.DCGM_ECC_DBE_VOL, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_VOLATILE_ECC"),
            (c.DCGM_ECC_SBE_AGG, "NVML_MEMORY_ERROR_TYPE_CORRECTED", "NVML_AGGREGATE_ECC"),
            (c.DCGM_ECC_DBE_AGG, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_AGGREGATE_ECC"),
        ):
            put(
                spec.name,
                self._read(n.nvmlDeviceGetTotalEccErrors, h, getattr(n, kind), getattr(n, counter)),
            )
        rows = self._read(n.nvmlDeviceGetRemappedRows, h)
        if rows is not None:
            corr, unc, pending, failure = rows
            put(c.DCGM_CORRECTABLE_REMAPPED_ROWS.name, corr)
            put(c.DCGM_UNCORRECTABLE_REMAPPED_ROWS.name, unc)
            put(c.DCGM_ROW_REMAP_PENDING.name, pending)
            put(c.DCGM_ROW_REMAP_FAILURE.name, failure)
        field_values = self._field_values(
            h,
            [
                (n.NVML_FI_DEV_MEMORY_TEMP, 0),
                (n.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0),
                (n.NVML_FI_DEV_PCIE_COUNT_RX_BYTES, 0),
            ],
        )
        put(c.DCGM_MEMORY_TEMP.name, field_values.get((n.NVML_FI_DEV_MEMORY_TEMP, 0)))
        fields.update(self._gpm_fields(dev))
        throttle = {}
        for reason, policy in _POLICIES.items():
            viol = self._read(n.nvmlDeviceGetViolationStatus, h, getattr(n, policy))
            if viol is not None:
                throttle[reason] = int(viol.violationTime)
        procs = self._read(n.nvmlDeviceGetComputeRunningProcesses, h) or []
        tx = field_values.get((n.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0))
        rx = field_values.get((n.NVML_FI_DEV_PCIE_COUNT_RX_BYTES, 0))
        return GpuSample(
            identity=dev.identity,
            fields=fields,
            throttle_ns=throttle,
            pcie_tx_bytes=None if tx is None else int(tx),
            pcie_rx_bytes=None if rx is None else int(rx),
            nvlinks=self._nvlinks(dev),
            mig=self._mig(h),
            pids=tuple(int(p.pid) for p in procs),
        )

    def _memory_fields(self, handle: Any, with_reserved: bool) -> dict[str, float]:
        n = self._nvml
        mem = None
        if with_reserved and hasattr(n, "nvmlMemory_v2"):
            mem = self._read(lambda: n.nvmlDeviceGetMemoryInfo(handle, version=n.nvmlMemory_v2))
        if mem is None:
            mem = self._read(n.nvmlDeviceGetMemoryInfo, handle)
        if mem is None:
            return {}
        out = {c.DCGM_FB_FREE.name: mem.free / _MIB, c.DCGM_FB_USED.name: mem.used / _MIB}
        reserved = getattr(mem, "reserved", None)
        if with_reserved and reserved is not None:
            out[c.DCGM_FB_RESERVED.name] = reserved / _MIB
        return out

    def _field_values(self, handle: Any, ids: list[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        """Batched nvmlDeviceGetFieldValues; entries with a per-field error are left out."""
        n = self._nvml
        values = self._read(n.nvmlDeviceGetFieldValues, handle, ids)
        out: dict[tuple[int, int], Any] = {}
        if values is None:
            return out
        for key, entry in zip(ids, values, strict=False):
            if entry.nvmlReturn != n.NVML_SUCCESS:
                if entry.nvmlReturn == n.NVML_ERROR_GPU_IS_LOST:
                    raise _GpuLost("GPU is lost")
                continue
            value = _field_value(n, entry)
            if value is not None:
                out[key] = value
        return out

    def _gpm_fields(self, dev: _Device) -> dict[str, float]:
        """DCGM profiling ratios from two GPM samples one sampling interval apart."""
        if not dev.gpm_supported:
            return {}
        n = self._nvml
        current = self._read(n.nvmlGpmSampleAlloc)
        if current is None or self._read(n.nvmlGpmSampleGet, dev.handle, current) is None:
            return {}
        previous, dev.gpm_prev = dev.gpm_prev, current
        if previous is None:
            return {}
        request = n.c_nvmlGpmMetricsGet_t()
        request.version = n.NVML_GPM_METRICS_GET_VERSION
        request.sample1, request.sample2 = previous, current
        names = [(getattr(n, k), v) for k, v in _GPM_METRICS.items() if hasattr(n, k)]
        request.numMetrics = len(names)
        for i, (metric_id, _) in enumerate(names):
            request.metrics[i].metricId = metric_id
        result = self._read(n.nvmlGpmMetricsGet, request)
        self._call_or(n.nvmlGpmSampleFree, None, previous)
        out: dict[str, float] = {}
        if result is None:
            return out
        for i, (_, field_name) in enumerate(names):
            metric = result.metrics[i]
            if metric.nvmlReturn == n.NVML_SUCCESS:
                out[field_name] = float(metric.value) / 100.0
        return out

    def _nvlinks(self, dev: _Device) -> tuple[NvLinkSample, ...]:
        n, h = self._nvml, dev.handle
        if not dev.links:
            return ()
        ids = []
        for link in dev.links:
            ids += [
                (n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, link),
                (n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, link),
            ]
        throughput = self._field_values(h, ids)
        out = []
        for link in dev.links:
            state = self._read(n.nvmlDeviceGetNvLinkState, h, link)
            errors = [
                self._read(n.nvmlDeviceGetNvLinkErrorCounter, h, link, getattr(n, counter))
                for counter in (
                    "NVML_NVLINK_ERROR_DL_CRC_FLIT",
                    "NVML_NVLINK_ERROR_DL_CRC_DATA",
                    "NVML_NVLINK_ERROR_DL_REPLAY",
                    "NVML_NVLINK_ERROR_DL_RECOVERY",
                )
            ]
            tx = throughput.get((n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, link))
            rx = throughput.get((n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, link))
            out.append(
                NvLinkSample(
                    link=link,
                    up=bool(state),
                    # NVML reports NVLink data throughput counters in KiB.
                    tx_bytes=None if tx is None else int(tx) * 1024,
                    rx_bytes=None if rx is None else int(rx) * 1024,
                    crc_flit_errors=errors[0],
                    crc_data_errors=errors[1],
                    replay_errors=errors[2],
                    recovery_errors=errors[3],
                )
            )
        return tuple(out)

    def _mig(self, handle: Any) -> tuple[MigSample, ...]:
        n = self._nvml
        mode = self._read(n.nvmlDeviceGetMigMode, handle)
        if mode is None or mode[0] != n.NVML_DEVICE_MIG_ENABLE:
            return ()
        out = []
        for i in range(self._read(n.nvmlDeviceGetMaxMigDeviceCount, handle) or 0):
            mig = self._read(n.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
            if mig is None:
                continue  # NOT_FOUND: slot not populated
            gi = self._read(n.nvmlDeviceGetGpuInstanceId, mig)
            ci = self._read(n.nvmlDeviceGetComputeInstanceId, mig)
            attrs = self._read(n.nvmlDeviceGetAttributes, mig)
            uuid = _text(self._read(n.nvmlDeviceGetUUID, mig) or "")
            if gi is None or attrs is None:
                continue
            # dcgm's profile names read "<slices>g.<GiB>gb", e.g. 1g.10gb on an H100 80GB.
            profile = f"{attrs.gpuInstanceSliceCount}g.{round(attrs.memorySizeMB / 1024)}gb"
            out.append(
                MigSample(
                    gpu_instance_id=int(gi),
                    compute_instance_id=int(ci or 0),
                    profile=profile,
                    uuid=uuid,
                    fields=self._memory_fields(mig, with_reserved=False),
                )
            )
        return tuple(out)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _same_handle(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(getattr(a, "value", a) == getattr(b, "value", b))
    except Exception:  # ctypes pointers compare by address only through .value
        return False


def _field_value(n: Any, entry: Any) -> float | None:
    kinds = {
        n.NVML_VALUE_TYPE_DOUBLE: "dVal",
        n.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        n.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        n.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        n.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        getattr(n, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
        getattr(n, "NVML_VALUE_TYPE_UNSIGNED_SHORT", 6): "usVal",
    }
    attr = kinds.get(entry.valueType)
    if attr is None:
        return None
    value = getattr(entry.value, attr)
    if isinstance(value, int) and value in _NVML_BLANKS:
        return None
    return float(value)
