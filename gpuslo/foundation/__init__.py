"""The ground floor every gpuslo package may import, and which imports none of them: the naming
contract, the spec-file kit (YAML positions, durations, strict models, typed problems), PromQL
text helpers, the Prometheus HTTP client, the throwaway Prometheus/Alertmanager (``promlab``),
the one exposition writer, the one HTML report and access to shipped files."""

from . import conventions
from .durations import format_duration, format_range, parse_duration
from .errors import SpecError, SpecProblem
from .resources import data_names, data_path

__all__ = [
    "SpecError",
    "SpecProblem",
    "conventions",
    "data_names",
    "data_path",
    "format_duration",
    "format_range",
    "parse_duration",
]
