"""Render metric families as Prometheus text (0.0.4) or OpenMetrics 1.0.

Families are prometheus_client ``Metric`` objects. We render them ourselves because
prometheus_client's text encoder appends ``_total`` to counter HELP/TYPE lines, which would
rename dcgm-exporter's counters (``DCGM_FI_DEV_PCIE_REPLAY_COUNTER``) and break the DCGM
dashboards the naming contract promises to keep working.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from prometheus_client.core import Metric, Sample

from gpuslo.foundation.conventions import MetricSpec

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def family(spec: MetricSpec) -> Metric:
    """An empty family for a contract metric (info metrics drop their ``_info`` suffix).

    Counter names are kept whole: ours end in ``_total``, dcgm-exporter's do not."""
    name = spec.name
    if spec.type == "info":
        name = name.removesuffix("_info")
    return Metric(name, spec.help, spec.type)


def add(metric: Metric, labels: dict[str, str], value: float) -> None:
    """Append one sample under the family's sample name (``_info`` for info metrics)."""
    name = metric.name + "_info" if metric.type == "info" else metric.name
    metric.samples.append(Sample(name, labels, value, None, None))


def wants_openmetrics(accept: str | None) -> bool:
    """Content negotiation: OpenMetrics only when the scraper asks for it."""
    if not accept:
        return False
    for part in accept.split(","):
        media = part.split(";")[0].strip()
        if media == "application/openmetrics-text":
            return True
    return False


def render(families: Iterable[Metric], openmetrics: bool) -> str:
    """Exposition text for the families, without OpenMetrics' final ``# EOF``."""
    out: list[str] = []
    for metric in families:
        if not metric.samples:
            continue
        name, typ = metric.name, metric.type
        if typ == "info" and not openmetrics:
            name, typ = name + "_info", "gauge"
        elif typ == "counter" and openmetrics:
            if metric.samples[0].name.endswith("_total"):
                name = metric.samples[0].name.removesuffix("_total")
            else:
                typ = "unknown"  # an OpenMetrics counter needs _total samples
        elif typ == "counter":
            name = metric.samples[0].name
        out.append(f"# HELP {name} {_escape_help(metric.documentation)}\n")
        out.append(f"# TYPE {name} {typ}\n")
        for s in metric.samples:
            out.append(f"{s.name}{_labels(s.labels)} {format_value(s.value)}\n")
    return "".join(out)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    # Fast path: label names never need escaping, so one scan of the joined text tells
    # whether any value holds a quote, backslash or newline.
    inner = ",".join([f'{k}="{v}"' for k, v in labels.items()])
    if "\\" in inner or "\n" in inner or inner.count('"') != 2 * len(labels):
        inner = ",".join([f'{k}="{_escape_label(v)}"' for k, v in labels.items()])
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: integers without a fraction, +Inf, NaN."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
