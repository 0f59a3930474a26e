"""Inference-server adapters: a server's own ``/metrics`` text, recognised and re-exposed under
the canonical GenAI series names (``gen_ai_server_*``) with ``model`` and ``server`` labels.

Each adapter is a table: which source histogram is which canonical one, which counters are
input/output tokens, how a request's status maps to an outcome, which gauges are running and
waiting requests and KV-cache usage. Histograms keep the server's own bucket boundaries
(re-bucketing a cumulative histogram is wrong); a missing ``+Inf`` bucket is restored from
``_count``, the only honest derivation, and a missing ``_sum`` stays missing.

The parser is written by hand on purpose: the servers' published output has quirks that the
strict parsers reject (a space after the comma in label sets, histogram buckets without the
``_bucket`` suffix, TYPE lines naming a different family than the samples).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import logging
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import Metric
from prometheus_client.samples import Sample as PromSample

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family, sample_line

from .tenants import TenantCap

log = logging.getLogger(__name__)

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$"
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')

RUNNING = c.SERVER_REQUESTS_RUNNING.name
WAITING = c.SERVER_REQUESTS_WAITING.name
KV_CACHE = c.SERVER_KV_CACHE_USAGE.name


class ParseError(ValueError):
    """The text is not Prometheus exposition format."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def parse_exposition(text: str) -> list[Sample]:
    """Every sample line; comments skipped. ParseError names the first bad line."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ParseError(f"line {n}: not a sample: {line[:80]!r}")
        labels: list[tuple[str, str]] = []
        body = m.group("labels") or ""
        pos = 0
        while pos < len(body):
            lm = _LABEL.match(body, pos)
            if lm is None:
                raise ParseError(f"line {n}: bad label set: {body[:80]!r}")
            labels.append((lm.group(1), _unescape(lm.group(2))))
            pos = lm.end()
        try:
            value = float(m.group("value"))
        except ValueError:
            raise ParseError(f"line {n}: bad value {m.group('value')!r}") from None
        out.append(Sample(m.group("name"), tuple(labels), value))
    return out


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


@dataclass(frozen=True)
class Adapter:
    server: str
    prefix: str
    model_labels: tuple[str, ...]
    histograms: dict[str, str]  # source family -> canonical family
    tokens: dict[str, str] = field(default_factory=dict)  # source counter -> token_type
    token_sums: dict[str, str] = field(default_factory=dict)  # histogram whose _sum counts tokens
    # counters of finished requests -> how their labels map to an outcome
    requests: dict[str, Callable[[dict[str, str]], str]] = field(default_factory=dict)
    gauges: dict[str, str] = field(default_factory=dict)  # source gauge -> canonical gauge
    units: dict[str, float] = field(default_factory=dict)  # histogram -> seconds per unit
    # Cumulative duration counters (no histogram): source -> (canonical counter, s per unit).
    durations: dict[str, tuple[str, float]] = field(default_factory=dict)

    def model(self, labels: dict[str, str]) -> str:
        for key in self.model_labels:
            if labels.get(key):
                return labels[key]
        return ""


def _vllm_outcome(labels: dict[str, str]) -> str:
    # finished_reason: stop and length finish normally; abort is the client going away.
    return "cancelled" if labels.get("finished_reason") == "abort" else "success"


def _dynamo_outcome(labels: dict[str, str]) -> str:
    status = labels.get("status", "")
    return {"success": "success", "error": "error", "cancelled": "cancelled"}.get(status, "error")


VLLM = Adapter(
    server="vllm",
    prefix="vllm:",
    model_labels=("model_name", "model"),
    histograms={
        "vllm:time_to_first_token_seconds": c.TIME_TO_FIRST_TOKEN,
        "vllm:time_per_output_token_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "vllm:inter_token_latency_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "vllm:e2e_request_latency_seconds": c.REQUEST_DURATION,
        "vllm:request_queue_time_seconds": c.SERVER_QUEUE_TIME.name,
    },
    tokens={"vllm:prompt_tokens_total": "input", "vllm:generation_tokens_total": "output"},
    requests={"vllm:request_success_total": _vllm_outcome},
    gauges={
        "vllm:num_requests_running": RUNNING,
        "vllm:num_requests_waiting": WAITING,
        "vllm:gpu_cache_usage_perc": KV_CACHE,
        "vllm:kv_cache_usage_perc": KV_CACHE,
    },
)
SGLANG = Adapter(
    server="sglang",
    prefix="sglang:",
    model_labels=("model_name",),
    histograms={
        "sglang:time_to_first_token_seconds": c.TIME_TO_FIRST_TOKEN,
        "sglang:time_per_output_token_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "sglang:e2e_request_latency_seconds": c.REQUEST_DURATION,
    },
    tokens={"sglang:prompt_tokens_total": "input", "sglang:generation_tokens_total": "output"},
    gauges={
        "sglang:num_running_reqs": RUNNING,
        "sglang:num_queue_reqs": WAITING,
        "sglang:token_usage": KV_CACHE,
    },
)
DYNAMO = Adapter(
    server="dynamo",
    prefix="dynamo_frontend_",
    model_labels=("model",),
    histograms={
        "dynamo_frontend_time_to_first_token_seconds": c.TIME_TO_FIRST_TOKEN,
        "dynamo_frontend_inter_token_latency_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "dynamo_frontend_request_duration_seconds": c.REQUEST_DURATION,
    },
    tokens={"dynamo_frontend_output_tokens_total": "output"},
    token_sums={"dynamo_frontend_input_sequence_tokens": "input"},
    requests={"dynamo_frontend_requests_total": _dynamo_outcome},
    gauges={
        "dynamo_frontend_inflight_requests": RUNNING,
        "dynamo_frontend_queued_requests": WAITING,
    },
)


def _triton_failure(labels: dict[str, str]) -> str:
    # Newer Triton labels failures by reason; a queue-full rejection is load shedding.
    reason = labels.get("reason", "").upper()
    return {"REJECTED": "rejected", "CANCELED": "cancelled"}.get(reason, "error")


TRITON = Adapter(
    server="triton",
    prefix="nv_inference_",
    model_labels=("model",),
    histograms={"nv_inference_first_response_histogram_ms": c.TIME_TO_FIRST_TOKEN},
    requests={
        "nv_inference_request_success": lambda labels: "success",
        "nv_inference_request_failure": _triton_failure,
    },
    gauges={"nv_inference_pending_request_count": WAITING},
    units={"nv_inference_first_response_histogram_ms": 0.001},
    durations={
        "nv_inference_request_duration_us": (c.SERVER_DURATION_SECONDS.name, 1e-6),
        "nv_inference_queue_duration_us": (c.SERVER_QUEUE_SECONDS.name, 1e-6),
    },
)


def _tgi_failure(labels: dict[str, str]) -> str:
    # "overloaded" is TGI shedding load (HTTP 429); everything else counts as an error,
    # validation failures included (TGI does not tell a client's mistake from its own).
    return "rejected" if labels.get("err") == "overloaded" else "error"


TGI = Adapter(
    server="tgi",
    prefix="tgi_",
    model_labels=(),  # one model per server, unlabelled: give model= with the target
    histograms={
        "tgi_request_duration": c.REQUEST_DURATION,
        "tgi_request_mean_time_per_token_duration": c.TIME_PER_OUTPUT_TOKEN,
        "tgi_request_queue_duration": c.SERVER_QUEUE_TIME.name,
    },
    token_sums={"tgi_request_input_length": "input", "tgi_request_generated_tokens": "output"},
    requests={"tgi_request_success": lambda labels: "success", "tgi_request_failure": _tgi_failure},
    gauges={"tgi_queue_size": WAITING, "tgi_batch_current_size": RUNNING},
)
ADAPTERS = (VLLM, SGLANG, DYNAMO, TRITON, TGI)


def recognise(samples: Iterable[Sample]) -> Adapter | None:
    """The adapter whose metric prefix most samples carry."""
    counts = {a.server: 0 for a in ADAPTERS}
    for s in samples:
        for a in ADAPTERS:
            if s.name.startswith(a.prefix):
                counts[a.server] += 1
    best = max(ADAPTERS, key=lambda a: counts[a.server])
    return best if counts[best.server] else None


Series = tuple[str, tuple[tuple[str, str], ...], float]


def canonicalize(
    samples: list[Sample],
    adapter: Adapter,
    extra: dict[str, str] | None = None,
    tenants: TenantCap | None = None,
) -> list[Series]:
    """The canonical series for one scrape, sorted, with ``extra`` labels (namespace, pod).

    A ``tenant`` label on the server's samples is kept, through the tenant cap when given."""
    extra = extra or {}
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def put(name: str, labels: dict[str, str], value: float, add: bool = False) -> None:
        key = (name, tuple(sorted(labels.items())))
        out[key] = out.get(key, 0.0) + value if add else value

    def base(labels: dict[str, str]) -> dict[str, str]:
        model = adapter.model(labels)
        out = {
            **({c.LABEL_MODEL: model} if model else {}),  # TGI: none; give model= with the target
            c.LABEL_SERVER: adapter.server,
            **extra,
        }
        tenant = labels.get(c.LABEL_TENANT)
        if tenant:
            out[c.LABEL_TENANT] = tenants.admit(tenant, c.COLLECTOR_SERVERS) if tenants else tenant
        return out

    # Several source names may map to one canonical histogram (vLLM renamed TPOT to
    # inter-token latency and printed both for a while): take the first the server has.
    present = {_histogram_part(s.name)[0] for s in samples}
    chosen: dict[str, str] = {}
    for source, target in adapter.histograms.items():
        if source in present and target not in chosen.values():
            chosen[source] = target
    counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    infs: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for s in samples:
        labels = dict(s.labels)
        family, part = _histogram_part(s.name)
        if not part and "le" in labels:
            part = "_bucket"  # Triton prints buckets under the family name itself
        if family in chosen:
            target = chosen[family]
            unit = adapter.units.get(family, 1.0)
            hist_labels = base(labels)
            ident = (target, tuple(sorted(hist_labels.items())))
            if part == "_bucket":
                le = _le(labels.get("le", ""), unit)
                if le is None:
                    continue
                put(f"{target}_bucket", {**hist_labels, "le": le}, s.value, add=True)
                if le == "+Inf":
                    infs.add(ident)
            elif part == "_count":
                put(f"{target}_count", hist_labels, s.value, add=True)
                counts[ident] = counts.get(ident, 0.0) + s.value
            elif part == "_sum":
                put(f"{target}_sum", hist_labels, s.value * unit, add=True)
        elif s.name in adapter.durations:
            target, unit = adapter.durations[s.name]
            put(target, base(labels), s.value * unit, add=True)
        elif family in adapter.token_sums and part == "_sum":
            token_type = adapter.token_sums[family]
            put(
                c.TOKEN_USAGE_TOTAL, {**base(labels), c.LABEL_TOKEN_TYPE: token_type}, s.value, True
            )
        elif s.name in adapter.tokens:
            token_type = adapter.tokens[s.name]
            put(
                c.TOKEN_USAGE_TOTAL, {**base(labels), c.LABEL_TOKEN_TYPE: token_type}, s.value, True
            )
        elif s.name in adapter.requests:
            outcome = adapter.requests[s.name](labels)
            put(c.REQUESTS_TOTAL, {**base(labels), c.LABEL_OUTCOME: outcome}, s.value, True)
        elif s.name in adapter.gauges:
            put(adapter.gauges[s.name], base(labels), s.value, add=True)
    # A histogram printed without +Inf still has its total in _count.
    for (target, key), total in counts.items():
        if (target, key) not in infs:
            put(f"{target}_bucket", {**dict(key), "le": "+Inf"}, total)
    return sorted(((n, lbl, v) for (n, lbl), v in out.items()), key=_order)


def _order(series: Series) -> tuple[str, tuple[tuple[str, str], ...], float]:
    """Name, then labels, then bucket bound as a number (0.5 before 10.0)."""
    name, labels, _ = series
    le = dict(labels).get("le")
    rest = tuple(kv for kv in labels if kv[0] != "le")
    return name, rest, float(le) if le is not None else 0.0


def _histogram_part(name: str) -> tuple[str, str]:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _le(text: str, unit: float = 1.0) -> str | None:
    """A bucket bound in seconds, in one spelling (``1`` and ``1.0`` both become ``1.0``), so
    buckets from Go and Python servers line up; None for garbage. A bound in milliseconds is
    the same bucket in other units, not a re-bucketing."""
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isinf(value):
        return "+Inf"
    return repr(round(value * unit, 12))


def render(series: list[Series]) -> str:
    """Text exposition of canonical series (no HELP/TYPE: for goldens and debugging)."""
    return "".join(sample_line(name, dict(labels), value) + "\n" for name, labels, value in series)


# --------------------------------------------------------------------------- the collector
@dataclass(frozen=True)
class Target:
    """An inference server's metrics URL, with the labels its series get (namespace, pod)."""

    url: str
    labels: tuple[tuple[str, str], ...] = ()
    server: str | None = None  # force an adapter instead of recognising the output


class TargetSource(Protocol):
    """Targets found at run time (Kubernetes pods by annotation), with their own metrics."""

    def targets(self) -> list[Target]:
        """The current targets (may use a cached listing)."""
        ...

    def metrics(self) -> list[Metric]:
        """The source's own health series."""
        ...


MAX_BYTES = 32 * 2**20  # read cap on one target's body


class ScrapeError(Exception):
    """A scrape that failed for a reason counted in ``gpuslo_target_scrape_errors_total``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Scrape:
    """One scrape in flight: its connection, closed from outside at the deadline."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = []
        self.aborted = False

    def attach(self, sock: socket.socket) -> None:
        with self.lock:
            self.socks.append(sock)
            if not self.aborted:
                return
        _shut(sock)

    def abort(self) -> None:
        """Wake a read blocked on the connection (a trickle resets no per-read timeout)."""
        with self.lock:
            self.aborted = True
            socks = list(self.socks)
        for sock in socks:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _opener(scrape: _Scrape) -> urllib.request.OpenerDirector:
    """urllib (proxies, redirects, TLS as before) with connections ``scrape`` can close."""

    class Http(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            scrape.attach(self.sock)

    class Https(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            scrape.attach(self.sock)

    class HttpHandler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(Http, req)

    class HttpsHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(Https, req, context=self._context)  # type: ignore[attr-defined]

    return urllib.request.build_opener(HttpHandler, HttpsHandler)


class ServerCollector:
    """Scrapes every target concurrently under one deadline for the whole response (connect,
    headers, body); a slow, dead, trickling or garbled target reports ``gpuslo_target_up 0``
    and delays nothing else beyond the deadline. A target has at most one scrape (so one
    connection) in flight: while a stuck one lasts, later scrapes are skipped and counted. A
    body over ``max_bytes`` or cut short of its length is reported, never exported."""

    name = c.COLLECTOR_SERVERS

    def __init__(
        self,
        targets: Iterable[Target],
        timeout: float = 2.0,
        workers: int = 32,
        discovery: TargetSource | None = None,
        tenants: TenantCap | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the scrape deadline must be > 0 seconds")
        if max_bytes < 1:
            raise ValueError("the read cap must be >= 1 byte")
        self.targets = list(targets)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.discovery = discovery
        self.tenants = tenants
        # Threads are started lazily, up to ``workers``: one per target in flight.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="gpuslo-target"
        )
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._in_flight: dict[str, _Scrape] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._closed = False

    def _run(self, target: Target, scrape: _Scrape) -> tuple[list[Series], float]:
        try:
            return self._scrape(target, scrape)
        finally:
            with self._lock:
                if self._in_flight.get(target.url) is scrape:
                    del self._in_flight[target.url]

    def _fetch(self, target: Target, scrape: _Scrape) -> bytes:
        started = time.monotonic()
        try:
            resp = _opener(scrape).open(target.url, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            err.close()
            raise ScrapeError("http", str(err)) from None
        except (OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            if scrape.aborted or isinstance(reason, TimeoutError):
                raise ScrapeError("deadline", f"no answer within {self.timeout:g}s") from None
            raise ScrapeError("connection", f"{type(reason).__name__}: {reason}") from None
        with resp:
            declared = resp.length  # None without Content-Length (chunked, or to close)
            if declared is not None and declared > self.max_bytes:
                raise ScrapeError(
                    "too_large",
                    f"body of {declared} bytes over the {self.max_bytes}-byte cap, not read",
                )
            chunks, size = [], 0
            try:
                while size <= self.max_bytes:
                    chunk = resp.read(min(2**16, self.max_bytes + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            except (OSError, http.client.HTTPException) as err:
                if scrape.aborted:
                    raise ScrapeError("deadline", f"no answer within {self.timeout:g}s") from None
                raise ScrapeError("truncated", f"body cut short: {err!r}") from None
            if scrape.aborted or time.monotonic() - started > self.timeout:
                raise ScrapeError("deadline", f"no answer within {self.timeout:g}s")
            if size > self.max_bytes:
                raise ScrapeError(
                    "too_large", f"body over the {self.max_bytes}-byte cap, not exported"
                )
            if declared is not None and size < declared:
                raise ScrapeError(
                    "truncated", f"connection closed after {size} of {declared} bytes"
                )
        return b"".join(chunks)

    def _scrape(self, target: Target, scrape: _Scrape | None = None) -> tuple[list[Series], float]:
        started = time.perf_counter()
        text = self._fetch(target, scrape or _Scrape()).decode("utf-8", errors="replace")
        try:
            samples = parse_exposition(text)
        except ParseError as err:
            raise ScrapeError("parse", str(err)) from None
        adapter = next((a for a in ADAPTERS if a.server == target.server), None)
        adapter = adapter or recognise(samples)
        if adapter is None:
            raise ScrapeError("parse", "no known inference server's metrics in the output")
        extra = dict(target.labels)
        tenant = extra.get(c.LABEL_TENANT)
        if tenant and self.tenants is not None:
            extra[c.LABEL_TENANT] = self.tenants.admit(tenant, c.COLLECTOR_SERVERS)
        series = canonicalize(samples, adapter, extra, self.tenants)
        return series, time.perf_counter() - started

    def _fail(self, url: str, reason: str, message: str) -> None:
        key = (url, reason)
        self._failures[key] = self._failures.get(key, 0) + 1
        if self.errors.get(url) != message:
            log.warning("target %s down (%s): %s", url, reason, message)
        self.errors[url] = message

    def collect(self) -> list[Any]:
        targets = list(self.targets)
        if self.discovery is not None:
            targets += self.discovery.targets()
        up, duration = family(c.TARGET_UP), family(c.TARGET_SCRAPE_SECONDS)
        futures: dict[Target, concurrent.futures.Future[tuple[list[Series], float]]] = {}
        scrapes: dict[Target, _Scrape] = {}
        skipped: list[Target] = []
        with self._lock:
            closed = self._closed
            for t in targets:
                if t in scrapes:
                    continue  # listed twice
                if closed or t.url in self._in_flight:
                    skipped.append(t)
                    continue
                scrapes[t] = self._in_flight[t.url] = _Scrape()
        for t, scrape in scrapes.items():
            futures[t] = self._pool.submit(self._run, t, scrape)
        _, late = concurrent.futures.wait(futures.values(), timeout=self.timeout)
        if late:
            # The deadline: close what is still open, so no connection outlives its scrape.
            for t, fut in futures.items():
                if fut in late and not fut.cancel():
                    scrapes[t].abort()
                elif fut in late:
                    with self._lock:
                        self._in_flight.pop(t.url, None)
            concurrent.futures.wait(late, timeout=0.2)  # let the aborted ones end
        families: dict[str, Any] = {}
        for target in skipped:
            add(up, {c.LABEL_TARGET: target.url}, 0.0)
            if not closed:
                self._fail(target.url, "in_flight", "the previous scrape is still in flight")
        for target, fut in futures.items():
            labels = {c.LABEL_TARGET: target.url}
            if fut in late:
                self._fail(target.url, "deadline", f"no answer within {self.timeout:g}s deadline")
                add(up, labels, 0.0)
                continue
            try:
                series, took = fut.result()
            except ScrapeError as err:
                self._fail(target.url, err.reason, str(err))
                add(up, labels, 0.0)
                continue
            except Exception as err:  # anything unforeseen: down, never a partial body
                self._fail(target.url, "connection", f"{type(err).__name__}: {err}")
                add(up, labels, 0.0)
                continue
            if self.errors.pop(target.url, None) is not None:
                log.info("target %s up again", target.url)
            add(up, labels, 1.0)
            add(duration, labels, took)
            for name, lbls, value in series:
                fam_name, kind = _family_of(name)
                metric = families.get(fam_name)
                if metric is None:
                    metric = families[fam_name] = Metric(
                        fam_name, c.CANONICAL_HELP.get(fam_name, ""), kind
                    )
                metric.samples.append(PromSample(name, dict(lbls), value, None, None))
        current = {t.url for t in targets}
        for url in set(self.errors) - current:
            del self.errors[url]  # a target that went away (a deleted pod)
        failures = family(c.TARGET_SCRAPE_ERRORS)
        for (url, reason), count in sorted(self._failures.items()):
            if url not in current:
                del self._failures[(url, reason)]
                continue
            add(failures, {c.LABEL_TARGET: url, c.LABEL_REASON: reason}, float(count))
        extra = self.discovery.metrics() if self.discovery is not None else []
        counted = [failures] if failures.samples else []
        return [up, duration, *counted, *families.values(), *extra]

    def close(self) -> None:
        """Close every connection still open and stop the scrape threads; idempotent (the
        agent calls it first on SIGTERM, so a sampling thread waits on no target)."""
        with self._lock:
            self._closed = True
            in_flight = list(self._in_flight.values())
        for scrape in in_flight:
            scrape.abort()
        self._pool.shutdown(wait=False, cancel_futures=True)


_HISTOGRAMS = {
    c.TIME_TO_FIRST_TOKEN,
    c.TIME_PER_OUTPUT_TOKEN,
    c.REQUEST_DURATION,
    c.SERVER_QUEUE_TIME.name,
}


def _family_of(name: str) -> tuple[str, str]:
    family_name, part = _histogram_part(name)
    if part and family_name in _HISTOGRAMS:
        return family_name, "histogram"
    if name.endswith("_total"):
        return name, "counter"
    return name, "gauge"
