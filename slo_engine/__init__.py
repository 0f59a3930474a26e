"""SLO specs to Prometheus rules: load and validate specs, generate rules, write them."""

from .durations import format_duration, parse_duration
from .errors import SpecError, SpecProblem
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
