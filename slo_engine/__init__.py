"""SLO specs to Prometheus rules: load and validate specs, generate rules, write them."""

if __name__ != "gpuslo.slo_engine":  # the folder is gpuslo.slo_engine; one module, one name
    raise ImportError(
        "import gpuslo.slo_engine, not slo_engine: this folder is part of the gpuslo package"
    )


from gpuslo.foundation.durations import format_duration, parse_duration
from gpuslo.foundation.errors import SpecError, SpecProblem

from .model import SLO, AlertTier
from .output import write_outputs
from .rules import alert_rules, inhibit_rules, recording_rules, rule_groups
from .specs import load_specs
from .windows import load_tiers

__all__ = [
    "SLO",
    "AlertTier",
    "SpecError",
    "SpecProblem",
    "alert_rules",
    "format_duration",
    "inhibit_rules",
    "load_specs",
    "load_tiers",
    "parse_duration",
    "recording_rules",
    "rule_groups",
    "write_outputs",
]
