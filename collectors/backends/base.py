"""What a GPU backend hands the GPU collector: frozen samples, behind one small protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class BackendUnavailable(Exception):
    """The hardware or its library is absent (no driver, no NVML): not a broken collector."""


@dataclass(frozen=True)
class GpuIdentity:
    """Who a GPU is: stable across samples."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    minor_number: int | None = None


@dataclass(frozen=True)
class NvLinkSample:
    """Cumulative counters of one NVLink link; None where the driver does not report it."""

    link: int
    up: bool
    tx_bytes: int | None = None
    rx_bytes: int | None = None
    crc_flit_errors: int | None = None
    crc_data_errors: int | None = None
    replay_errors: int | None = None
    recovery_errors: int | None = None


@dataclass(frozen=True)
class MigSample:
    """One MIG GPU instance: its ids, profile name and memory fields (dcgm names)."""

    gpu_instance_id: int
    compute_instance_id: int
    profile: str
    uuid: str
    fields: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one instant. ``fields`` is keyed by dcgm metric name and only holds values
    the hardware really reported (no blanks); a lost GPU has ``lost`` set and nothing else."""

    identity: GpuIdentity
    lost: bool = False
    error: str | None = None
    fields: Mapping[str, float] = field(default_factory=dict)
    # reason -> cumulative nanoseconds the clocks were held back (NVML violation time).
    throttle_ns: Mapping[str, int] = field(default_factory=dict)
    pcie_tx_bytes: int | None = None
    pcie_rx_bytes: int | None = None
    nvlinks: Sequence[NvLinkSample] = ()
    mig: Sequence[MigSample] = ()
    pids: Sequence[int] = ()


@dataclass(frozen=True)
class XidEvent:
    """An XID error the driver raised for one GPU."""

    uuid: str
    xid: int


@dataclass(frozen=True)
class DriverInfo:
    """Driver-wide facts, for ``gpuslo_gpu_info``."""

    driver_version: str = ""


@runtime_checkable
class GpuBackend(Protocol):
    """A source of GPU samples: NVML on a GPU node, the sim model elsewhere, or a recording."""

    name: str

    def open(self) -> DriverInfo:
        """Connect to the hardware; raise ``BackendUnavailable`` when it is absent."""
        ...

    def sample(self) -> list[GpuSample]:
        """Read every GPU once. A single GPU's failure is reported in its sample, not raised."""
        ...

    def drain_xid_events(self) -> list[XidEvent]:
        """XID events seen since the last call (events, not a last value)."""
        ...

    def close(self) -> None:
        """Release the hardware."""
        ...


def sample_to_dict(sample: GpuSample) -> dict[str, Any]:
    """A GpuSample as plain JSON-able data (for recorded fixtures)."""
    from dataclasses import asdict

    return asdict(sample)


def sample_from_dict(data: Mapping[str, Any]) -> GpuSample:
    """The inverse of ``sample_to_dict``."""
    return GpuSample(
        identity=GpuIdentity(**data["identity"]),
        lost=bool(data.get("lost", False)),
        error=data.get("error"),
        fields=dict(data.get("fields", {})),
        throttle_ns={k: int(v) for k, v in data.get("throttle_ns", {}).items()},
        pcie_tx_bytes=data.get("pcie_tx_bytes"),
        pcie_rx_bytes=data.get("pcie_rx_bytes"),
        nvlinks=tuple(NvLinkSample(**link) for link in data.get("nvlinks", ())),
        mig=tuple(MigSample(**mig) for mig in data.get("mig", ())),
        pids=tuple(int(pid) for pid in data.get("pids", ())),
    )
