"""The fleet digital twin: nodes and GPUs, serving pools, tenants' traffic and faults on a
timeline, run offline (OpenMetrics history with ground truth) or live (real agents)."""

if __name__ != "gpuslo.simulator":  # the folder is gpuslo.simulator; one module, one name
    raise ImportError(
        "import gpuslo.simulator, not simulator: this folder is part of the gpuslo package"
    )

from .fabric_sysfs import IbPort, write_infiniband_tree
from .fleet import Fleet
from .ksm import ksm_families
from .live import LiveTwin
from .offline import run_offline
from .scenario import Scenario, load_scenario, resolve_scenario, shipped_scenarios

__all__ = [
    "Fleet",
    "IbPort",
    "LiveTwin",
    "Scenario",
    "ksm_families",
    "load_scenario",
    "resolve_scenario",
    "run_offline",
    "shipped_scenarios",
    "write_infiniband_tree",
]
