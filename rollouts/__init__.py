"""Cost-aware canary rollouts: analysis of a canary against its baseline (latency distributions,
error and rejection ratios, cost per token) and a controller that steps route weights."""

if __name__ != "gpuslo.rollouts":  # the folder is gpuslo.rollouts; one module, one name
    raise ImportError(
        "import gpuslo.rollouts, not rollouts: this folder is part of the gpuslo package"
    )

from .analysis import CheckResult, Result, Sample, analyze, cdf, quantile
from .controller import CanaryController, Status
from .prom import PrometheusSource, check_queries, queries
from .spec import CanarySpec, Check, load_spec
from .templates import argo_analysis_template, flagger_canary_metrics, flagger_metric_templates

__all__ = [
    "CanaryController",
    "CanarySpec",
    "Check",
    "CheckResult",
    "PrometheusSource",
    "Result",
    "Sample",
    "Status",
    "analyze",
    "argo_analysis_template",
    "cdf",
    "check_queries",
    "flagger_canary_metrics",
    "flagger_metric_templates",
    "load_spec",
    "quantile",
    "queries",
]
