"""The node agent: collectors, the sampling core and the HTTP exposition server."""

if __name__ != "gpuslo.collectors":  # the folder is gpuslo.collectors; one module, one name
    raise ImportError(
        "import gpuslo.collectors, not collectors: this folder is part of the gpuslo package"
    )


from gpuslo.foundation.exposition import render, wants_openmetrics

from .agent import Agent, Collector, Snapshot
from .attribution import (
    DraDevice,
    PodRef,
    PodResourcesAttributor,
    ProcessRef,
    ResourceSliceMap,
    list_pod_devices,
    list_pod_resources,
    process_ref,
)
from .errors import CollectorUnavailable
from .gpu import GpuCollector, is_blank
from .infiniband import InfinibandCollector
from .server import AgentServer

__all__ = [
    "Agent",
    "AgentServer",
    "Collector",
    "CollectorUnavailable",
    "DraDevice",
    "GpuCollector",
    "InfinibandCollector",
    "PodRef",
    "PodResourcesAttributor",
    "ProcessRef",
    "ResourceSliceMap",
    "Snapshot",
    "is_blank",
    "list_pod_devices",
    "list_pod_resources",
    "process_ref",
    "render",
    "wants_openmetrics",
]
