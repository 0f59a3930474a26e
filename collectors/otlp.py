"""OTLP metrics receiver: apps instrumented with the OpenTelemetry GenAI conventions push to
the agent, which folds what they send into the same canonical series the server adapters
produce. This module holds the receiver and its OTLP/HTTP server; ``otlp_grpc`` serves
OTLP/gRPC into the same receiver, and ``otlp_process`` runs both in a process of their own.

Mapped (everything else is counted as ``ignored``):

=====================================  ==============================================
OTLP metric                            canonical series
=====================================  ==============================================
``gen_ai.server.request.duration``     ``gen_ai_server_request_duration_seconds`` and
                                       ``gen_ai_server_requests_total{outcome}`` (its count,
                                       by ``error.type``)
``gen_ai.server.time_to_first_token``  ``gen_ai_server_time_to_first_token_seconds``
``gen_ai.server.time_per_output_token`` ``gen_ai_server_time_per_output_token_seconds``
``gen_ai.client.token.usage``          ``gen_ai_server_token_usage_total{token_type}`` (the
                                       histogram's sum, or a monotonic Sum's value)
``gen_ai.client.inference.usage.       ``gen_ai_server_token_usage_total{token_type}``
input_tokens`` / ``…output_tokens``    (input / output; counters: monotonic Sums)
=====================================  ==============================================

The ``server`` label is the resource's ``gpuslo.server``, else ``gen_ai.provider.name`` (or
``gen_ai.system``, which it replaced), else ``otlp``.

Streams (metric, resource, attributes) are folded into canonical accumulators by their
increase: a delta point adds itself, a cumulative point adds its increase over the stream's
previous point (its whole value when the stream is new or restarted). The canonical series
therefore never go down, survive a sender's restart and do not care in which order several
senders export. Explicit histograms keep the sender's bucket bounds (a stream whose bounds
differ from the canonical series' is rejected, never re-bucketed); exponential histograms are
converted to the GenAI conventions' advised bounds (``ADVISED_BOUNDS``): an exponential bucket
is counted in the first explicit bucket whose bound is at or above the bucket's upper edge,
which can only move an observation up, by less than one exponential bucket's width.

Limits (docs/requests.md, "OTLP limits"): at most ``max_inflight`` exports are in hand at
once (``slot``; beyond, ``Busy``: 429 or UNAVAILABLE, retried by the sender); bodies are
bounded before they are read (declared length, chunked transfer, and after gzip, inflated as
a stream with a cap); an export is folded into a staging copy and committed whole, or answered
400 with nothing changed; pass-through names and keys are validated against the exposition
rules; counters never take NaN, infinite or negative points; streams of every temporality are
capped in total and per sender, and the exposed series by a budget of their own, apart from
the agent's cap on other collectors.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import logging
import math
import operator
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client.core import Metric
from prometheus_client.samples import Sample as PromSample

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family

from .server import BackgroundHTTPServer
from .tenants import TenantCap

log = logging.getLogger(__name__)

DELTA, CUMULATIVE = 1, 2
NO_RECORDED_VALUE = 1
DURATION, TTFT, TPOT, TOKENS = (
    c.GENAI_REQUEST_DURATION,
    c.GENAI_TIME_TO_FIRST_TOKEN,
    c.GENAI_TIME_PER_OUTPUT_TOKEN,
    c.GENAI_TOKEN_USAGE,
)
CANONICAL = {
    DURATION: c.REQUEST_DURATION,
    TTFT: c.TIME_TO_FIRST_TOKEN,
    TPOT: c.TIME_PER_OUTPUT_TOKEN,
}
ADVISED_BOUNDS = c.GENAI_ADVISED_BOUNDS
# Token counters of the current conventions: each is one token type (their cache and reasoning
# counters are subsets of these, and the per-operation histograms repeat them: both ignored).
TOKEN_COUNTERS = {c.GENAI_INPUT_TOKENS: "input", c.GENAI_OUTPUT_TOKENS: "output"}
TOKEN_METRICS = frozenset((TOKENS, *TOKEN_COUNTERS))
# Who served the request: ``gen_ai.provider.name``, or ``gen_ai.system`` which it replaced.
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
PASSTHROUGH = c.OTLP_PASSTHROUGH_PREFIX  # gauges of gpuslo's own jobs, exposed as they come
_PASSTHROUGH_HELP = {spec.name: spec.help for spec in c.DRIFT_FAMILIES}
UNITS = {"s": 1.0, "": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
DEFAULT_TENANT_KEYS = ("gpuslo.tenant", "tenant")
DEFAULT_MAX_STREAMS = 100_000
DEFAULT_MAX_STREAMS_PER_SENDER = 10_000
DEFAULT_MAX_SERIES = 20_000  # samples of canonical and pass-through series
DEFAULT_MAX_INFLIGHT = 8  # exports read, decoded or waiting to be folded in at once
RETRY_AFTER = 1  # seconds a refused (busy) sender is told to wait
SELF_SERIES = 256  # room for the receiver's own self-metrics on top of its budget
MAX_BOUNDS = 256  # explicit bucket bounds per point (the GenAI advice uses 13 to 16)
MAX_EXP_BUCKETS = 4096  # exponential buckets per point (the SDK's default is 160)
MIN_SCALE, MAX_SCALE = -10, 20  # the exponential scales OTLP defines
MAX_BODY = 16 * 2**20  # request body as sent
MAX_DECOMPRESSED = 64 * 2**20  # request body after gzip
LINGER_BYTES, LINGER_SECONDS = 256 * 1024, 1.0  # drained after a refused, unread body
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DEFAULT_STALE_AFTER = 900.0

Labels = tuple[tuple[str, str], ...]


def outcome_of(error_type: str) -> str:
    """``error.type`` -> outcome: none is success; load shedding (429, 503, ``rejected``) is
    rejected; a client going away is cancelled; anything else is an error."""
    if not error_type:
        return "success"
    low = error_type.lower().rsplit(".", 1)[-1]
    if low in ("rejected", "429", "503", "overloaded", "rejectederror"):
        return "rejected"
    if low in ("cancelled", "canceled", "cancellederror", "499", "client_closed"):
        return "cancelled"
    return "error"


def _value(any_value: Any) -> str:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return ""
    v = getattr(any_value, kind)
    if kind == "bool_value":
        return "true" if v else "false"
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return str(v)
    return str(v)


def _attrs(kvs: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    return tuple((kv.key, _value(kv.value)) for kv in kvs)


def exponential_to_explicit(
    scale: int,
    zero_count: int,
    positive_offset: int,
    positive_counts: Sequence[int],
    negative_count: int,
    bounds: Sequence[float],
    unit: float = 1.0,
) -> list[float]:
    """Cumulative (``le``) counts over ``bounds`` plus ``+Inf`` for one exponential histogram.

    Bucket ``i`` holds values in ``(base**i, base**(i+1)]`` with ``base = 2**(2**-scale)``;
    it is counted under the first bound at or above its upper edge (times ``unit``). Zero and
    negative values go in the first bucket."""
    per = [0.0] * (len(bounds) + 1)
    per[0] += zero_count + negative_count
    factor = 2.0**-scale
    for k, n in enumerate(positive_counts):
        if not n:
            continue
        exponent = (positive_offset + k + 1) * factor
        if exponent > 1000:  # beyond any float bound (and 2**exponent would overflow)
            per[-1] += n
            continue
        upper = 2.0**exponent * unit
        # A tiny relative slack: an edge that lands on a bound up to float error stays there.
        per[bisect.bisect_left(bounds, upper * (1 - 1e-9))] += n
    return _cumulate(per)


def _cumulate(per: Iterable[float]) -> list[float]:
    return list(itertools.accumulate(per, initial=0.0))[1:]


@dataclass
class _Hist:
    bounds: tuple[float, ...]
    cum: list[float]  # cumulative counts per bound, then +Inf
    sum: float
    count: float


@dataclass
class _Stream:
    start: int
    cum: list[float] | None
    sum: float
    count: float
    seen: float


class Rejected(Exception):
    """A data point that cannot be folded in (the message goes to partial_success, the
    reason labels ``gpuslo_otlp_rejected_data_points_total``)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ExportFailed(Exception):
    """An export that could not be folded in at all; nothing of it was kept."""


class NotAnExport(Exception):
    """A body that does not decode as an OTLP metrics export."""


class Busy(Exception):
    """The receiver has ``max_inflight`` exports in hand: this one is refused before it is
    read, nothing of it is kept, and the sender retries after ``RETRY_AFTER`` seconds."""


@dataclass
class _Stage:
    """What one export changes, kept apart until the whole export is folded in.

    Entries are copies of the committed ones (copy on write), so dropping the stage leaves
    the receiver exactly as it was."""

    hists: dict[tuple[str, Labels], _Hist]
    counters: dict[tuple[str, Labels], float]
    gauges: dict[tuple[str, Labels], float]
    streams: dict[tuple[str, Labels, Labels], _Stream]
    new_streams: dict[Labels, int]
    sender_series: dict[Labels, int]
    series: int = 0
    overflow: float = 0.0


def _stage() -> _Stage:
    return _Stage({}, {}, {}, {}, {}, {})


class OtlpReceiver:
    """Holds the canonical series built from OTLP exports; an agent collector."""

    name = c.COLLECTOR_OTLP

    def __init__(
        self,
        tenants: TenantCap | None = None,
        tenant_keys: Sequence[str] = DEFAULT_TENANT_KEYS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        stale_after: float = DEFAULT_STALE_AFTER,
        clock: Any = time.monotonic,
        max_streams_per_sender: int = DEFAULT_MAX_STREAMS_PER_SENDER,
        max_series_per_sender: int | None = None,
        max_series: int = DEFAULT_MAX_SERIES,
        max_body: int | None = None,
        max_decompressed: int | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
    ) -> None:
        for what, n in (
            ("max_streams", max_streams),
            ("max_streams_per_sender", max_streams_per_sender),
            ("max_series", max_series),
            ("max_inflight", max_inflight),
        ):
            if n < 1:
                raise ValueError(f"{what} must be >= 1")
        self.tenants = tenants or TenantCap()
        self.tenant_keys = tuple(tenant_keys)
        self.max_streams = max_streams
        self.max_streams_per_sender = max_streams_per_sender
        self.max_series = max_series
        # One sender may take a quarter of the budget, so it cannot starve the others.
        self.max_series_per_sender = (
            max(1, max_series // 4) if max_series_per_sender is None else max_series_per_sender
        )
        # Limits of the HTTP endpoint serving this receiver (read when the server starts).
        self.max_body = MAX_BODY if max_body is None else max_body
        self.max_decompressed = MAX_DECOMPRESSED if max_decompressed is None else max_decompressed
        self.stale_after = stale_after
        self.max_inflight = max_inflight
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._clock = clock
        self._lock = threading.Lock()
        self._hists: dict[tuple[str, Labels], _Hist] = {}
        self._counters: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[tuple[str, Labels], float] = {}
        self._streams: dict[tuple[str, Labels, Labels], _Stream] = {}
        self._per_sender: dict[Labels, int] = {}  # resource -> streams tracked
        self._sender_series: dict[Labels, int] = {}  # resource -> samples its series added
        self._series = 0  # samples the canonical and pass-through families hold
        # (metric, resource, attributes) -> canonical labels, computed once per stream
        self._labels: dict[tuple[str, Labels, Labels], tuple[Labels, bool]] = {}
        self.points = {"accepted": 0.0, "ignored": 0.0, "rejected": 0.0}
        self.rejected: dict[str, float] = {}
        self.requests: dict[str, float] = {}
        # Requests are counted under a lock of their own: answering (a refusal above all)
        # never waits for an export being folded in.
        self._count_lock = threading.Lock()
        self._requests_version = 0
        # Bumped on every change: collect() hands back the same families while nothing
        # changed, so the agent reuses their rendered text instead of rendering again.
        self._version = 0
        self._collected: tuple[tuple[int, int], list[Metric]] | None = None

    @property
    def series_budget(self) -> int:
        """What the agent lets this collector expose: its own budget plus its self-metrics
        (the agent's cap on other collectors does not apply, so the two never compete)."""
        return self.max_series + SELF_SERIES

    # ------------------------------------------------------------------ ingest
    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """One of ``max_inflight`` places for an export being read, decoded or folded in (the
        bounded ingest queue: exports wait for the fold in these places). Raises ``Busy``,
        before anything is read, when all are taken: what the receiver holds in hand is
        bounded by ``max_inflight`` bodies, and a refusal loses nothing (the sender retries)."""
        with self._inflight_lock:
            if self._inflight >= self.max_inflight:
                raise Busy(
                    f"{self._inflight} exports in hand already (at most {self.max_inflight}); "
                    f"retry in {RETRY_AFTER} s"
                )
            self._inflight += 1
        try:
            yield
        finally:
            with self._inflight_lock:
                self._inflight -= 1

    def export(self, request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        """Fold one decoded export in and build the OTLP response (what both transports send
        back): ``partial_success`` names the rejected points. Raises ``ExportFailed``."""
        rejected, message = self.ingest(request)
        response = ExportMetricsServiceResponse()
        if rejected:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = message
        return response

    def ingest(self, request: ExportMetricsServiceRequest) -> tuple[int, str]:
        """Fold one export in, whole or not at all; returns (rejected data points, first
        rejection message). Raises ``ExportFailed`` (and changes nothing) when the export
        cannot be processed."""
        rejected, message = 0, ""
        accepted = ignored = 0
        reasons: dict[str, int] = {}
        now = self._clock()
        st = _stage()
        with self._lock:
            try:
                for rm in request.resource_metrics:
                    resource = _attrs(rm.resource.attributes)
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            name = metric.name
                            kind = metric.WhichOneof("data")
                            if name.startswith(PASSTHROUGH) and kind == "gauge":
                                n = self._gauge(st, name, metric.gauge.data_points, resource, now)
                            elif name not in ADVISED_BOUNDS and name not in TOKEN_COUNTERS:
                                ignored += _count_points(metric, kind)
                                continue
                            else:
                                n = self._metric(st, name, kind, metric, resource, now)
                            accepted += n[0]
                            rejected += sum(n[1].values())
                            for why, k in n[1].items():
                                reasons[why] = reasons.get(why, 0) + k
                            if n[2] and not message:
                                message = f"{name}: {n[2]}"
            except Exception as err:  # nothing of the export is kept: a retry is exact
                log.exception("OTLP export not folded in")
                raise ExportFailed(
                    f"export not folded in, nothing changed: {type(err).__name__}: {err}"
                ) from err
            self._commit(st)
            self.points["accepted"] += accepted
            self.points["ignored"] += ignored
            self.points["rejected"] += rejected
            for why, k in reasons.items():
                self.rejected[why] = self.rejected.get(why, 0.0) + k
            self._version += 1
        if st.overflow:
            self.tenants.count_overflow(c.COLLECTOR_OTLP, st.overflow)
        return rejected, message

    def _commit(self, st: _Stage) -> None:
        self._hists.update(st.hists)
        self._counters.update(st.counters)
        self._gauges.update(st.gauges)
        self._streams.update(st.streams)
        for resource, n in st.new_streams.items():
            self._per_sender[resource] = self._per_sender.get(resource, 0) + n
        self._series += st.series
        for resource, n in st.sender_series.items():
            self._sender_series[resource] = self._sender_series.get(resource, 0) + n

    def _gauge(
        self, st: _Stage, name: str, points: Any, resource: Labels, now: float
    ) -> tuple[int, dict[str, int], str]:
        """A gpuslo gauge pushed over OTLP (drift jobs): the latest value per label set.

        Names and attribute keys have ``.`` mapped to ``_`` (the OpenTelemetry-to-Prometheus
        convention); what still breaks the exposition rules is rejected, never rewritten."""
        prom = name.replace(".", "_")
        if not _METRIC_NAME.fullmatch(prom):
            return 0, {"invalid_name": len(points)}, f"{prom!r} is not a metric name"
        accepted, bad, why = 0, dict[str, int](), ""
        for point in points:
            try:
                value = (
                    point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
                )
                attrs = _attrs(point.attributes)
                labels = tuple(sorted(_label_names(attrs)))
                key = (prom, labels)
                new = key not in st.gauges and key not in self._gauges
                if new:
                    self._reserve(st, 1, resource)
                self._touch(st, (name, resource, attrs), now)
                if new:
                    st.series += 1
                    self._charge(st, resource, 1)
                st.gauges[key] = float(value)
                accepted += 1
            except Rejected as err:
                bad[err.reason] = bad.get(err.reason, 0) + 1
                why = why or str(err)
        return accepted, bad, why

    def _metric(
        self, st: _Stage, name: str, kind: str | None, metric: Any, resource: Labels, now: float
    ) -> tuple[int, dict[str, int], str]:
        try:
            points, temporality, unit = _points_of(name, kind, metric)
        except Rejected as err:
            return 0, {err.reason: _count_points(metric, kind)}, str(err)
        accepted = 0
        bad: dict[str, int] = {}
        why = ""
        for point in points:
            if point.flags & NO_RECORDED_VALUE:
                continue
            try:
                cost = self._point(
                    st, name, kind, point, temporality == CUMULATIVE, unit, resource, now
                )
                self._charge(st, resource, cost)
                accepted += 1
            except Rejected as err:
                bad[err.reason] = bad.get(err.reason, 0) + 1
                why = why or str(err)
        return accepted, bad, why

    def _canonical(self, name: str, resource: Labels, attrs: Labels) -> tuple[Labels, bool]:
        """Canonical labels of a stream (cached) and whether its tenant overflowed."""
        key = (name, resource, attrs)
        hit = self._labels.get(key)
        if hit is not None:
            return hit
        if len(self._labels) > 2 * self.max_streams:
            self._labels.clear()  # a cache: tenants stay admitted in the TenantCap
        res, att = dict(resource), dict(attrs)
        model = (
            att.get("gen_ai.request.model")
            or att.get("gen_ai.response.model")
            or res.get("gen_ai.request.model")
            or ""
        )
        tenant = next((att[k] for k in self.tenant_keys if att.get(k)), "") or next(
            (res[k] for k in self.tenant_keys if res.get(k)), ""
        )
        capped = self.tenants.admit(tenant, c.COLLECTOR_OTLP, 0.0) if tenant else ""
        labels = {
            c.LABEL_MODEL: model,
            c.LABEL_TENANT: capped,
            c.LABEL_NAMESPACE: res.get("k8s.namespace.name", ""),
            c.LABEL_POD: res.get("k8s.pod.name", ""),
            c.LABEL_SERVER: res.get("gpuslo.server")
            or next((v for k in PROVIDER_KEYS if (v := att.get(k) or res.get(k))), "")
            or "otlp",
        }
        if name == DURATION:
            labels[c.LABEL_OUTCOME] = outcome_of(att.get("error.type", ""))
        elif name == TOKENS:
            labels[c.LABEL_TOKEN_TYPE] = att.get("gen_ai.token.type", "") or "unknown"
        elif name in TOKEN_COUNTERS:
            labels[c.LABEL_TOKEN_TYPE] = TOKEN_COUNTERS[name]
        out = (tuple(sorted((k, v) for k, v in labels.items() if v)), capped != tenant)
        self._labels[key] = out
        return out

    def _point(
        self,
        st: _Stage,
        name: str,
        kind: str | None,
        point: Any,
        cumulative: bool,
        unit: float,
        resource: Labels,
        now: float,
    ) -> int:
        """Validate one point, check every cap, then stage it (nothing is staged for a point
        that is rejected); returns the samples its new series take from the budget."""
        attrs = _attrs(point.attributes)
        labels, overflowed = self._canonical(name, resource, attrs)
        skey = (name, resource, attrs)
        if kind == "sum":  # token usage as a counter
            value = float(
                point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            )
            _check_counter(value)
            key = (c.TOKEN_USAGE_TOTAL, labels)
            cost = self._cost(st, [(key, 1)])
            self._reserve(st, cost, resource)
            dsum = self._scalar_delta(st, skey, point.start_time_unix_nano, value, cumulative, now)
            if dsum:
                self._add_counter(st, key, dsum)
            if overflowed:
                st.overflow += 1.0
            return cost
        if name == TOKENS:
            bounds: tuple[float, ...] = ()
            cum: list[float] | None = None
        elif kind == "histogram":
            if len(point.explicit_bounds) > MAX_BOUNDS:
                raise Rejected(
                    f"{len(point.explicit_bounds)} bucket bounds (at most {MAX_BOUNDS})", "buckets"
                )
            bounds = (
                tuple(b * unit for b in point.explicit_bounds)
                if unit != 1.0
                else tuple(point.explicit_bounds)
            )
            if not all(map(math.isfinite, bounds)) or any(
                a >= b for a, b in itertools.pairwise(bounds)
            ):
                raise Rejected("bucket bounds must be finite and increasing", "bounds")
            counts = point.bucket_counts
            if len(counts) != len(bounds) + 1:
                raise Rejected(
                    f"{len(counts)} bucket counts for {len(bounds)} bounds (want bounds + 1)",
                    "bounds",
                )
            if sum(counts) != point.count:
                raise Rejected(f"count {point.count} is not the sum of the bucket counts", "count")
            cum = _cumulate(counts)
        else:
            if not MIN_SCALE <= point.scale <= MAX_SCALE:
                raise Rejected(
                    f"exponential scale {point.scale} outside [{MIN_SCALE}, {MAX_SCALE}]", "scale"
                )
            n_buckets = len(point.positive.bucket_counts) + len(point.negative.bucket_counts)
            if n_buckets > MAX_EXP_BUCKETS:
                raise Rejected(
                    f"{n_buckets} exponential buckets (at most {MAX_EXP_BUCKETS})", "buckets"
                )
            held = (
                point.zero_count
                + sum(point.positive.bucket_counts)
                + sum(point.negative.bucket_counts)
            )
            if held != point.count:
                raise Rejected(f"count {point.count} is not the sum of the buckets", "count")
            bounds = ADVISED_BOUNDS[name]
            cum = exponential_to_explicit(
                point.scale,
                point.zero_count,
                point.positive.offset,
                point.positive.bucket_counts,
                sum(point.negative.bucket_counts),
                bounds,
                unit,
            )
        total = point.sum * unit if name != TOKENS else point.sum
        if not math.isfinite(total):
            raise Rejected(f"sum is {total}", "not_finite")
        if total < 0:
            raise Rejected(
                f"sum is {total}: durations and token counts are never negative", "negative"
            )
        target = CANONICAL.get(name, "")
        hist_labels = labels
        if name == DURATION:
            hist_labels = tuple(kv for kv in labels if kv[0] != c.LABEL_OUTCOME)
        hkey = (target, hist_labels)
        hist = self._hist(st, hkey) if name != TOKENS else None
        if hist is not None and hist.bounds != bounds:
            raise Rejected(
                f"bucket bounds {list(bounds)} differ from the series' {list(hist.bounds)}; "
                "re-bucketing a histogram is not exact, so this stream is not folded in",
                "bounds",
            )
        if name == TOKENS:
            needs = [((c.TOKEN_USAGE_TOTAL, labels), 1)]
        else:
            needs = [(hkey, len(bounds) + 3)]  # buckets, +Inf, count, sum: never half of it
            if name == DURATION:
                needs.append(((c.REQUESTS_TOTAL, labels), 1))
        cost = self._cost(st, needs)
        self._reserve(st, cost, resource)
        dcum, dsum, dcount = self._hist_delta(
            st, skey, point.start_time_unix_nano, cum, total, float(point.count), cumulative, now
        )
        if overflowed:
            st.overflow += 1.0
        if name == TOKENS:
            if dsum:
                self._add_counter(st, (c.TOKEN_USAGE_TOTAL, labels), dsum)
            return cost
        if name == DURATION and dcount:
            self._add_counter(st, (c.REQUESTS_TOTAL, labels), dcount)
        if hist is None:
            st.hists[hkey] = _Hist(bounds, list(dcum or [0.0] * (len(bounds) + 1)), dsum, dcount)
            st.series += len(bounds) + 3
            return cost
        if dcum:
            hist.cum = list(map(operator.add, hist.cum, dcum))
        hist.sum += dsum
        hist.count += dcount
        return cost

    # ------------------------------------------------------------------ staging
    def _hist(self, st: _Stage, key: tuple[str, Labels]) -> _Hist | None:
        hist = st.hists.get(key)
        if hist is None:
            committed = self._hists.get(key)
            if committed is not None:
                hist = st.hists[key] = dataclasses.replace(committed)
        return hist

    def _stream(self, st: _Stage, skey: tuple[str, Labels, Labels]) -> _Stream | None:
        stream = st.streams.get(skey)
        if stream is None:
            committed = self._streams.get(skey)
            if committed is not None:
                stream = st.streams[skey] = dataclasses.replace(committed)
        return stream

    def _add_counter(self, st: _Stage, key: tuple[str, Labels], delta: float) -> None:
        old = st.counters.get(key)
        if old is None:
            old = self._counters.get(key)
            if old is None:
                st.series += 1
                old = 0.0
        st.counters[key] = old + delta

    def _cost(self, st: _Stage, needs: Iterable[tuple[tuple[str, Labels], int]]) -> int:
        """Samples the series in ``needs`` would add (those that do not exist yet)."""
        n = 0
        for key, samples in needs:
            if key[0] in (c.TOKEN_USAGE_TOTAL, c.REQUESTS_TOTAL):
                if key in st.counters or key in self._counters:
                    continue
            elif key in st.hists or key in self._hists:
                continue
            n += samples
        return n

    def _reserve(self, st: _Stage, samples: int, resource: Labels) -> None:
        """Room for ``samples`` more, in the total budget and in the sender's share of it."""
        if not samples:
            return
        if self._series + st.series + samples > self.max_series:
            raise Rejected(
                f"the receiver holds {self._series + st.series} samples of its budget of "
                f"{self.max_series} (--otlp-max-series); new series are not added",
                "series_budget",
            )
        mine = self._sender_series.get(resource, 0) + st.sender_series.get(resource, 0)
        if mine + samples > self.max_series_per_sender:
            raise Rejected(
                f"this sender (resource) added {mine} samples already, its share of the "
                f"budget is {self.max_series_per_sender}; new series are not added",
                "sender_series",
            )

    def _charge(self, st: _Stage, resource: Labels, samples: int) -> None:
        if samples:
            st.sender_series[resource] = st.sender_series.get(resource, 0) + samples

    def _admit_stream(self, st: _Stage, skey: tuple[str, Labels, Labels]) -> None:
        """A new stream, of any temporality, within the total and the per-sender caps."""
        resource = skey[1]
        staged = sum(st.new_streams.values())
        if len(self._streams) + staged >= self.max_streams:
            raise Rejected(
                f"the receiver tracks {self.max_streams} streams already (--otlp-max-streams)",
                "streams",
            )
        mine = self._per_sender.get(resource, 0) + st.new_streams.get(resource, 0)
        if mine >= self.max_streams_per_sender:
            raise Rejected(
                f"this sender (resource) has {self.max_streams_per_sender} streams already "
                "(--otlp-max-streams-per-sender)",
                "sender_streams",
            )
        st.new_streams[resource] = st.new_streams.get(resource, 0) + 1

    def _touch(self, st: _Stage, skey: tuple[str, Labels, Labels], now: float) -> None:
        """A delta or gauge stream: no state to keep, but it counts against the caps and
        goes stale like the others."""
        stream = self._stream(st, skey)
        if stream is None:
            self._admit_stream(st, skey)
            st.streams[skey] = _Stream(-1, None, 0.0, 0.0, now)
        else:
            stream.seen = now

    def _hist_delta(
        self,
        st: _Stage,
        skey: tuple[str, Labels, Labels],
        start: int,
        cum: list[float] | None,
        total: float,
        count: float,
        cumulative: bool,
        now: float,
    ) -> tuple[list[float] | None, float, float]:
        if not cumulative:
            self._touch(st, skey, now)
            return cum, total, count
        prev = self._stream(st, skey)
        reset = (
            prev is None
            or prev.start != start
            or count < prev.count
            or total < prev.sum
            or (cum is not None and (prev.cum is None or len(cum) != len(prev.cum)))
        )
        if reset or prev is None:
            if prev is None:
                self._admit_stream(st, skey)
            st.streams[skey] = _Stream(start, cum, total, count, now)
            return cum, total, count
        dcum = None
        if cum is not None and prev.cum is not None:
            # Running maximum: equal to ``cum`` for explicit histograms; for an exponential
            # one whose scale shrank, earlier observations keep their finer assignment, and
            # no bucket counter ever goes down.
            cum = list(map(max, cum, prev.cum))
            dcum = list(map(operator.sub, cum, prev.cum))
        out = (dcum, total - prev.sum, count - prev.count)
        prev.cum, prev.sum, prev.count, prev.seen = cum, total, count, now
        return out

    def _scalar_delta(
        self,
        st: _Stage,
        skey: tuple[str, Labels, Labels],
        start: int,
        value: float,
        cumulative: bool,
        now: float,
    ) -> float:
        if not cumulative:
            self._touch(st, skey, now)
            return value
        prev = self._stream(st, skey)
        if prev is None or prev.start != start or value < prev.sum:
            if prev is None:
                self._admit_stream(st, skey)
            st.streams[skey] = _Stream(start, None, value, 0.0, now)
            return value
        delta = value - prev.sum
        prev.sum, prev.seen = value, now
        return delta

    # ------------------------------------------------------------------ exposition
    def collect(self) -> list[Metric]:
        """The receiver's own counters first (a cap downstream can never cut them), then the
        canonical families."""
        now = self._clock()
        with self._lock:
            stale = [k for k, s in self._streams.items() if now - s.seen > self.stale_after]
            for k in stale:  # a sender gone for good: forget its last cumulative point
                del self._streams[k]
                self._labels.pop(k, None)
                left = self._per_sender.get(k[1], 0) - 1
                if left > 0:
                    self._per_sender[k[1]] = left
                else:
                    self._per_sender.pop(k[1], None)
                    self._sender_series.pop(k[1], None)  # a gone sender's share is freed
                self._version += 1
            with self._count_lock:
                requests = dict(self.requests)
                version = (self._version, self._requests_version)
            if self._collected is not None and self._collected[0] == version:
                return self._collected[1]
            hists = [(k, h.bounds, list(h.cum), h.sum, h.count) for k, h in self._hists.items()]
            counters = list(self._counters.items())
            gauges = list(self._gauges.items())
            points = dict(self.points)
            reasons = dict(self.rejected)
            streams, series = len(self._streams), self._series
        families: dict[str, Metric] = {}
        for (name, labels), bounds, cum, total, count in sorted(hists, key=lambda h: h[0]):
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Metric(name, c.CANONICAL_HELP[name], "histogram")
            base = dict(labels)
            for bound, n in zip(bounds, cum, strict=False):
                le = repr(round(bound, 12))
                fam.samples.append(PromSample(name + "_bucket", {**base, "le": le}, n, None, None))
            fam.samples.append(
                PromSample(name + "_bucket", {**base, "le": "+Inf"}, cum[-1], None, None)
            )
            fam.samples.append(PromSample(name + "_count", base, count, None, None))
            fam.samples.append(PromSample(name + "_sum", base, total, None, None))
        for (name, labels), value in sorted(counters):
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Metric(name, c.CANONICAL_HELP[name], "counter")
            fam.samples.append(PromSample(name, dict(labels), value, None, None))
        for (name, labels), value in sorted(gauges):
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Metric(name, _PASSTHROUGH_HELP.get(name, ""), "gauge")
            fam.samples.append(PromSample(name, dict(labels), value, None, None))
        received, by_code, tracked = (
            family(c.OTLP_DATA_POINTS),
            family(c.OTLP_REQUESTS),
            family(c.OTLP_STREAMS),
        )
        dropped, held, budget = (
            family(c.OTLP_REJECTED),
            family(c.OTLP_SERIES),
            family(c.OTLP_SERIES_BUDGET),
        )
        for result, n in points.items():
            add(received, {c.LABEL_RESULT: result}, n)
        for code, n in sorted(requests.items()):
            add(by_code, {c.LABEL_CODE: code}, n)
        for why, n in sorted(reasons.items()):
            add(dropped, {c.LABEL_REASON: why}, n)
        add(tracked, {}, float(streams))
        add(held, {}, float(series))
        add(budget, {}, float(self.max_series))
        out = [received, dropped, by_code, tracked, held, budget, *families.values()]
        self._collected = (version, out)
        return out

    def count_request(self, code: int | str) -> None:
        with self._count_lock:
            self.requests[str(code)] = self.requests.get(str(code), 0.0) + 1
            self._requests_version += 1


def _points_of(name: str, kind: str | None, metric: Any) -> tuple[Any, int, float]:
    """A GenAI metric's data points, temporality and unit factor, or why it is rejected."""
    if name in TOKEN_COUNTERS and kind != "sum":
        raise Rejected(f"{kind or 'no data'}: this metric is a counter (a Sum)", "unsupported")
    if kind == "histogram":
        data = metric.histogram
    elif kind == "exponential_histogram":
        data = metric.exponential_histogram
    elif kind == "sum" and name in TOKEN_METRICS:
        data = metric.sum
        if not data.is_monotonic:
            raise Rejected("a token-usage Sum must be monotonic", "unsupported")
    else:
        raise Rejected(f"{kind or 'no data'} is not supported for this metric", "unsupported")
    if data.aggregation_temporality not in (DELTA, CUMULATIVE):
        raise Rejected("aggregation temporality unspecified", "unsupported")
    unit = 1.0 if name in TOKEN_METRICS else UNITS.get(metric.unit)
    if unit is None:
        raise Rejected(f"unit {metric.unit!r} is not a time unit (s, ms, us, ns)", "unit")
    return data.data_points, data.aggregation_temporality, unit


def _check_counter(value: float) -> None:
    """A counter's point: finite and not negative (a counter never goes NaN or down)."""
    if not math.isfinite(value):
        raise Rejected(f"value is {value}: a counter must be finite", "not_finite")
    if value < 0:
        raise Rejected(f"value is {value}: a counter never goes down", "negative")


def _label_names(attrs: Labels) -> list[tuple[str, str]]:
    """Attribute keys as label names: ``.`` becomes ``_``; anything else outside
    ``[a-zA-Z_][a-zA-Z0-9_]*``, a reserved ``__`` prefix or two keys that map to one name
    reject the point."""
    out: dict[str, str] = {}
    for key, value in attrs:
        name = key.replace(".", "_")
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise Rejected(f"attribute key {key!r} is not a label name", "invalid_name")
        if name in out:
            raise Rejected(f"attribute keys collide as label {name!r}", "invalid_name")
        out[name] = value
    return list(out.items())


def _count_points(metric: Any, kind: str | None) -> int:
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)


# --------------------------------------------------------------------------- OTLP/HTTP
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class _BodyError(Exception):
    """A request body refused before (or while) it is read: the status and the reason."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Handler(BaseHTTPRequestHandler):
    receiver: OtlpReceiver
    max_body: int = MAX_BODY
    max_decompressed: int = MAX_DECOMPRESSED
    _unread = False  # a refused body was left unread: linger before closing
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/v1/metrics":
            self.close_connection = self._unread = True  # the body, if any, is not read
            return self._status(404, f"{path}: only /v1/metrics is served here", PROTOBUF)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in (PROTOBUF, JSON):
            self.close_connection = self._unread = True
            return self._status(415, f"Content-Type {ctype!r}: send {PROTOBUF} or {JSON}", PROTOBUF)
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            self.close_connection = self._unread = True
            return self._status(415, f"Content-Encoding {encoding!r}: use gzip", ctype)
        try:
            with self.receiver.slot():
                self._export(ctype, encoding)
        except Busy as err:  # OTLP/HTTP throttling: 429 with Retry-After, the body unread
            self.close_connection = self._unread = True
            self._status(429, str(err), ctype, {"Retry-After": str(RETRY_AFTER)})

    def _export(self, ctype: str, encoding: str) -> None:
        try:
            body = self._read_body()
        except _BodyError as err:
            self.close_connection = self._unread = True  # what is left of the body stays unread
            return self._status(err.code, str(err), ctype)
        try:
            if encoding == "gzip":
                body = _gunzip(body, self.max_decompressed)
        except _BodyError as err:
            return self._status(err.code, str(err), ctype)
        try:
            response = self.receiver.export(decode(body, ctype))
        except (NotAnExport, ExportFailed) as err:
            return self._status(400, str(err), ctype)
        self._reply(200, ctype, response)

    def _read_body(self) -> bytes:
        """The body, never more than ``max_body`` bytes of it: a declared length is checked
        before anything is read, a chunked body as its chunks arrive."""
        transfer = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        declared = self.headers.get("Content-Length")
        if transfer:
            if transfer != "chunked":
                raise _BodyError(400, f"Transfer-Encoding {transfer!r}: only chunked is read")
            if declared is not None:
                raise _BodyError(400, "both Content-Length and Transfer-Encoding are set")
            return self._read_chunked()
        if declared is None:
            raise _BodyError(411, "Content-Length is required (or Transfer-Encoding: chunked)")
        text = declared.strip()
        if not text.isascii() or not text.isdigit():
            raise _BodyError(400, f"Content-Length {declared!r}: a length >= 0 is required")
        length = int(text)
        if length > self.max_body:
            raise _BodyError(413, f"body of {length} bytes is over {self.max_body} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BodyError(400, f"body ended after {len(body)} of {length} bytes")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise _BodyError(400, "chunked body: bad or missing chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            try:
                if not size_text or size_text.startswith((b"-", b"+", b"0x", b"0X")):
                    raise ValueError
                size = int(size_text, 16)
            except ValueError:
                raise _BodyError(400, f"chunked body: chunk size {size_text!r}") from None
            if size == 0:
                for _ in range(64):  # trailer fields, then the empty line
                    trailer = self.rfile.readline(8192)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
                raise _BodyError(400, "chunked body: too many trailer fields")
            total += size
            if total > self.max_body:
                raise _BodyError(413, f"chunked body over {self.max_body} bytes")
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BodyError(400, "chunked body: chunk ended early")
            parts.append(chunk)

    def finish(self) -> None:
        """After refusing a body that was not read, drain a bounded part of it (at most
        ``LINGER_BYTES`` for ``LINGER_SECONDS``) before the socket closes: closing on unread
        data resets the connection, and the client would lose the status sent to it."""
        super().finish()
        if not self._unread:
            return
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                self.connection.settimeout(wait)
                data = self.connection.recv(min(left, 65536))
                if not data:
                    break
                left -= len(data)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._status(405, "POST OTLP metrics to /v1/metrics", PROTOBUF)

    def _status(
        self, code: int, message: str, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        from google.rpc.status_pb2 import Status

        status = Status(code=_GRPC_CODES.get(code, 2), message=message)
        self._reply(code, ctype, status, headers)

    def _reply(
        self, code: int, ctype: str, message: Any, headers: dict[str, str] | None = None
    ) -> None:
        self.receiver.count_request(code)
        if ctype == JSON:
            body = json_format.MessageToJson(message, indent=None).encode()
        else:
            body = message.SerializeToString()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


_GRPC_CODES = {400: 3, 404: 12, 405: 12, 411: 3, 413: 8, 415: 3, 429: 14}


def decode(body: bytes, ctype: str = PROTOBUF) -> ExportMetricsServiceRequest:
    """An export from its protobuf (or OTLP/JSON) encoding; ``NotAnExport`` otherwise."""
    request = ExportMetricsServiceRequest()
    try:
        if ctype == JSON:
            json_format.Parse(body, request, ignore_unknown_fields=True)
        else:
            request.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as err:
        raise NotAnExport(f"not an OTLP metrics export: {err}") from None
    return request


def _gunzip(body: bytes, cap: int) -> bytes:
    """Inflate a gzip body (one member or several) as a stream, refusing it as soon as the
    output passes ``cap`` bytes: a small bomb never becomes a large buffer."""
    parts: list[bytes] = []
    total = 0
    inflater = zlib.decompressobj(wbits=31)
    data = body
    try:
        while True:
            chunk = inflater.decompress(data, cap - total + 1)
            total += len(chunk)
            if total > cap:
                raise _BodyError(413, f"body decompresses to over {cap} bytes")
            parts.append(chunk)
            data = inflater.unconsumed_tail
            if inflater.eof:
                data = inflater.unused_data
                if not data:
                    return b"".join(parts)
                inflater = zlib.decompressobj(wbits=31)
            elif not data and not chunk:
                raise _BodyError(400, "not an OTLP metrics export: the gzip stream is truncated")
    except zlib.error as err:
        raise _BodyError(400, f"not an OTLP metrics export: bad gzip: {err}") from None


class OtlpServer(BackgroundHTTPServer):
    """OTLP/HTTP on ``host:port`` (``POST /v1/metrics``, protobuf or JSON, gzip or not)."""

    thread_name = "otlp"

    def __init__(
        self,
        receiver: OtlpReceiver,
        host: str,
        port: int,
        max_body: int | None = None,
        max_decompressed: int | None = None,
    ) -> None:
        limits = {
            "receiver": receiver,
            "max_body": receiver.max_body if max_body is None else max_body,
            "max_decompressed": (
                receiver.max_decompressed if max_decompressed is None else max_decompressed
            ),
        }
        super().__init__(type("OtlpHandler", (_Handler,), limits), host, port)
