"""Inference-server adapters: a server's own ``/metrics`` text, recognised and re-exposed under
the canonical GenAI series names (``gen_ai_server_*``) with ``model`` and ``server`` labels.

Each adapter is a table: which source histogram is which canonical one, which counters are
input/output tokens, how a request's status maps to an outcome, which gauges are running and
waiting requests and KV-cache usage. Histograms keep the server's own bucket boundaries
(re-bucketing a cumulative histogram is wrong); a missing ``+Inf`` bucket is restored from
``_count``, the only honest derivation, and a missing ``_sum`` stays missing. Where a metric
was renamed, the first name of the table's list that the page has is taken, never both; a
KV-cache share is the mean over engines and ranks, never their sum. An outcome comes only from
a counter of finished requests (or what a total leaves over the counted outcomes); a server
without one gets none. A page with two servers' metrics (an engine re-exported by Triton or a
Dynamo worker) is read by both, the host adding only what the engine lacks (``read_page``).
docs/requests.md "Canonical series" lists every mapping and what each server does not give.

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
    # source family -> canonical family; several sources for one target: the first present wins
    histograms: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)  # source counter -> token_type
    token_sums: dict[str, str] = field(default_factory=dict)  # histogram whose _sum counts tokens
    # counters of finished requests -> how their labels map to an outcome
    requests: dict[str, Callable[[dict[str, str]], str]] = field(default_factory=dict)
    # source gauge -> canonical gauge; several sources for one target: the first present wins
    gauges: dict[str, str] = field(default_factory=dict)
    units: dict[str, float] = field(default_factory=dict)  # histogram -> seconds per unit
    # Cumulative duration counters (no histogram): source -> (canonical counter, s per unit).
    durations: dict[str, tuple[str, float]] = field(default_factory=dict)
    # A counter of every request, of which ``requests`` name only some outcomes: what they leave
    # over is this outcome (SGLang: all requests minus aborted ones are successes).
    remainder: tuple[str, str] | None = None
    # Canonical gauge -> the canonical gauge it includes and must be taken out of it (Dynamo's
    # in-flight requests include the queued ones).
    subtract: dict[str, str] = field(default_factory=dict)
    # Source counter or gauge -> (gpuslo series, (source label, exported label) pairs kept).
    passthrough: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=dict)
    # Older prefixes of the same names, read as the current one (EPP's inference_model_*).
    aliases: dict[str, str] = field(default_factory=dict)
    # More prefixes the server prints (recognition only).
    also: tuple[str, ...] = ()
    # Samples that carry one of these labels count only with the value given (Dynamo components:
    # the inference endpoint, not the router's or the KV-event endpoints).
    only: tuple[tuple[str, str], ...] = ()
    # True for a server that re-exports an engine's metrics on its own page (Triton's vLLM
    # backend, a Dynamo worker): the engine's adapter reads the page first.
    host: bool = False

    def model(self, labels: dict[str, str]) -> str:
        for key in self.model_labels:
            if labels.get(key):
                return labels[key]
        return ""

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every prefix the server's sample names start with."""
        return (self.prefix, *self.aliases, *self.also)

    def current(self, name: str) -> str:
        """The sample name as the server prints it today."""
        for old, new in self.aliases.items():
            if name.startswith(old):
                return new + name[len(old) :]
        return name


# Finish reasons that are not a normal end (vLLM V1 FINISH_REASON_STRINGS: stop, length, abort,
# error, repetition; TensorRT-LLM CompletionOutput: stop, length, timeout, cancelled). Any other
# reason ended the request normally.
_FINISHED_BADLY = {
    "abort": "cancelled",
    "cancelled": "cancelled",
    "error": "error",
    "timeout": "error",
}


def _finished(labels: dict[str, str]) -> str:
    return _FINISHED_BADLY.get(labels.get("finished_reason", ""), "success")


def _http_failure(labels: dict[str, str]) -> str:
    # As for OTLP's error.type: 429 and 503 shed load, 499 is the client going away.
    code = labels.get("http_code", "")
    return {"429": "rejected", "503": "rejected", "499": "cancelled"}.get(code, "error")


def _dynamo_outcome(labels: dict[str, str]) -> str:
    # status is success or error; newer frontends add error_type (prometheus_names.rs
    # frontend_service::error_type): cancelled (client gone or timed out), overload (503).
    status = labels.get("status", "")
    if status == "success":
        return "success"
    kind = labels.get("error_type", "")
    if status == "cancelled" or kind == "cancelled":
        return "cancelled"
    return "rejected" if kind == "overload" else "error"


def _epp_failure(labels: dict[str, str]) -> str:
    # InferencePoolResourceExhausted is the picker shedding a sheddable request (HTTP 429).
    return "rejected" if labels.get("error_code", "").endswith("ResourceExhausted") else "error"


VLLM = Adapter(
    server="vllm",
    prefix="vllm:",
    model_labels=("model_name", "model"),
    histograms={
        "vllm:time_to_first_token_seconds": c.TIME_TO_FIRST_TOKEN,
        # One observation per request (the GenAI TPOT) where vLLM has it; else per token: ITL,
        # printed before 0.11 as time_per_output_token_seconds (deprecated, then hidden).
        "vllm:request_time_per_output_token_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "vllm:inter_token_latency_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "vllm:time_per_output_token_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "vllm:e2e_request_latency_seconds": c.REQUEST_DURATION,
        "vllm:request_queue_time_seconds": c.SERVER_QUEUE_TIME.name,
    },
    tokens={"vllm:prompt_tokens_total": "input", "vllm:generation_tokens_total": "output"},
    requests={"vllm:request_success_total": _finished},
    gauges={
        "vllm:num_requests_running": RUNNING,
        "vllm:num_requests_waiting": WAITING,
        "vllm:kv_cache_usage_perc": KV_CACHE,
        "vllm:gpu_cache_usage_perc": KV_CACHE,  # removed name (0.11): only where the new one is not
    },
)
SGLANG = Adapter(
    server="sglang",
    prefix="sglang:",
    model_labels=("model_name",),
    histograms={
        "sglang:time_to_first_token_seconds": c.TIME_TO_FIRST_TOKEN,
        "sglang:time_per_output_token_seconds": c.TIME_PER_OUTPUT_TOKEN,  # older releases
        "sglang:inter_token_latency_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "sglang:e2e_request_latency_seconds": c.REQUEST_DURATION,
    },
    tokens={"sglang:prompt_tokens_total": "input", "sglang:generation_tokens_total": "output"},
    # num_requests_total counts every finished request, aborted ones included.
    requests={"sglang:num_aborted_requests_total": lambda labels: "cancelled"},
    remainder=("sglang:num_requests_total", "success"),
    gauges={
        "sglang:num_running_reqs": RUNNING,
        "sglang:num_queue_reqs": WAITING,
        "sglang:token_usage": KV_CACHE,
    },
)
TRTLLM = Adapter(
    server="trtllm",
    prefix="trtllm_",
    model_labels=("model_name", "model"),
    histograms={
        "trtllm_time_to_first_token_seconds": c.TIME_TO_FIRST_TOKEN,
        "trtllm_time_per_output_token_seconds": c.TIME_PER_OUTPUT_TOKEN,
        "trtllm_e2e_request_latency_seconds": c.REQUEST_DURATION,
        "trtllm_request_queue_time_seconds": c.SERVER_QUEUE_TIME.name,
    },
    tokens={"trtllm_prompt_tokens_total": "input", "trtllm_generation_tokens_total": "output"},
    requests={
        "trtllm_request_success_total": _finished,
        "trtllm_request_error_total": _http_failure,
    },
    gauges={
        "trtllm_num_requests_running": RUNNING,
        "trtllm_num_requests_waiting": WAITING,
        "trtllm_kv_cache_utilization": KV_CACHE,
    },
    aliases={"trtllm:": "trtllm_"},  # the prefix early Dynamo releases added
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
    subtract={RUNNING: WAITING},  # in flight = queued (no first response yet) + running
)
DYNAMO_COMPONENT = Adapter(
    server="dynamo_component",
    prefix="dynamo_component_",
    model_labels=("model", "model_name"),
    histograms={"dynamo_component_request_duration_seconds": c.REQUEST_DURATION},
    gauges={"dynamo_component_inflight_requests": RUNNING},
    passthrough={
        "dynamo_component_requests_total": (c.SERVER_REQUESTS_RECEIVED.name, ()),
        "dynamo_component_errors_total": (
            c.SERVER_ERRORS.name,
            ((c.LABEL_ERROR_TYPE, c.LABEL_ERROR_TYPE),),
        ),
        "dynamo_component_cancellation_total": (c.SERVER_CANCELLATIONS.name, ()),
    },
    only=(("dynamo_endpoint", "generate"),),
    host=True,
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
    host=True,
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
EPP = Adapter(
    server="epp",
    prefix="inference_objective_",
    model_labels=("model_name",),  # the model the client asked for, not target_model_name
    histograms={"inference_objective_request_duration_seconds": c.REQUEST_DURATION},
    token_sums={
        "inference_objective_input_tokens": "input",
        "inference_objective_output_tokens": "output",
    },
    # request_total counts a request on arrival; request_error_total those that failed.
    requests={"inference_objective_request_error_total": _epp_failure},
    remainder=("inference_objective_request_total", "success"),
    gauges={"inference_objective_running_requests": RUNNING},
    passthrough={
        "inference_pool_average_kv_cache_utilization": (
            c.POOL_KV_CACHE_USAGE.name,
            (("name", c.LABEL_POOL),),
        ),
        "inference_pool_average_queue_size": (c.POOL_QUEUE_AVERAGE.name, (("name", c.LABEL_POOL),)),
        "inference_pool_ready_pods": (c.POOL_READY_PODS.name, (("name", c.LABEL_POOL),)),
    },
    aliases={"inference_model_": "inference_objective_"},  # before v1 (InferenceModel)
    also=("inference_pool_",),
)
ADAPTERS = (VLLM, SGLANG, TRTLLM, DYNAMO, DYNAMO_COMPONENT, TRITON, TGI, EPP)
# Gauges that are a share, not a count: a mean over engines and ranks, never a sum.
_MEANS = {KV_CACHE}


def recognise_all(samples: Iterable[Sample]) -> list[Adapter]:
    """Every adapter whose prefix some samples carry: engines first (most samples first), then
    hosts that re-export an engine's metrics beside their own (Triton, Dynamo components)."""
    counts = {a.server: 0 for a in ADAPTERS}
    prefixes = [(a.server, a.prefixes) for a in ADAPTERS]
    for s in samples:
        for server, starts in prefixes:
            if s.name.startswith(starts):
                counts[server] += 1
    found = [a for a in ADAPTERS if counts[a.server]]
    return sorted(found, key=lambda a: (a.host, -counts[a.server]))


def recognise(samples: Iterable[Sample]) -> Adapter | None:
    """The adapter that reads a page first (see ``recognise_all``), None for no server's."""
    found = recognise_all(samples)
    return found[0] if found else None


Series = tuple[str, tuple[tuple[str, str], ...], float]
Key = tuple[str, tuple[tuple[str, str], ...]]
# Per target and adapter: the last (all requests, remainder) per label set, so that a remainder
# never goes down while the server's own counter does not.
RemainderState = dict[tuple[tuple[str, str], ...], tuple[float, float]]


def canonicalize(
    samples: list[Sample],
    adapter: Adapter,
    extra: dict[str, str] | None = None,
    tenants: TenantCap | None = None,
    state: RemainderState | None = None,
    server: str | None = None,
) -> list[Series]:
    """The canonical series for one scrape, sorted, with ``extra`` labels (namespace, pod).

    A ``tenant`` label on the server's samples is kept, through the tenant cap when given.
    ``state`` (kept by the caller between scrapes of one target) holds a remainder outcome
    (all requests minus the counted outcomes) from going down; ``server`` overrides the label."""
    extra = extra or {}
    server = server or adapter.server
    out: dict[Key, float] = {}

    def put(name: str, labels: dict[str, str], value: float, add: bool = False) -> None:
        key = (name, tuple(sorted(labels.items())))
        out[key] = out.get(key, 0.0) + value if add else value

    def base(labels: dict[str, str]) -> dict[str, str]:
        model = adapter.model(labels)
        out = {
            **({c.LABEL_MODEL: model} if model else {}),  # TGI: none; give model= with the target
            c.LABEL_SERVER: server,
            **extra,
        }
        tenant = labels.get(c.LABEL_TENANT)
        if tenant:
            out[c.LABEL_TENANT] = tenants.admit(tenant, c.COLLECTOR_SERVERS) if tenants else tenant
        return out

    if adapter.aliases:
        samples = [Sample(adapter.current(s.name), s.labels, s.value) for s in samples]
    if adapter.only:
        samples = [s for s in samples if all(s.label(k) in (None, v) for k, v in adapter.only)]
    # Several source names may map to one canonical histogram or gauge (a renamed metric, both
    # printed for a while, or the old one on older servers): take the first the server has.
    present = {_histogram_part(s.name)[0] for s in samples}
    chosen = _first_present(adapter.histograms, present)
    gauges = _first_present(adapter.gauges, {s.name for s in samples})
    counts: dict[Key, float] = {}
    infs: set[Key] = set()
    means: dict[Key, list[float]] = {}
    totals: dict[tuple[tuple[str, str], ...], float] = {}
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
        elif adapter.remainder is not None and s.name == adapter.remainder[0]:
            key = tuple(sorted(base(labels).items()))
            totals[key] = totals.get(key, 0.0) + s.value
        elif s.name in gauges:
            target = gauges[s.name]
            if target in _MEANS:
                means.setdefault((target, tuple(sorted(base(labels).items()))), []).append(s.value)
            else:
                put(target, base(labels), s.value, add=True)
        elif s.name in adapter.passthrough:
            target, keep = adapter.passthrough[s.name]
            kept = {dst: labels[src] for src, dst in keep if labels.get(src)}
            put(target, {**base(labels), **kept}, s.value, add=True)
    # A histogram printed without +Inf still has its total in _count.
    for (target, key), total in counts.items():
        if (target, key) not in infs:
            put(f"{target}_bucket", {**dict(key), "le": "+Inf"}, total)
    # A share per engine or data-parallel rank: their mean is the server's (equal-sized caches).
    for (target, key), values in means.items():
        put(target, dict(key), sum(values) / len(values))
    for minuend, subtrahend in adapter.subtract.items():
        for name, key in [k for k in out if k[0] == minuend]:
            out[(name, key)] = max(0.0, out[(name, key)] - out.get((subtrahend, key), 0.0))
    if adapter.remainder is not None:
        outcome = adapter.remainder[1]
        counted: dict[tuple[tuple[str, str], ...], float] = {}
        for (name, lbl), v in out.items():
            if name == c.REQUESTS_TOTAL:
                key = tuple(kv for kv in lbl if kv[0] != c.LABEL_OUTCOME)
                counted[key] = counted.get(key, 0.0) + v
        for key, total in totals.items():
            left = max(0.0, total - counted.get(key, 0.0))
            if state is not None:
                last = state.get(key)
                if last is not None and total >= last[0]:
                    left = max(left, last[1])  # the server did not restart: never go down
                state[key] = (total, left)
            put(c.REQUESTS_TOTAL, {**dict(key), c.LABEL_OUTCOME: outcome}, left, True)
    return sorted(((n, lbl, v) for (n, lbl), v in out.items()), key=_order)


def read_page(
    samples: list[Sample],
    adapters: list[Adapter],
    extra: dict[str, str] | None = None,
    tenants: TenantCap | None = None,
    state: dict[str, RemainderState] | None = None,
) -> list[Series]:
    """A page read by every adapter it carries (``recognise_all``): the first gives the
    ``server`` label and its series; each later one adds only canonical families the earlier
    ones lack, so no request is counted twice (Triton's vLLM backend: vLLM's latencies and
    tokens, Triton's request outcomes and pending count)."""
    if not adapters:
        return []
    primary = adapters[0].server
    if len(adapters) == 1:
        own = None if state is None else state.setdefault(primary, {})
        return canonicalize(samples, adapters[0], extra, tenants, own)
    series: list[Series] = []
    seen: set[str] = set()
    for adapter in adapters:
        own = None if state is None else state.setdefault(adapter.server, {})
        got = canonicalize(samples, adapter, extra, tenants, own, server=primary)
        families = {_measures(name) for name, _, _ in got}
        series += [s for s in got if _measures(s[0]) not in seen]
        seen |= families
    return sorted(series, key=_order)


# A mean-only counter measures what a histogram does: with the histogram there, it adds nothing.
_SAME = {
    c.SERVER_DURATION_SECONDS.name: c.REQUEST_DURATION,
    c.SERVER_QUEUE_SECONDS.name: c.SERVER_QUEUE_TIME.name,
}


def _measures(name: str) -> str:
    family_name = _family_of(name)[0]
    return _SAME.get(family_name, family_name)


def _first_present(mapping: dict[str, str], present: set[str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for source, target in mapping.items():
        if source in present and target not in chosen.values():
            chosen[source] = target
    return chosen


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
        self._state: dict[str, dict[str, RemainderState]] = {}
        self._closed = False

    def _run(self, target: Target, scrape: _Scrape) -> tuple[bytes, float]:
        """Fetch one target on a pool thread: the body and the seconds it took."""
        started = time.perf_counter()
        try:
            return self._fetch(target, scrape), time.perf_counter() - started
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

    def _read(self, target: Target, body: bytes) -> tuple[list[Series], float]:
        """Parse one fetched body into canonical series: the seconds it took with them."""
        started = time.perf_counter()
        text = body.decode("utf-8", errors="replace")
        try:
            samples = parse_exposition(text)
        except ParseError as err:
            raise ScrapeError("parse", str(err)) from None
        forced = [a for a in ADAPTERS if a.server == target.server]
        adapters = forced or recognise_all(samples)
        if not adapters:
            raise ScrapeError("parse", "no known inference server's metrics in the output")
        extra = dict(target.labels)
        tenant = extra.get(c.LABEL_TENANT)
        if tenant and self.tenants is not None:
            extra[c.LABEL_TENANT] = self.tenants.admit(tenant, c.COLLECTOR_SERVERS)
        with self._lock:  # one scrape per target at a time: only the dict itself is shared
            state = self._state.setdefault(target.url, {})
        series = read_page(samples, adapters, extra, self.tenants, state)
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
        futures: dict[Target, concurrent.futures.Future[tuple[bytes, float]]] = {}
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
                # Fetched on the pool, parsed here, one body after another: parsing is Python
                # work that holds the GIL, and twenty pool threads parsing at once would
                # leave a scrape of the agent one twenty-first of it (its p99 rose to ~50 ms
                # with 20 targets; bench/otlp_ingest.py, condition A).
                body, fetched = fut.result()
                series, read = self._read(target, body)
                took = fetched + read
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
        with self._lock:
            for url in set(self._state) - current:
                del self._state[url]
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
