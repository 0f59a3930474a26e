"""GPU backends behind one protocol: ``nvml`` (real GPUs), ``sim`` (model), ``fixture``."""

from .base import (
    BackendUnavailable,
    DriverInfo,
    GpuBackend,
    GpuIdentity,
    GpuSample,
    MigSample,
    NvLinkSample,
    XidEvent,
)
from .fixture import FixtureBackend, write_recording
from .nvml import NvmlBackend
from .sim import PROFILES, SimBackend

__all__ = [
    "PROFILES",
    "BackendUnavailable",
    "DriverInfo",
    "FixtureBackend",
    "GpuBackend",
    "GpuIdentity",
    "GpuSample",
    "MigSample",
    "NvLinkSample",
    "NvmlBackend",
    "SimBackend",
    "XidEvent",
    "write_recording",
]
