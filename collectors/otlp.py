"""OTLP/HTTP metrics receiver: apps instrumented with the OpenTelemetry GenAI conventions push
to the agent, which folds what they send into the same canonical series the server adapters
produce.

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
=====================================  ==============================================

Streams (metric, resource, attributes) are folded into canonical accumulators by their
increase: a delta point adds itself, a cumulative point adds its increase over the stream's
previous point (its whole value when the stream is new or restarted). The canonical series
therefore never go down, survive a sender's restart and do not care in which order several
senders export. Explicit histograms keep the sender's bucket bounds (a stream whose bounds
differ from the canonical series' is rejected, never re-bucketed); exponential histograms are
converted to the GenAI conventions' advised bounds (``ADVISED_BOUNDS``): an exponential bucket
is counted in the first explicit bucket whose bound is at or above the bucket's upper edge,
which can only move an observation up, by less than one exponential bucket's width.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import logging
import math
import operator
import threading
import time
from collections.abc import Iterable, Sequence
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
PASSTHROUGH = c.OTLP_PASSTHROUGH_PREFIX  # gauges of gpuslo's own jobs, exposed as they come
_PASSTHROUGH_HELP = {spec.name: spec.help for spec in c.DRIFT_FAMILIES}
UNITS = {"s": 1.0, "": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
DEFAULT_TENANT_KEYS = ("gpuslo.tenant", "tenant")
DEFAULT_MAX_STREAMS = 100_000
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
        upper = 2.0 ** ((positive_offset + k + 1) * factor) * unit
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
    """A data point that cannot be folded in (the message goes to partial_success)."""


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
    ) -> None:
        self.tenants = tenants or TenantCap()
        self.tenant_keys = tuple(tenant_keys)
        self.max_streams = max_streams
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._hists: dict[tuple[str, Labels], _Hist] = {}
        self._counters: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[tuple[str, Labels], float] = {}
        self._streams: dict[tuple[str, Labels, Labels], _Stream] = {}
        # (metric, resource, attributes) -> canonical labels, computed once per stream
        self._labels: dict[tuple[str, Labels, Labels], tuple[Labels, bool]] = {}
        self.points = {"accepted": 0.0, "ignored": 0.0, "rejected": 0.0}
        self.requests: dict[str, float] = {}
        # Bumped on every change: collect() hands back the same families while nothing
        # changed, so the agent reuses their rendered text instead of rendering again.
        self._version = 0
        self._collected: tuple[int, list[Metric]] | None = None

    # ------------------------------------------------------------------ ingest
    def ingest(self, request: ExportMetricsServiceRequest) -> tuple[int, str]:
        """Fold one export in; returns (rejected data points, first rejection message)."""
        rejected, message = 0, ""
        accepted = ignored = 0
        now = self._clock()
        with self._lock:
            for rm in request.resource_metrics:
                resource = _attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        name = metric.name
                        kind = metric.WhichOneof("data")
                        if name.startswith(PASSTHROUGH) and kind == "gauge":
                            accepted += self._gauge(name, metric.gauge.data_points)
                            continue
                        if name not in ADVISED_BOUNDS:
                            ignored += _count_points(metric, kind)
                            continue
                        try:
                            n = self._metric(name, kind, metric, resource, now)
                        except Rejected as err:
                            n_bad = _count_points(metric, kind)
                            rejected += n_bad
                            message = message or f"{name}: {err}"
                            continue
                        accepted += n[0]
                        rejected += n[1]
                        if n[1] and not message:
                            message = f"{name}: {n[2]}"
            self.points["accepted"] += accepted
            self.points["ignored"] += ignored
            self.points["rejected"] += rejected
            self._version += 1
        return rejected, message

    def _gauge(self, name: str, points: Any) -> int:
        """A gpuslo gauge pushed over OTLP (drift jobs): the latest value per label set."""
        prom = name.replace(".", "_")
        for point in points:
            value = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
            labels = tuple(sorted(_attrs(point.attributes)))
            self._gauges[(prom, labels)] = float(value)
        return len(points)

    def _metric(
        self, name: str, kind: str | None, metric: Any, resource: Labels, now: float
    ) -> tuple[int, int, str]:
        if kind == "histogram":
            data = metric.histogram
            points, temporality = data.data_points, data.aggregation_temporality
        elif kind == "exponential_histogram":
            data = metric.exponential_histogram
            points, temporality = data.data_points, data.aggregation_temporality
        elif kind == "sum" and name == TOKENS:
            data = metric.sum
            if not data.is_monotonic:
                raise Rejected("a token-usage Sum must be monotonic")
            points, temporality = data.data_points, data.aggregation_temporality
        else:
            raise Rejected(f"{kind or 'no data'} is not supported for this metric")
        if temporality not in (DELTA, CUMULATIVE):
            raise Rejected("aggregation temporality unspecified")
        unit = 1.0 if name == TOKENS else UNITS.get(metric.unit)
        if unit is None:
            raise Rejected(f"unit {metric.unit!r} is not a time unit (s, ms, us, ns)")
        accepted = bad = 0
        why = ""
        for point in points:
            if point.flags & NO_RECORDED_VALUE:
                continue
            try:
                self._point(name, kind, point, temporality == CUMULATIVE, unit, resource, now)
                accepted += 1
            except Rejected as err:
                bad += 1
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
            c.LABEL_SERVER: res.get("gpuslo.server") or "otlp",
        }
        if name == DURATION:
            labels[c.LABEL_OUTCOME] = outcome_of(att.get("error.type", ""))
        elif name == TOKENS:
            labels[c.LABEL_TOKEN_TYPE] = att.get("gen_ai.token.type", "") or "unknown"
        out = (tuple(sorted((k, v) for k, v in labels.items() if v)), capped != tenant)
        self._labels[key] = out
        return out

    def _point(
        self,
        name: str,
        kind: str | None,
        point: Any,
        cumulative: bool,
        unit: float,
        resource: Labels,
        now: float,
    ) -> None:
        attrs = _attrs(point.attributes)
        labels, overflowed = self._canonical(name, resource, attrs)
        skey = (name, resource, attrs)
        if kind == "sum":  # token usage as a counter
            value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            dsum = self._scalar_delta(skey, point.start_time_unix_nano, value, cumulative, now)
            if dsum:
                key = (c.TOKEN_USAGE_TOTAL, labels)
                self._counters[key] = self._counters.get(key, 0.0) + dsum
            if overflowed:
                self.tenants.count_overflow(c.COLLECTOR_OTLP, 1.0)
            return
        if name == TOKENS:
            bounds: tuple[float, ...] = ()
            cum: list[float] | None = None
        elif kind == "histogram":
            bounds = (
                tuple(b * unit for b in point.explicit_bounds)
                if unit != 1.0
                else tuple(point.explicit_bounds)
            )
            counts = point.bucket_counts
            if len(counts) != len(bounds) + 1:
                raise Rejected(
                    f"{len(counts)} bucket counts for {len(bounds)} bounds (want bounds + 1)"
                )
            cum = _cumulate(counts)
        else:
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
            raise Rejected(f"sum is {total}")
        target = CANONICAL.get(name, "")
        hist_labels = labels
        if name == DURATION:
            hist_labels = tuple(kv for kv in labels if kv[0] != c.LABEL_OUTCOME)
        hkey = (target, hist_labels)
        hist = self._hists.get(hkey)
        if hist is not None and hist.bounds != bounds:
            raise Rejected(
                f"bucket bounds {list(bounds)} differ from the series' {list(hist.bounds)}; "
                "re-bucketing a histogram is not exact, so this stream is not folded in"
            )
        dcum, dsum, dcount = self._hist_delta(
            skey, point.start_time_unix_nano, cum, total, float(point.count), cumulative, now
        )
        if overflowed:
            self.tenants.count_overflow(c.COLLECTOR_OTLP, 1.0)
        if name == TOKENS:
            if dsum:
                key = (c.TOKEN_USAGE_TOTAL, labels)
                self._counters[key] = self._counters.get(key, 0.0) + dsum
            return
        if name == DURATION and dcount:
            key = (c.REQUESTS_TOTAL, labels)
            self._counters[key] = self._counters.get(key, 0.0) + dcount
        if hist is None:
            self._hists[hkey] = _Hist(bounds, list(dcum or [0.0]), dsum, dcount)
            return
        if dcum:
            hist.cum = list(map(operator.add, hist.cum, dcum))
        hist.sum += dsum
        hist.count += dcount

    def _hist_delta(
        self,
        skey: tuple[str, Labels, Labels],
        start: int,
        cum: list[float] | None,
        total: float,
        count: float,
        cumulative: bool,
        now: float,
    ) -> tuple[list[float] | None, float, float]:
        if not cumulative:
            return cum, total, count
        prev = self._streams.get(skey)
        reset = prev is None or prev.start != start or count < prev.count
        if not reset and prev is not None and cum is not None and prev.cum is not None:
            reset = len(cum) != len(prev.cum)
        if reset or prev is None:
            if prev is None:
                self._admit_stream()
            self._streams[skey] = _Stream(start, cum, total, count, now)
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
        skey: tuple[str, Labels, Labels],
        start: int,
        value: float,
        cumulative: bool,
        now: float,
    ) -> float:
        if not cumulative:
            return value
        prev = self._streams.get(skey)
        if prev is None or prev.start != start or value < prev.sum:
            if prev is None:
                self._admit_stream()
            self._streams[skey] = _Stream(start, None, value, 0.0, now)
            return value
        delta = value - prev.sum
        prev.sum, prev.seen = value, now
        return delta

    def _admit_stream(self) -> None:
        if len(self._streams) >= self.max_streams:
            raise Rejected(
                f"the receiver tracks {self.max_streams} streams already (--otlp-max-streams)"
            )

    # ------------------------------------------------------------------ exposition
    def collect(self) -> list[Metric]:
        """The canonical families, plus the receiver's own counters."""
        now = self._clock()
        with self._lock:
            stale = [k for k, s in self._streams.items() if now - s.seen > self.stale_after]
            for k in stale:  # a sender gone for good: forget its last cumulative point
                del self._streams[k]
                self._labels.pop(k, None)
                self._version += 1
            if self._collected is not None and self._collected[0] == self._version:
                return self._collected[1]
            version = self._version
            hists = [(k, h.bounds, list(h.cum), h.sum, h.count) for k, h in self._hists.items()]
            counters = list(self._counters.items())
            gauges = list(self._gauges.items())
            points, requests = dict(self.points), dict(self.requests)
            streams = len(self._streams)
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
        for result, n in points.items():
            add(received, {c.LABEL_RESULT: result}, n)
        for code, n in sorted(requests.items()):
            add(by_code, {c.LABEL_CODE: code}, n)
        add(tracked, {}, float(streams))
        out = [*families.values(), received, by_code, tracked]
        self._collected = (version, out)
        return out

    def count_request(self, code: int) -> None:
        with self._lock:
            self.requests[str(code)] = self.requests.get(str(code), 0.0) + 1
            self._version += 1


def _count_points(metric: Any, kind: str | None) -> int:
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)


# --------------------------------------------------------------------------- OTLP/HTTP
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY = 16 * 2**20


class _Handler(BaseHTTPRequestHandler):
    receiver: OtlpReceiver
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/v1/metrics":
            return self._status(404, f"{path}: only /v1/metrics is served here", PROTOBUF)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in (PROTOBUF, JSON):
            return self._status(415, f"Content-Type {ctype!r}: send {PROTOBUF} or {JSON}", PROTOBUF)
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._status(411, "Content-Length is required", ctype)
        if length > MAX_BODY:
            return self._status(413, f"body over {MAX_BODY} bytes", ctype)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        request = ExportMetricsServiceRequest()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding not in ("", "identity"):
                return self._status(415, f"Content-Encoding {encoding!r}: use gzip", ctype)
            if ctype == PROTOBUF:
                request.ParseFromString(body)
            else:
                json_format.Parse(body, request, ignore_unknown_fields=True)
        except (DecodeError, json_format.ParseError, OSError, EOFError, UnicodeDecodeError) as err:
            return self._status(400, f"not an OTLP metrics export: {err}", ctype)
        rejected, message = self.receiver.ingest(request)
        response = ExportMetricsServiceResponse()
        if rejected:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = message
        self._reply(200, ctype, response)

    def do_GET(self) -> None:
        self._status(405, "POST OTLP metrics to /v1/metrics", PROTOBUF)

    def _status(self, code: int, message: str, ctype: str) -> None:
        from google.rpc.status_pb2 import Status

        self._reply(code, ctype, Status(code=_GRPC_CODES.get(code, 2), message=message))

    def _reply(self, code: int, ctype: str, message: Any) -> None:
        self.receiver.count_request(code)
        if ctype == JSON:
            body = json_format.MessageToJson(message, indent=None).encode()
        else:
            body = message.SerializeToString()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


_GRPC_CODES = {400: 3, 404: 12, 405: 12, 411: 3, 413: 8, 415: 3}


class OtlpServer(BackgroundHTTPServer):
    """OTLP/HTTP on ``host:port`` (``POST /v1/metrics``, protobuf or JSON, gzip or not)."""

    thread_name = "otlp"

    def __init__(self, receiver: OtlpReceiver, host: str, port: int) -> None:
        super().__init__(type("OtlpHandler", (_Handler,), {"receiver": receiver}), host, port)
