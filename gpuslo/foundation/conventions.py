"""The naming contract: every metric, label and rule name gpuslo emits is spelled here once.

GPU fields reuse dcgm-exporter's names and labels so existing DCGM dashboards keep working;
what dcgm-exporter lacks or gets wrong lives under ``gpuslo_gpu_*`` with the same labels.
InfiniBand/RoCE reuses node_exporter's ``node_infiniband_*`` names and units. Request
telemetry follows the OpenTelemetry GenAI semantic conventions in Prometheus form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "info", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family: its name, Prometheus type and help text."""

    name: str
    type: MetricType
    help: str


def _g(name: str, help_: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help_)


def _c(name: str, help_: str) -> MetricSpec:
    return MetricSpec(name, "counter", help_)


# --------------------------------------------------------------------------- labels
# dcgm-exporter's label names (its README and default Kubernetes mapping).
LABEL_GPU = "gpu"
LABEL_UUID = "UUID"
LABEL_PCI_BUS_ID = "pci_bus_id"
LABEL_DEVICE = "device"
LABEL_MODEL_NAME = "modelName"
LABEL_HOSTNAME = "Hostname"
LABEL_HOSTNAME_CURRENT = "hostname"  # dcgm-exporter 4.8.3 and later
LABEL_POD = "pod"
LABEL_NAMESPACE = "namespace"
LABEL_CONTAINER = "container"
LABEL_GPU_I_ID = "GPU_I_ID"
LABEL_GPU_I_PROFILE = "GPU_I_PROFILE"
# gpuslo additions on GPU series.
LABEL_LINK = "link"
LABEL_XID = "xid"
LABEL_REASON = "reason"
LABEL_DRIVER_VERSION = "driver_version"
LABEL_PID = "pid"
LABEL_POD_UID = "pod_uid"
LABEL_CONTAINER_ID = "container_id"
LABEL_SOURCE = "source"
# node_exporter's InfiniBand labels, and ours beside them.
LABEL_IB_DEVICE = "device"
LABEL_IB_PORT = "port"
LABEL_LINK_LAYER = "link_layer"
LABEL_STATE = "state"
LABEL_PHYS_STATE = "phys_state"
LABEL_EVENT = "event"
LABEL_BOARD_ID = "board_id"
LABEL_FIRMWARE_VERSION = "firmware_version"
LABEL_HCA_TYPE = "hca_type"
# Self-metrics.
LABEL_COLLECTOR = "collector"
LABEL_VERSION = "version"
# Request telemetry and rules (later issues fill these in).
LABEL_MODEL = "model"
LABEL_TENANT = "tenant"
LABEL_SERVER = "server"
LABEL_OUTCOME = "outcome"
LABEL_TOKEN_TYPE = "token_type"
LABEL_SLO = "slo"
LABEL_SERVICE = "service"
LABEL_TIER = "tier"
LABEL_SEVERITY = "severity"

GPU_IDENTITY_LABELS: tuple[str, ...] = (
    LABEL_GPU,
    LABEL_UUID,
    LABEL_PCI_BUS_ID,
    LABEL_DEVICE,
    LABEL_MODEL_NAME,
    LABEL_HOSTNAME,
)
POD_LABELS: tuple[str, ...] = (LABEL_CONTAINER, LABEL_NAMESPACE, LABEL_POD)

# --------------------------------------------------------------------------- GPU (dcgm names)
DCGM_SM_CLOCK = _g("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).")
DCGM_MEM_CLOCK = _g("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).")
DCGM_MEMORY_TEMP = _g("DCGM_FI_DEV_MEMORY_TEMP", "Memory temperature (in C).")
DCGM_GPU_TEMP = _g("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).")
DCGM_POWER_USAGE = _g("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).")
DCGM_TOTAL_ENERGY = _c(
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ)."
)
# dcgm-exporter declares these "counter", but NVML reports a KB/s rate over a 20 ms window:
# we keep the name for dashboard compatibility and declare the truthful type.
DCGM_PCIE_TX_THROUGHPUT = _g(
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "PCIe TX throughput (in KB/s) over NVML's 20 ms window."
)
DCGM_PCIE_RX_THROUGHPUT = _g(
    "DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "PCIe RX throughput (in KB/s) over NVML's 20 ms window."
)
DCGM_PCIE_REPLAY = _c("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries.")
DCGM_GPU_UTIL = _g("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).")
DCGM_MEM_COPY_UTIL = _g("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).")
DCGM_ENC_UTIL = _g("DCGM_FI_DEV_ENC_UTIL", "Encoder utilization (in %).")
DCGM_DEC_UTIL = _g("DCGM_FI_DEV_DEC_UTIL", "Decoder utilization (in %).")
DCGM_XID_ERRORS = _g("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.")
DCGM_FB_FREE = _g("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).")
DCGM_FB_USED = _g("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).")
DCGM_FB_RESERVED = _g("DCGM_FI_DEV_FB_RESERVED", "Framebuffer memory reserved (in MiB).")
DCGM_ECC_SBE_VOL = _c(
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors."
)
DCGM_ECC_DBE_VOL = _c(
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors."
)
DCGM_ECC_SBE_AGG = _c(
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Total number of single-bit persistent ECC errors."
)
DCGM_ECC_DBE_AGG = _c(
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Total number of double-bit persistent ECC errors."
)
DCGM_UNCORRECTABLE_REMAPPED_ROWS = _c(
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for uncorrectable errors"
)
DCGM_CORRECTABLE_REMAPPED_ROWS = _c(
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for correctable errors"
)
DCGM_ROW_REMAP_FAILURE = _g("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed")
DCGM_ROW_REMAP_PENDING = _g(
    "DCGM_FI_DEV_ROW_REMAP_PENDING", "Whether a row remapping is pending (needs a GPU reset)"
)
# Profiling ratios: DCGM's DCP fields; NVML offers them through GPM on Hopper and later.
DCGM_PROF_GR_ENGINE_ACTIVE = _g(
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active."
)
DCGM_PROF_SM_ACTIVE = _g(
    "DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned."
)
DCGM_PROF_SM_OCCUPANCY = _g(
    "DCGM_FI_PROF_SM_OCCUPANCY", "The ratio of number of warps resident on an SM."
)
DCGM_PROF_PIPE_TENSOR_ACTIVE = _g(
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles the tensor (HMMA) pipe is active."
)
DCGM_PROF_DRAM_ACTIVE = _g(
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "Ratio of cycles the device memory interface is active sending or receiving data.",
)

# Per-GPU scalar fields, in exposition order. Backends report values keyed by these names.
GPU_FIELDS: tuple[MetricSpec, ...] = (
    DCGM_SM_CLOCK,
    DCGM_MEM_CLOCK,
    DCGM_MEMORY_TEMP,
    DCGM_GPU_TEMP,
    DCGM_POWER_USAGE,
    DCGM_TOTAL_ENERGY,
    DCGM_PCIE_TX_THROUGHPUT,
    DCGM_PCIE_RX_THROUGHPUT,
    DCGM_PCIE_REPLAY,
    DCGM_GPU_UTIL,
    DCGM_MEM_COPY_UTIL,
    DCGM_ENC_UTIL,
    DCGM_DEC_UTIL,
    DCGM_FB_FREE,
    DCGM_FB_USED,
    DCGM_FB_RESERVED,
    DCGM_ECC_SBE_VOL,
    DCGM_ECC_DBE_VOL,
    DCGM_ECC_SBE_AGG,
    DCGM_ECC_DBE_AGG,
    DCGM_UNCORRECTABLE_REMAPPED_ROWS,
    DCGM_CORRECTABLE_REMAPPED_ROWS,
    DCGM_ROW_REMAP_FAILURE,
    DCGM_ROW_REMAP_PENDING,
    DCGM_PROF_GR_ENGINE_ACTIVE,
    DCGM_PROF_SM_ACTIVE,
    DCGM_PROF_SM_OCCUPANCY,
    DCGM_PROF_PIPE_TENSOR_ACTIVE,
    DCGM_PROF_DRAM_ACTIVE,
)
GPU_FIELD_NAMES: frozenset[str] = frozenset(spec.name for spec in GPU_FIELDS)
# MIG instances report the memory fields under the same names, with GPU_I_* labels added.
MIG_FIELDS: tuple[MetricSpec, ...] = (DCGM_FB_FREE, DCGM_FB_USED)

# --------------------------------------------------------------------------- GPU naming generations
# dcgm-exporter serves two generations of names: "legacy" (up to 4.8.x: DCGM 3 field names in
# their historic units, host label ``Hostname`` before 4.8.3) and "current" (4.9.0 and later:
# DCGM 4.7's names in base units, host label ``hostname``). Everything that reads or writes a
# GPU series asks a ``GpuNaming`` for the name, the host label and the unit factor. The
# ``DCGM_*`` constants above are the legacy spelling and the key every backend reports by.
DcgmGeneration = Literal["legacy", "current"]
DCGM_GENERATIONS: tuple[str, ...] = ("legacy", "current")
# "legacy" stays the default: it is what dcgm-exporter up to 4.8.4 serves and what deployed DCGM
# dashboards query, and eight of the DCGM-4 names below are not yet confirmed from a primary
# source (see ``CurrentName.confirmed`` and docs/agent.md "GPU series").
DEFAULT_DCGM_GENERATION: DcgmGeneration = "legacy"
# dcgm-exporter's driver-version label (on every series it exports; gpuslo puts the driver on
# gpuslo_gpu_info instead): renamed by 4.9.0, with DCGM 4.6.1's alias (dcgm_fields.h line 3694).
LABEL_DCGM_DRIVER_VERSION = "DCGM_FI_DRIVER_VERSION"
LABEL_DCGM_DRIVER_VERSION_CURRENT = "DCGM_FI_SYSTEM_DRIVER_VERSION"


@dataclass(frozen=True)
class CurrentName:
    """A field's DCGM-4 spelling: its name, the factor from the legacy unit, and the source."""

    name: str
    factor: float = 1.0  # value in the current unit = legacy value * factor
    unit: str = ""
    source: str = ""
    # False: the name comes from a secondary source only (no DCGM 4.7 header or 4.9.0 CSV seen).
    confirmed: bool = True
    help: str = ""  # help text in the current generation, when the unit change needs rewording


# legacy field name -> its "current" spelling. Fields absent here keep their legacy name.
# --- filled by the telemetry issue (dcgm-exporter naming). Bases, most to least direct:
#   H   NVIDIA/go-dcgm pkg/dcgm/dcgm_fields.h @ b7fa315 (DCGM 4.6.1 headers): the deprecated-alias
#       block "#define OLD NEW // id" (same field ID) or an old field's "Deprecated: Use NEW"
#       note (a new base-unit field ID). Line numbers are that file's.
#   RN  dcgm-exporter 4.9.0 release notes: 23 default/profiling fields renamed to DCGM 4.7 names,
#       11 change unit (clocks MHz->Hz, energy mJ->J, utilization %->0-1 ratio, GPU memory
#       MiB->bytes, NVLink MB/s->bytes/s), DCGM_FI_DEV_FB_CAPACITY_BYTES added.
#   SEC a third-party survey of NVIDIA's DCGM 4.7.0 Field Identifiers reference (field IDs
#       1613-1616, 1625-1628): secondary, so those rows are confirmed=False until a DCGM 4.7
#       header or a 4.9.0 default-counters.csv is read.
_MIB = 1024.0 * 1024.0
_H = "DCGM 4.6.1 dcgm_fields.h"
_SEC = "unconfirmed: third-party survey of DCGM 4.7.0 Field Identifiers"
DCGM_CURRENT_NAMES: dict[str, CurrentName] = {
    DCGM_SM_CLOCK.name: CurrentName(
        "DCGM_FI_DEV_SM_CLOCK_HERTZ", 1e6, "Hz",
        f"{_H} lines 556, 3559 (Deprecated: use DCGM_FI_DEV_SM_CLOCK_HERTZ, field 1603); RN",
    ),
    DCGM_MEM_CLOCK.name: CurrentName(
        "DCGM_FI_DEV_MEMORY_CLOCK_HERTZ", 1e6, "Hz",
        f"{_H} lines 562, 3564 (Deprecated: use DCGM_FI_DEV_MEMORY_CLOCK_HERTZ, field 1604); RN",
    ),
    DCGM_MEMORY_TEMP.name: CurrentName(
        "DCGM_FI_DEV_MEMORY_TEMP_CELSIUS", 1.0, "C", f"{_H} line 3726 (deprecated alias, id 140)"
    ),
    DCGM_GPU_TEMP.name: CurrentName(
        "DCGM_FI_DEV_GPU_TEMP_CELSIUS", 1.0, "C", f"{_H} line 3727 (deprecated alias, id 150)"
    ),
    DCGM_POWER_USAGE.name: CurrentName(
        "DCGM_FI_DEV_BOARD_POWER_WATTS", 1.0, "W", f"{_H} line 3731 (deprecated alias, id 155)"
    ),
    DCGM_TOTAL_ENERGY.name: CurrentName(
        "DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL", 1e-3, "J",
        f"{_H} lines 654, 3599 (Deprecated: use DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL, field "
        "1611); RN",
    ),
    DCGM_PCIE_TX_THROUGHPUT.name: CurrentName(
        DCGM_PCIE_TX_THROUGHPUT.name, 1.0, "KB/s",
        f"{_H}: no alias (field 200 is deprecated for DCGM_FI_PROF_PCIE_TX_BYTES, which gpuslo "
        "serves as gpuslo_gpu_pcie_tx_bytes_total); not in dcgm-exporter's default set",
    ),
    DCGM_PCIE_RX_THROUGHPUT.name: CurrentName(
        DCGM_PCIE_RX_THROUGHPUT.name, 1.0, "KB/s",
        f"{_H}: no alias (field 201 is deprecated for DCGM_FI_PROF_PCIE_RX_BYTES, which gpuslo "
        "serves as gpuslo_gpu_pcie_rx_bytes_total); not in dcgm-exporter's default set",
    ),
    DCGM_PCIE_REPLAY.name: CurrentName(
        "DCGM_FI_DEV_PCIE_REPLAY_TOTAL", 1.0, "", f"{_H} line 3745 (deprecated alias, id 202)"
    ),
    DCGM_GPU_UTIL.name: CurrentName(
        "DCGM_FI_DEV_GPU_UTIL_RATIO", 0.01, "ratio",
        f"{_H} line 3746 (deprecated alias, id 203); unit: RN (the survey gives DCGM 4.7 a new "
        "double field 1613, unconfirmed)",
        help="GPU utilization, a 0-1 ratio.",
    ),
    DCGM_MEM_COPY_UTIL.name: CurrentName(
        "DCGM_FI_DEV_MEMORY_UTIL_RATIO", 0.01, "ratio", f"{_SEC} (field 1614); unit: RN",
        confirmed=False, help="Memory utilization, a 0-1 ratio.",
    ),
    DCGM_ENC_UTIL.name: CurrentName(
        "DCGM_FI_DEV_ENC_UTIL_RATIO", 0.01, "ratio", f"{_SEC} (field 1615); unit: RN",
        confirmed=False, help="Encoder utilization, a 0-1 ratio.",
    ),
    DCGM_DEC_UTIL.name: CurrentName(
        "DCGM_FI_DEV_DEC_UTIL_RATIO", 0.01, "ratio", f"{_SEC} (field 1616); unit: RN",
        confirmed=False, help="Decoder utilization, a 0-1 ratio.",
    ),
    DCGM_XID_ERRORS.name: CurrentName(
        "DCGM_FI_DEV_XID_ERROR", 1.0, "", f"{_H} line 3748 (deprecated alias, id 230)"
    ),
    DCGM_FB_FREE.name: CurrentName(
        "DCGM_FI_DEV_FB_FREE_BYTES", _MIB, "bytes",
        f"{_SEC} (field 1626); unit: RN; pattern as RN's DCGM_FI_DEV_FB_CAPACITY_BYTES",
        confirmed=False,
    ),
    DCGM_FB_USED.name: CurrentName(
        "DCGM_FI_DEV_FB_USED_BYTES", _MIB, "bytes",
        f"{_SEC} (field 1627); unit: RN; pattern as RN's DCGM_FI_DEV_FB_CAPACITY_BYTES",
        confirmed=False,
    ),
    DCGM_FB_RESERVED.name: CurrentName(
        "DCGM_FI_DEV_FB_RESERVED_BYTES", _MIB, "bytes",
        f"{_SEC} (field 1628); unit: RN; pattern as RN's DCGM_FI_DEV_FB_CAPACITY_BYTES",
        confirmed=False,
    ),
    **{
        spec.name: CurrentName(
            spec.name, 1.0, "", f"{_H}: no alias; not among RN's renames (not in its presets)"
        )
        for spec in (
            DCGM_ECC_SBE_VOL,
            DCGM_ECC_DBE_VOL,
            DCGM_ECC_SBE_AGG,
            DCGM_ECC_DBE_AGG,
            DCGM_ROW_REMAP_PENDING,
        )
    },
    DCGM_UNCORRECTABLE_REMAPPED_ROWS.name: CurrentName(
        "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL", 1.0, "",
        f"{_H} line 3761 (deprecated alias, id 393)",
    ),
    DCGM_CORRECTABLE_REMAPPED_ROWS.name: CurrentName(
        "DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL", 1.0, "",
        f"{_H} line 3762 (deprecated alias, id 394)",
    ),
    DCGM_ROW_REMAP_FAILURE.name: CurrentName(
        "DCGM_FI_DEV_ROW_REMAP_FAILED", 1.0, "", f"{_H} line 3763 (deprecated alias, id 395)"
    ),
    DCGM_PROF_GR_ENGINE_ACTIVE.name: CurrentName(
        "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO", 1.0, "ratio",
        f"{_H} line 3910 (deprecated alias, id 1001)",
    ),
    DCGM_PROF_SM_ACTIVE.name: CurrentName(
        "DCGM_FI_PROF_SM_UTIL_RATIO", 1.0, "ratio", f"{_H} line 3911 (deprecated alias, id 1002)"
    ),
    DCGM_PROF_SM_OCCUPANCY.name: CurrentName(
        "DCGM_FI_PROF_SM_OCCUPANCY_RATIO", 1.0, "ratio",
        f"{_H} line 3912 (deprecated alias, id 1003)",
    ),
    DCGM_PROF_PIPE_TENSOR_ACTIVE.name: CurrentName(
        "DCGM_FI_PROF_TENSOR_UTIL_RATIO", 1.0, "ratio",
        f"{_H} line 3913 (deprecated alias, id 1004)",
    ),
    DCGM_PROF_DRAM_ACTIVE.name: CurrentName(
        "DCGM_FI_PROF_DRAM_UTIL_RATIO", 1.0, "ratio", f"{_H} line 3914 (deprecated alias, id 1005)"
    ),
}  # fmt: skip
# --- end of the telemetry issue's table


@dataclass(frozen=True)
class GpuNaming:
    """How one dcgm-exporter generation spells GPU series (names, units, host label)."""

    generation: DcgmGeneration

    @property
    def host_label(self) -> str:
        return LABEL_HOSTNAME if self.generation == "legacy" else LABEL_HOSTNAME_CURRENT

    @property
    def driver_version_label(self) -> str:
        """dcgm-exporter's driver-version label in this generation (4.9.0 renamed it)."""
        if self.generation == "legacy":
            return LABEL_DCGM_DRIVER_VERSION
        return LABEL_DCGM_DRIVER_VERSION_CURRENT

    def name(self, field: MetricSpec) -> str:
        """The exported name of a (legacy-keyed) GPU field in this generation."""
        if self.generation == "legacy":
            return field.name
        cur = DCGM_CURRENT_NAMES.get(field.name)
        return cur.name if cur else field.name

    def factor(self, field: MetricSpec) -> float:
        """Multiply a legacy-unit value by this to get the value this generation exports."""
        if self.generation == "legacy":
            return 1.0
        cur = DCGM_CURRENT_NAMES.get(field.name)
        return cur.factor if cur else 1.0

    def spec(self, field: MetricSpec) -> MetricSpec:
        """The field as this generation exports it (name, type, help)."""
        if self.generation == "legacy":
            return field
        cur = DCGM_CURRENT_NAMES.get(field.name)
        if cur is None:
            return field
        if cur.help:
            return MetricSpec(cur.name, field.type, cur.help)
        if cur.factor == 1.0 or not cur.unit:  # same unit: the legacy help still holds
            return MetricSpec(cur.name, field.type, field.help)
        return MetricSpec(cur.name, field.type, _unit_help(field.help, cur.unit))


def _unit_help(help_: str, unit: str) -> str:
    head = help_.split(" (in ")[0].rstrip(".")
    return f"{head} (in {unit})."


def gpu_naming(generation: str = DEFAULT_DCGM_GENERATION) -> GpuNaming:
    """The naming of one generation; a clear ValueError for an unknown one."""
    if generation not in DCGM_GENERATIONS:
        raise ValueError(
            f"unknown dcgm-exporter naming {generation!r}: "
            f"choose one of {', '.join(DCGM_GENERATIONS)}"
        )
    return GpuNaming(generation)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- GPU (gpuslo)
GPU_UP = _g("gpuslo_gpu_up", "1 if the GPU answered its last sample, 0 if it is lost or failing.")
GPU_INFO = MetricSpec("gpuslo_gpu_info", "info", "GPU identity and driver version.")
GPU_XID_ERRORS = _c(
    "gpuslo_gpu_xid_errors_total", "XID errors seen through NVML events, by XID code."
)
GPU_THROTTLE_SECONDS = _c(
    "gpuslo_gpu_throttle_seconds_total",
    "Time the GPU's clocks were held below target, by reason (NVML violation time).",
)
GPU_ENERGY_JOULES = _c("gpuslo_gpu_energy_joules_total", "Energy used since driver load (J).")
GPU_PCIE_TX_BYTES = _c("gpuslo_gpu_pcie_tx_bytes_total", "Bytes transmitted over PCIe.")
GPU_PCIE_RX_BYTES = _c("gpuslo_gpu_pcie_rx_bytes_total", "Bytes received over PCIe.")
GPU_NVLINK_UP = _g("gpuslo_gpu_nvlink_up", "1 if the NVLink link is active.")
GPU_NVLINK_TX_BYTES = _c("gpuslo_gpu_nvlink_tx_bytes_total", "Data bytes sent on the NVLink link.")
GPU_NVLINK_RX_BYTES = _c(
    "gpuslo_gpu_nvlink_rx_bytes_total", "Data bytes received on the NVLink link."
)
GPU_NVLINK_CRC_FLIT_ERRORS = _c(
    "gpuslo_gpu_nvlink_crc_flit_errors_total", "NVLink flow-control CRC errors on the link."
)
GPU_NVLINK_CRC_DATA_ERRORS = _c(
    "gpuslo_gpu_nvlink_crc_data_errors_total", "NVLink data CRC errors on the link."
)
GPU_NVLINK_REPLAY_ERRORS = _c(
    "gpuslo_gpu_nvlink_replay_errors_total", "NVLink data-link replays on the link."
)
GPU_NVLINK_RECOVERY_ERRORS = _c(
    "gpuslo_gpu_nvlink_recovery_errors_total", "NVLink data-link recoveries on the link."
)
GPU_POD_INFO = MetricSpec(
    "gpuslo_gpu_pod_info", "info", "A pod holding this GPU or MIG instance (kubelet pod-resources)."
)
GPU_PROCESS_INFO = MetricSpec(
    "gpuslo_gpu_process_info", "info", "A process using this GPU, with its pod from its cgroup."
)

# Throttle reasons: NVML perf policies (nvmlPerfPolicyType_t) under stable reason names.
THROTTLE_REASONS: tuple[str, ...] = (
    "power",
    "thermal",
    "sync_boost",
    "board_limit",
    "low_utilization",
    "reliability",
)

# --------------------------------------------------------------------------- InfiniBand / RoCE
IB_PREFIX = "node_infiniband_"
# sysfs counters/<file> -> (node_exporter metric suffix, multiplier). Data counters are in
# 4-byte words in sysfs (one per lane); node_exporter and we report bytes.
IB_PORT_COUNTERS: dict[str, tuple[str, int]] = {
    "excessive_buffer_overrun_errors": ("excessive_buffer_overrun_errors_total", 1),
    "local_link_integrity_errors": ("local_link_integrity_errors_total", 1),
    "port_rcv_remote_physical_errors": ("port_receive_remote_physical_errors_total", 1),
    "port_rcv_switch_relay_errors": ("port_receive_switch_relay_errors_total", 1),
    "symbol_error": ("symbol_error_total", 1),
    "VL15_dropped": ("vl15_dropped_total", 1),
    "link_downed": ("link_downed_total", 1),
    "link_error_recovery": ("link_error_recovery_total", 1),
    "multicast_rcv_packets": ("multicast_packets_received_total", 1),
    "multicast_xmit_packets": ("multicast_packets_transmitted_total", 1),
    "port_rcv_constraint_errors": ("port_constraint_errors_received_total", 1),
    "port_xmit_constraint_errors": ("port_constraint_errors_transmitted_total", 1),
    "port_rcv_data": ("port_data_received_bytes_total", 4),
    "port_xmit_data": ("port_data_transmitted_bytes_total", 4),
    "port_rcv_discards": ("port_discards_received_total", 1),
    "port_xmit_discards": ("port_discards_transmitted_total", 1),
    "port_rcv_errors": ("port_errors_received_total", 1),
    "port_rcv_packets": ("port_packets_received_total", 1),
    "port_xmit_packets": ("port_packets_transmitted_total", 1),
    "port_xmit_wait": ("port_transmit_wait_total", 1),
    "unicast_rcv_packets": ("unicast_packets_received_total", 1),
    "unicast_xmit_packets": ("unicast_packets_transmitted_total", 1),
}
# Pre-4.5 kernels put 64-bit counters in counters_ext/.
IB_PORT_COUNTERS_EXT: dict[str, tuple[str, int]] = {
    "port_multicast_rcv_packets": ("legacy_multicast_packets_received_total", 1),
    "port_multicast_xmit_packets": ("legacy_multicast_packets_transmitted_total", 1),
    "port_rcv_data_64": ("legacy_data_received_bytes_total", 4),
    "port_xmit_data_64": ("legacy_data_transmitted_bytes_total", 4),
    "port_rcv_packets_64": ("legacy_packets_received_total", 1),
    "port_xmit_packets_64": ("legacy_packets_transmitted_total", 1),
    "port_unicast_rcv_packets": ("legacy_unicast_packets_received_total", 1),
    "port_unicast_xmit_packets": ("legacy_unicast_packets_transmitted_total", 1),
}
IB_STATE_ID = _g(
    IB_PREFIX + "state_id",
    "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, "
    "5: act defer)",
)
IB_PHYSICAL_STATE_ID = _g(
    IB_PREFIX + "physical_state_id",
    "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, "
    "4: shift, 5: link up, 6: link error recover, 7: phytest)",
)
IB_RATE = _g(IB_PREFIX + "rate_bytes_per_second", "Maximum signal transfer rate")
IB_INFO = MetricSpec(IB_PREFIX + "info", "info", "Non-numeric data from an InfiniBand device.")
IB_PORT_INFO = MetricSpec(
    "gpuslo_infiniband_port_info", "info", "InfiniBand/RoCE port link layer and states."
)
IB_HW_COUNTER = _c(
    "gpuslo_infiniband_hw_events_total",
    "Driver hw_counters of the port (RoCE congestion, out-of-buffer, retransmits), by counter.",
)

# --------------------------------------------------------------------------- agent self-metrics
COLLECTOR_DURATION = _g(
    "gpuslo_collector_duration_seconds", "How long the collector's last sample took."
)
COLLECTOR_SUCCESS = _g("gpuslo_collector_success", "1 if the collector's last sample succeeded.")
COLLECTOR_AGE = _g(
    "gpuslo_collector_last_sample_age_seconds", "Seconds since the collector's last sample."
)
COLLECTOR_SERIES = _g("gpuslo_collector_series", "Series the collector exposed in its last sample.")
COLLECTOR_DROPPED = _c(
    "gpuslo_collector_series_dropped_total", "Series dropped because the collector hit its cap."
)
AGENT_INFO = MetricSpec("gpuslo_agent_info", "info", "The gpuslo agent's version.")

# --------------------------------------------------------------------------- requests (GenAI)
REQUEST_DURATION = "gen_ai_server_request_duration_seconds"
TIME_TO_FIRST_TOKEN = "gen_ai_server_time_to_first_token_seconds"
TIME_PER_OUTPUT_TOKEN = "gen_ai_server_time_per_output_token_seconds"
REQUESTS_TOTAL = "gen_ai_server_requests_total"
TOKEN_USAGE_TOTAL = "gen_ai_server_token_usage_total"

# --------------------------------------------------------------------------- GenAI (OTLP)
# OpenTelemetry GenAI semantic conventions: the instruments servers push over OTLP, which the
# receiver folds into the canonical series above, and their advised explicit bucket bounds.
GENAI_REQUEST_DURATION = "gen_ai.server.request.duration"
GENAI_TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"
GENAI_TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"
GENAI_TOKEN_USAGE = "gen_ai.client.token.usage"
GENAI_ADVISED_BOUNDS: dict[str, tuple[float, ...]] = {
    GENAI_REQUEST_DURATION: (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ),
    GENAI_TIME_TO_FIRST_TOKEN: (
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0,
    ),
    GENAI_TIME_PER_OUTPUT_TOKEN: (
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    ),
    GENAI_TOKEN_USAGE: (
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
        67108864,
    ),
}  # fmt: skip
# gpuslo's own gauges pushed over OTLP (drift jobs) are exposed as they come.
OTLP_PASSTHROUGH_PREFIX = "gpuslo.drift."
# -- OTLP/gRPC and the 2025-2026 GenAI conventions (OTLP receiver) --------------------------
# The token counters of the GenAI conventions' inference metrics (open-telemetry/
# semantic-conventions-genai, model/gen-ai/token-metrics.yaml), folded into token usage by type.
GENAI_INPUT_TOKENS = "gen_ai.client.inference.usage.input_tokens"
GENAI_OUTPUT_TOKENS = "gen_ai.client.inference.usage.output_tokens"
OTLP_GRPC_DEFAULT_PORT = 4317

# --------------------------------------------------------------------------- drift
DRIFT_SCORE = _g("gpuslo_drift_score", "Drift test value per feature (p-value or distance).")
DRIFT_DETECTED = _g(
    "gpuslo_drift_detected", "1 when the feature drifted from its reference window."
)
DRIFT_DATASET_DETECTED = _g("gpuslo_drift_dataset_detected", "1 when enough features drifted.")
DRIFT_SHARE = _g("gpuslo_drift_share", "Share of features that drifted.")
DRIFT_FAMILIES: tuple[MetricSpec, ...] = (
    DRIFT_SCORE,
    DRIFT_DETECTED,
    DRIFT_DATASET_DETECTED,
    DRIFT_SHARE,
)
LABEL_FEATURE = "feature"
LABEL_METHOD = "method"

# --------------------------------------------------------------------------- rules
RULE_PREFIX = "gpuslo:"
# SLO rules: two base-window rates per SLO, every longer window derived from them.
SLO_BASE_WINDOW = "5m"
SLO_OBJECTIVE = f"{RULE_PREFIX}slo_objective:ratio"
SLO_BUDGET_REMAINING = f"{RULE_PREFIX}slo_error_budget_remaining:ratio"


def slo_requests(base: str) -> str:
    """The recorded request (or slice) rate of an SLO over its base window."""
    return f"{RULE_PREFIX}slo_requests:rate{base}"


def slo_errors(base: str) -> str:
    """The recorded error rate of an SLO over its base window."""
    return f"{RULE_PREFIX}slo_errors:rate{base}"


def slo_error_ratio(window: str) -> str:
    """The recorded error ratio of an SLO over a window."""
    return f"{RULE_PREFIX}slo_error_ratio:ratio_rate{window}"


def slo_burn_rate(window: str) -> str:
    """The recorded burn rate of an SLO over a window (error ratio / error budget)."""
    return f"{RULE_PREFIX}slo_burn_rate:ratio_rate{window}"


def slo_rule_group(slo: str) -> str:
    """The rule group holding one SLO's recording and alerting rules."""
    return f"gpuslo-slo-{slo}"


# Cost rules: per-second dollars, so a window's sum times the interval is its cost.
COST_GPU_PRICE = f"{RULE_PREFIX}gpu_price:dollars_per_second"
COST_POD_SHARE = f"{RULE_PREFIX}gpu_pod_share:ratio"
COST_POD_GPU = f"{RULE_PREFIX}pod_gpu_cost:dollars_per_second"
COST_POD_CPU = f"{RULE_PREFIX}pod_cpu_cost:dollars_per_second"
COST_POD = f"{RULE_PREFIX}pod_cost:dollars_per_second"
COST_MODEL = f"{RULE_PREFIX}model_cost:dollars_per_second"
COST_TENANT = f"{RULE_PREFIX}tenant_cost:dollars_per_second"
COST_FLEET = f"{RULE_PREFIX}fleet_cost:dollars_per_second"
COST_IDLE = f"{RULE_PREFIX}idle_cost:dollars_per_second"
COST_UNATTRIBUTED = f"{RULE_PREFIX}unattributed_cost:dollars_per_second"
COST_PER_1K_REQUESTS = f"{RULE_PREFIX}model_cost_per_1k_requests:dollars"
COST_PER_1M_TOKENS = f"{RULE_PREFIX}model_cost_per_1m_tokens:dollars"
COST_RULE_GROUP = "gpuslo-cost"
DRIFT_RULE_GROUP = "gpuslo-drift"
HEALTH_RULE_GROUPS = ("gpuslo-agent-health", "gpuslo-gpu-health", "gpuslo-fabric-health")

# Alert names, and where their runbooks live (one Markdown file per alert kind).
ALERT_BUDGET_BURN = "GpusloBudgetBurn"
ALERT_SLI_NO_DATA = "GpusloSLINoData"
ALERT_INPUT_DRIFT = "GpusloInputDrift"
ALERT_COLLECTOR_FAILING = "GpusloCollectorFailing"
ALERT_TARGET_DOWN = "GpusloTargetDown"
ALERT_GPU_LOST = "GpusloGpuLost"
ALERT_XID_ERRORS = "GpusloXidErrors"
ALERT_GPU_THERMAL_THROTTLING = "GpusloGpuThermalThrottling"
ALERT_NVLINK_CRC_ERRORS = "GpusloNvlinkCrcErrors"
ALERT_INFINIBAND_PORT_DOWN = "GpusloInfinibandPortDown"
RUNBOOK_BASE_URL = "https://github.com/gpuslo/gpuslo/blob/main/runbooks"

# --------------------------------------------------------------------------- collector names
COLLECTOR_GPU = "gpu"
COLLECTOR_INFINIBAND = "infiniband"
AGENT_DEFAULT_PORT = 9835

# --------------------------------------------------------------------------- remediation hook
LABEL_POLICY = "policy"
LABEL_DECISION = "decision"
LABEL_ERROR_KIND = "kind"
REMEDIATION_DECISIONS = _c(
    "gpuslo_remediation_decisions_total",
    "Decisions per policy and decision (acted, advised, skipped, duplicate, failed, reverted).",
)
REMEDIATION_WEBHOOK_SECONDS = MetricSpec(
    "gpuslo_remediation_webhook_duration_seconds",
    "histogram",
    "Time from receiving an Alertmanager webhook to answering it.",
)
REMEDIATION_ERRORS = _c(
    "gpuslo_remediation_errors_total",
    "Requests refused or failed, by kind (unauthorized, bad_request, actuator, internal).",
)
REMEDIATION_KILL_SWITCH = _g(
    "gpuslo_remediation_kill_switch", "1 while the kill switch stops every action."
)
REMEDIATION_DEFAULT_PORT = 9836

# --------------------------------------------------------------------------- inference servers
SERVER_REQUESTS_RUNNING = _g(
    "gpuslo_server_requests_running", "Requests the inference server is working on now."
)
SERVER_REQUESTS_WAITING = _g(
    "gpuslo_server_requests_waiting", "Requests queued in the inference server, not started."
)
SERVER_KV_CACHE_USAGE = _g(
    "gpuslo_server_kv_cache_usage_ratio", "Share of the server's KV cache in use (0 to 1)."
)
TARGET_UP = _g(
    "gpuslo_target_up", "1 if the agent's last scrape of the inference server target worked."
)
TARGET_SCRAPE_SECONDS = _g(
    "gpuslo_target_scrape_duration_seconds", "How long the last scrape of the target took."
)
LABEL_TARGET = "target"
COLLECTOR_SERVERS = "servers"
SERVER_DURATION_SECONDS = _c(
    "gpuslo_server_request_duration_seconds_total",
    "Cumulative request time (s) from servers that give no latency histogram (Triton's "
    "*_duration_us counters): a mean latency, never a percentile.",
)
SERVER_QUEUE_TIME = MetricSpec(
    "gpuslo_server_queue_time_seconds",
    "histogram",
    "Time requests waited in the inference server's queue before running (s).",
)
SERVER_QUEUE_SECONDS = _c(
    "gpuslo_server_queue_duration_seconds_total",
    "Cumulative queue time (s) from servers that give no queue histogram (Triton): mean only.",
)

# Help text of the canonical request series, whichever adapter (server scrape or OTLP) fills them.
CANONICAL_HELP: dict[str, str] = {
    TIME_TO_FIRST_TOKEN: "Time to first token (s), from the inference server.",
    TIME_PER_OUTPUT_TOKEN: "Time per output token (s), from the inference server.",
    REQUEST_DURATION: "End-to-end request duration (s), from the inference server.",
    REQUESTS_TOTAL: "Requests by outcome, from the inference server.",
    TOKEN_USAGE_TOTAL: "Tokens by type (input, output), from the inference server.",
    **{
        spec.name: spec.help
        for spec in (
            SERVER_REQUESTS_RUNNING,
            SERVER_REQUESTS_WAITING,
            SERVER_KV_CACHE_USAGE,
            SERVER_DURATION_SECONDS,
            SERVER_QUEUE_TIME,
            SERVER_QUEUE_SECONDS,
        )
    },
}

TARGET_SCRAPE_ERRORS = _c(
    "gpuslo_target_scrape_errors_total",
    "Failed scrapes of the target by reason: deadline (no whole answer in time), in_flight "
    "(skipped: the previous scrape still holds its connection), too_large (over the read cap), "
    "truncated (cut short of its length), http, connection, parse.",
)

# --------------------------------------------------------------------------- tenants
TENANT_OTHER = "__other__"
TENANT_OVERFLOW = _c(
    "gpuslo_tenant_overflow_total",
    'Samples relabelled tenant="__other__" because the tenant cap was reached, by source.',
)
TENANTS_TRACKED = _g(
    "gpuslo_tenants_tracked", "Distinct tenants with their own series (at most the tenant cap)."
)
TENANT_CAP = _g("gpuslo_tenant_cap", "The configured cap on distinct tenants.")

# --------------------------------------------------------------------------- OTLP receiver
COLLECTOR_OTLP = "otlp"
OTLP_DEFAULT_PORT = 4318
LABEL_RESULT = "result"
OTLP_DATA_POINTS = _c(
    "gpuslo_otlp_data_points_total",
    "OTLP data points received, by result (accepted, ignored: not a GenAI metric, rejected).",
)
OTLP_REQUESTS = _c(
    "gpuslo_otlp_requests_total",
    "OTLP export requests, by HTTP status code (OTLP/HTTP) or gRPC status name (OTLP/gRPC).",
)
LABEL_CODE = "code"
OTLP_STREAMS = _g(
    "gpuslo_otlp_streams", "OTLP streams (metric, resource, attributes) the receiver tracks."
)
OTLP_REJECTED = _c(
    "gpuslo_otlp_rejected_data_points_total",
    "OTLP data points rejected (or dropped by a cap), by reason.",
)
OTLP_SERIES = _g(
    "gpuslo_otlp_series",
    "Samples the OTLP receiver's canonical and pass-through families hold (its series budget).",
)
OTLP_SERIES_BUDGET = _g(
    "gpuslo_otlp_series_budget", "The OTLP receiver's series budget (--otlp-max-series)."
)

# --------------------------------------------------------------------------- pod discovery
DISCOVERY_SUCCESS = _g(
    "gpuslo_discovery_success", "1 if the last Kubernetes pod listing for targets worked."
)
DISCOVERY_TARGETS = _g(
    "gpuslo_discovery_targets", "Inference-server targets found by pod annotation."
)
DISCOVERY_SKIPPED = _g(
    "gpuslo_discovery_skipped_pods",
    "Pods annotated gpuslo.io/scrape=true that cannot be scraped, by reason.",
)
ANNOTATION_SCRAPE = "gpuslo.io/scrape"
ANNOTATION_PORT = "gpuslo.io/port"
ANNOTATION_PATH = "gpuslo.io/path"
ANNOTATION_SCHEME = "gpuslo.io/scheme"
ANNOTATION_SERVER = "gpuslo.io/server"
ANNOTATION_MODEL = "gpuslo.io/model"
ANNOTATION_TENANT = "gpuslo.io/tenant"

# --------------------------------------------------------------------------- cost model
# kube-state-metrics (v2) pod resource requests: what CPU pods (the fallback pool) pay for.
KSM_POD_REQUESTS = "kube_pod_container_resource_requests"

# --------------------------------------------------------------------------- digital twin
# Series only the twin emits: its pools' desired and ready replicas, the CPU fallback's share,
# and which model each replica pod serves (a real fleet's request series carry both labels).
TWIN_REPLICAS = "gpuslo_twin_pool_replicas"
TWIN_READY = "gpuslo_twin_pool_ready_replicas"
TWIN_FALLBACK_SHARE = "gpuslo_twin_fallback_share_percent"
TWIN_REPLICA_INFO = "gpuslo_twin_replica_info"
LABEL_POOL = "pool"

# --------------------------------------------------------------------------- kube-state-metrics
# (correlation on a real cluster) What the correlator reads for replica readiness and pod ->
# pool, as kube-state-metrics v2 names them (docs/metrics/workload/pod-metrics.md,
# replicaset-metrics.md, deployment-metrics.md; every one a gauge). The twin emits them too.
KSM_POD_INFO = "kube_pod_info"  # namespace, pod, uid, node, created_by_kind/_name, ...
KSM_POD_STATUS_READY = "kube_pod_status_ready"  # namespace, pod, uid, condition=true|false|unknown
KSM_POD_OWNER = "kube_pod_owner"  # namespace, pod, uid, owner_kind, owner_name, owner_is_controller
KSM_POD_LABELS = "kube_pod_labels"  # namespace, pod, uid, label_<k8s label> (allowlisted)
KSM_REPLICASET_OWNER = "kube_replicaset_owner"  # namespace, replicaset, owner_kind, owner_name, ...
KSM_DEPLOYMENT_SPEC_REPLICAS = "kube_deployment_spec_replicas"  # namespace, deployment
KSM_DEPLOYMENT_REPLICAS_READY = "kube_deployment_status_replicas_ready"
KSM_DEPLOYMENT_REPLICAS_AVAILABLE = "kube_deployment_status_replicas_available"
KSM_LABEL_PREFIX = "label_"  # kube_pod_labels: label_ + the label, non-[a-zA-Z0-9_] as _
KSM_NO_OWNER = "<none>"  # owner_kind/owner_name of an object without owner references
LABEL_CONDITION = "condition"
LABEL_UID = "uid"
LABEL_NODE = "node"
LABEL_OWNER_KIND = "owner_kind"
LABEL_OWNER_NAME = "owner_name"
LABEL_OWNER_IS_CONTROLLER = "owner_is_controller"
LABEL_REPLICASET = "replicaset"
LABEL_DEPLOYMENT = "deployment"
LABEL_CREATED_BY_KIND = "created_by_kind"
LABEL_CREATED_BY_NAME = "created_by_name"

# --------------------------------------------------------------------------- server adapters (2)
# (collectors/servers.py) Series from servers whose counters give no outcome split (Dynamo's
# per-component work handlers) and the Gateway API Inference Extension's pool gauges, labelled
# by pool (LABEL_POOL above). See docs/requests.md "Canonical series".
LABEL_ERROR_TYPE = "error_type"
SERVER_REQUESTS_RECEIVED = _c(
    "gpuslo_server_requests_received_total",
    "Requests the server received, counted on arrival whatever their outcome (Dynamo "
    "components): no availability SLI, a request rate only.",
)
SERVER_ERRORS = _c(
    "gpuslo_server_errors_total",
    "Error events by error_type as the server counts them (Dynamo components: one request may "
    "count more than once, a client's cancel included): not an outcome count.",
)
SERVER_CANCELLATIONS = _c(
    "gpuslo_server_cancellations_total", "Requests the server saw cancelled (Dynamo components)."
)
POOL_KV_CACHE_USAGE = _g(
    "gpuslo_pool_kv_cache_usage_ratio",
    "Mean KV-cache use over an inference pool's model servers (0 to 1), from its endpoint picker.",
)
POOL_QUEUE_AVERAGE = _g(
    "gpuslo_pool_queue_size_average",
    "Mean requests queued per model server of an inference pool, from its endpoint picker.",
)
POOL_READY_PODS = _g(
    "gpuslo_pool_ready_pods",
    "Ready model-server pods of an inference pool, from its endpoint picker.",
)
CANONICAL_HELP.update(
    {
        spec.name: spec.help
        for spec in (
            SERVER_REQUESTS_RECEIVED,
            SERVER_ERRORS,
            SERVER_CANCELLATIONS,
            POOL_KV_CACHE_USAGE,
            POOL_QUEUE_AVERAGE,
            POOL_READY_PODS,
        )
    }
)

# --------------------------------------------------------------------------- GPU -> pod attribution
# (the attribution helper's block: kubelet pod-resources, DRA ResourceSlices; docs/attribution.md)
COLLECTOR_ATTRIBUTION = "attribution"
SOURCE_DEVICE_PLUGIN = "device_plugin"
SOURCE_DRA = "dra"
ATTRIBUTION_KUBELET_SUCCESS = _g(
    "gpuslo_attribution_kubelet_success",
    "1 if the last kubelet pod-resources List answered (0: it failed, or there is no socket).",
)
ATTRIBUTION_DEVICES = _g(
    "gpuslo_attribution_devices",
    "GPU and MIG devices attributed to pods, by source (device_plugin, dra).",
)
ATTRIBUTION_UNRESOLVED = _g(
    "gpuslo_attribution_unresolved_devices",
    "Devices allocated through DRA that name no GPU UUID in the node's ResourceSlices, by reason.",
)
ATTRIBUTION_SLICES_SUCCESS = _g(
    "gpuslo_attribution_resourceslices_success",
    "1 if the last ResourceSlice listing worked (or the cluster serves no resource.k8s.io/v1).",
)
ATTRIBUTION_SLICE_DEVICES = _g(
    "gpuslo_attribution_resourceslice_devices",
    "Devices of the configured DRA drivers with a UUID in this node's ResourceSlices.",
)
ATTRIBUTION_SLICE_FAILURES = _c(
    "gpuslo_attribution_resourceslice_list_failures_total",
    "ResourceSlice listings that failed; the last good device map is kept.",
)

# --------------------------------------------------------------------------- tenant plane
# (gpuslo.tenants: budget alerts, the proxy's header and service defaults)
ALERT_TENANT_BUDGET_FORECAST = "GpusloTenantBudgetForecast"
RULE_GROUP_TENANT_BUDGETS = "gpuslo-tenant-budgets"
SERVICE_TENANT_BUDGET = "tenant-budget"
TENANTS_DEFAULT_PORT = 9837
HEADER_TENANT = "X-Gpuslo-Tenant"
HEADER_SCOPE_ORG_ID = "X-Scope-OrgID"  # Mimir / Cortex multi-tenancy


# --- SLO rules at fleet scale (hourly partial sums, split groups) ---------------------------
def slo_hour_sum(series: str) -> str:
    """A recorded base rate summed over the clock hour that just ended (one sample an hour)."""
    return f"{series}_sum_hour"


def slo_hour_to_date(series: str) -> str:
    """A recorded base rate summed since the current clock hour began."""
    return f"{series}_sum_hour_to_date"


def slo_block_sum(series: str) -> str:
    """A recorded base rate summed over the five-minute block that just ended (one sample
    every five minutes): the hourly and hour-to-date sums add these up."""
    return f"{series}_sum_5m_block"


def slo_rule_group_part(slo: str, part: str) -> str:
    """A further rule group of one SLO (``dashboard``, ``sli``): what no alert reads."""
    return f"gpuslo-slo-{slo}-{part}"


# --- live incidents (gpuslo.remediation.incidents: every page explained) --------------------
LABEL_NOTIFY_TARGET = "target"  # chat | webhook | grafana
LABEL_NOTIFY_OUTCOME = "outcome"  # sent | failed
INCIDENT_EXPLANATIONS_SKIPPED = _c(
    "gpuslo_incident_explanations_skipped_total",
    "Pages whose explanation was skipped because the bounded explanation queue was full.",
)
INCIDENT_EXPLANATION_SECONDS = MetricSpec(
    "gpuslo_incident_explanation_seconds",
    "histogram",
    "Time from receiving a page to its stored explanation.",
)
INCIDENT_QUEUE_DEPTH = _g(
    "gpuslo_incident_explanation_queue_depth", "Pages waiting for an explanation worker."
)
INCIDENT_NOTIFICATIONS = _c(
    "gpuslo_incident_notifications_total",
    "Incident notifications by target (chat, webhook, grafana) and outcome (sent, failed).",
)
INCIDENT_ANNOTATION_URL = "incident_url"  # the alert annotation linking to the incident page
INCIDENT_OPEN_PATH = "/incidents/open"  # + ?slo=&service=&tier=: the newest matching incident


def incident_link(external_url: str, slo: str, service: str, tier: str) -> str:
    """The ``incident_url`` annotation of a generated alert: the hook's page for the newest
    incident of this SLO and tier (the rule cannot know Alertmanager's fingerprint)."""
    from urllib.parse import urlencode

    query = urlencode({LABEL_SLO: slo, LABEL_SERVICE: service, LABEL_TIER: tier})
    return f"{external_url.rstrip('/')}{INCIDENT_OPEN_PATH}?{query}"


# --- GPU process info on attributed nodes (collectors/gpu.py: bounded per GPU) ---------------
GPU_PROCESS_CAP = 32  # processes listed per GPU in gpuslo_gpu_process_info, at most
GPU_PROCESSES_DROPPED = _c(
    "gpuslo_gpu_processes_dropped_total",
    "Processes on this GPU left out of gpuslo_gpu_process_info (over the per-GPU cap), "
    "summed over samples.",
)
