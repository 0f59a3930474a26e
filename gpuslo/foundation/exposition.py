"""Render metric families as Prometheus text (0.0.4) or OpenMetrics 1.0, and write families
sampled over time as timestamped OpenMetrics history (``History``).

Families are prometheus_client ``Metric`` objects. We render them ourselves because
prometheus_client's text encoder appends ``_total`` to counter HELP/TYPE lines, which would
rename dcgm-exporter's counters (``DCGM_FI_DEV_PCIE_REPLAY_COUNTER``) and break the DCGM
dashboards the naming contract promises to keep working.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import TextIO

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


# Sample(name, labels, value) without the NamedTuple's keyword handling, its other fields
# (timestamp, exemplar, ...) None: the agents build thousands of samples a second.
_new_sample = tuple.__new__
_SAMPLE_REST = (None,) * (len(Sample._fields) - 3)


def add(metric: Metric, labels: dict[str, str], value: float, suffix: str = "") -> None:
    """Append one sample under the family's sample name (``_info`` for info metrics; a
    histogram's ``_bucket``, ``_count`` and ``_sum`` samples name their ``suffix``)."""
    name = metric.name + "_info" if metric.type == "info" else metric.name + suffix
    metric.samples.append(_new_sample(Sample, (name, labels, value, *_SAMPLE_REST)))


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


def sample_line(name: str, labels: Mapping[str, str], value: float) -> str:
    """One sample as an exposition line (label values escaped), without its newline."""
    return f"{name}{_labels(labels)} {format_value(value)}"


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
    v = float(value)
    if v.is_integer():  # never true for infinities and NaN
        return str(int(v)) if -1e15 < v < 1e15 else repr(v)
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(v)


# OpenMetrics family types the history writes as they are; histograms and summaries are split
# into their plain series, anything else is "unknown".
_HISTORY_TYPES = frozenset({"gauge", "counter", "info", "stateset", "unknown"})
_SPLIT_TYPES = frozenset({"histogram", "gaugehistogram", "summary"})
_SeriesKey = tuple[str, tuple[str, ...], tuple[str, ...]]  # sample name, label names, values


class _Family:
    __slots__ = ("help", "name", "series", "type")

    def __init__(self, name: str, typ: str, help_: str) -> None:
        self.name, self.type, self.help = name, typ, help_
        # series -> (values, index of each value's timestamp)
        self.series: dict[_SeriesKey, tuple[array[float], array[int]]] = {}


class History:
    """Families sampled over time, written as one OpenMetrics text with a timestamp (in
    seconds) on every sample: what ``promtool tsdb create-blocks-from openmetrics`` reads.

    ``add`` takes each step's families; ``write`` puts each family's series together under
    its ``# HELP`` and ``# TYPE`` lines and each series' samples in time order, each at its
    own timestamp, so a series may appear late or come and go (a pod's replica, an XID
    counter). Histograms and summaries are written as their plain ``_bucket``, ``_count`` and
    ``_sum`` series (untyped families): the history lays out series over time rather than a
    histogram's points, and Prometheus stores both the same. Label values are escaped.
    Samples are kept in compact arrays until written."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._times: list[float] = []

    @property
    def series(self) -> int:
        """Distinct series seen so far."""
        return sum(len(f.series) for f in self._families.values())

    def _family(self, metric: Metric, sample_name: str) -> _Family:
        typ = metric.type
        if typ in _SPLIT_TYPES:
            key, name, typ = sample_name, sample_name, "unknown"
        else:
            key = name = metric.name
            if typ == "counter":
                if sample_name.endswith("_total"):
                    name = sample_name.removesuffix("_total")
                else:
                    typ = "unknown"  # an OpenMetrics counter needs _total samples
            elif typ not in _HISTORY_TYPES:
                typ = "unknown"
        fam = self._families.get(key)
        if fam is None:
            fam = self._families[key] = _Family(name, typ, metric.documentation)
        return fam

    def add(self, families: Iterable[Metric], timestamp: float) -> None:
        """Record every sample of the families at ``timestamp`` (steps in time order)."""
        times = self._times
        if not times or times[-1] != timestamp:
            times.append(timestamp)
        at = len(times) - 1
        known = self._families
        for metric in families:
            samples = metric.samples
            if not samples:
                continue
            split = metric.type in _SPLIT_TYPES
            fam = None if split else known.get(metric.name)
            for s in samples:
                if fam is None or split:
                    fam = known.get(s.name) if split else None
                    fam = fam or self._family(metric, s.name)
                labels = s.labels
                key = (s.name, tuple(labels), tuple(labels.values()))
                rec = fam.series.get(key)
                if rec is None:
                    rec = fam.series[key] = (array("d"), array("I"))
                rec[0].append(s.value)
                rec[1].append(at)

    def write(self, out: TextIO) -> int:
        """Write the OpenMetrics text, ``# EOF`` last; returns the samples written."""
        stamps = [format_value(t) for t in self._times]
        fmt = format_value
        written = 0
        for fam in self._families.values():
            if not fam.series:
                continue
            if fam.help:
                out.write(f"# HELP {fam.name} {_escape_label(fam.help)}\n")
            out.write(f"# TYPE {fam.name} {fam.type}\n")
            for (name, keys, values_of), (values, ats) in fam.series.items():
                head = f"{name}{_labels(dict(zip(keys, values_of, strict=True)))} "
                # Integral values (most of them) without a call to format_value.
                lines = [
                    f"{head}{int(v) if v.is_integer() and -1e15 < v < 1e15 else fmt(v)} "
                    f"{stamps[i]}\n"
                    for v, i in zip(values, ats, strict=True)
                ]
                out.write("".join(lines))
                written += len(values)
        out.write("# EOF\n")
        return written
