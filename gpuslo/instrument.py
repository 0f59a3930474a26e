"""Record GenAI request metrics from a Python inference server and push them to the gpuslo
agent over OTLP/HTTP.

    from gpuslo.instrument import GenAIMetrics, Rejected

    metrics = GenAIMetrics.to_agent("http://127.0.0.1:4318", service="chat-api")

    with metrics.request(model="llama-3-8b", tenant="acme") as req:
        req.input_tokens(len(prompt_ids))
        for token in generate(prompt_ids):
            req.token()          # first call: time to first token; each call: one output token
            yield token

Each request records, with the OpenTelemetry GenAI names and advised bucket bounds:
``gen_ai.server.request.duration`` (every request; ``error.type`` when it failed),
``gen_ai.server.time_to_first_token`` and ``gen_ai.server.time_per_output_token`` (successful
requests that produced tokens), and ``gen_ai.client.token.usage`` by ``gen_ai.token.type``.
The agent's OTLP receiver turns these into the canonical ``gen_ai_server_*`` series.

Outcomes: an exception leaving the block is an error (``error.type`` = its class name);
``Rejected`` (or ``req.reject()``) is load shedding, counted as rejected, not as an error;
``asyncio.CancelledError`` (or ``req.cancel()``) is a client that went away.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from gpuslo import __version__
from gpuslo.foundation import conventions as c

TENANT_ATTRIBUTE = "gpuslo.tenant"


class Rejected(Exception):
    """Raise inside ``request()`` when the server sheds the request (queue full, 429/503)."""


class GenAIMetrics:
    """The four GenAI instruments on one meter; ``request()`` records one request."""

    def __init__(
        self, meter_provider: Any = None, tenant_attribute: str = TENANT_ATTRIBUTE
    ) -> None:
        from opentelemetry import metrics

        provider = meter_provider or metrics.get_meter_provider()
        self.meter_provider = provider
        self.tenant_attribute = tenant_attribute
        meter = provider.get_meter("gpuslo.instrument", __version__)

        def histogram(name: str, unit: str, description: str) -> Any:
            return meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=list(c.GENAI_ADVISED_BOUNDS[name]),
            )

        self.duration = histogram(
            c.GENAI_REQUEST_DURATION, "s", "Generative AI server request duration."
        )
        self.ttft = histogram(c.GENAI_TIME_TO_FIRST_TOKEN, "s", "Time to generate the first token.")
        self.tpot = histogram(
            c.GENAI_TIME_PER_OUTPUT_TOKEN, "s", "Time per output token after the first."
        )
        self.tokens = histogram(
            c.GENAI_TOKEN_USAGE, "{token}", "Input and output tokens per request."
        )

    @classmethod
    def to_agent(
        cls,
        endpoint: str = "http://127.0.0.1:4318",
        service: str | None = None,
        resource: Mapping[str, str] | None = None,
        interval: float = 10.0,
        exponential: bool = False,
        tenant_attribute: str = TENANT_ATTRIBUTE,
    ) -> GenAIMetrics:
        """A MeterProvider exporting to the agent's OTLP/HTTP endpoint every ``interval``
        seconds. The resource gets ``service.name`` and, from the environment (the downward
        API), ``k8s.pod.name`` ($POD_NAME) and ``k8s.namespace.name`` ($POD_NAMESPACE), which
        become the series' pod and namespace labels. ``exponential`` sends exponential
        histograms (the agent converts them to the advised bounds)."""
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import Histogram, MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
        from opentelemetry.sdk.resources import Resource

        if interval <= 0:
            raise ValueError("export interval must be > 0 seconds")
        attributes: dict[str, str] = {}
        for env, key in (("POD_NAME", "k8s.pod.name"), ("POD_NAMESPACE", "k8s.namespace.name")):
            if os.environ.get(env):
                attributes[key] = os.environ[env]
        if service:
            attributes["service.name"] = service
        attributes.update(resource or {})
        url = endpoint.rstrip("/")
        if not url.endswith("/v1/metrics"):
            url += "/v1/metrics"
        aggregation: dict[type, Any] | None = None
        if exponential:
            aggregation = {Histogram: ExponentialBucketHistogramAggregation()}
        exporter = OTLPMetricExporter(endpoint=url, preferred_aggregation=aggregation)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000)
        provider = MeterProvider(metric_readers=[reader], resource=Resource.create(attributes))
        return cls(provider, tenant_attribute)

    def request(
        self,
        model: str,
        tenant: str | None = None,
        operation: str = "chat",
        attributes: Mapping[str, str | int | float | bool] | None = None,
    ) -> RequestRecorder:
        """A context manager (sync or async) around one request."""
        attrs: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
        }
        if tenant:
            attrs[self.tenant_attribute] = tenant
        attrs.update(attributes or {})
        return RequestRecorder(self, attrs)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export now (before exiting, in tests)."""
        flush = getattr(self.meter_provider, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def shutdown(self) -> None:
        """Export what is left and stop the exporter."""
        shutdown = getattr(self.meter_provider, "shutdown", None)
        if callable(shutdown):
            shutdown()


class RequestRecorder:
    """Timestamps of one request; records on exit."""

    def __init__(self, owner: GenAIMetrics, attributes: dict[str, str | int | float | bool]):
        self._owner = owner
        self.attributes = attributes
        self._start = 0.0
        self._first: float | None = None
        self._last: float | None = None
        self._output = 0
        self._input: int | None = None
        self._output_reported: int | None = None
        self._error: str | None = None

    def __enter__(self) -> RequestRecorder:
        self._start = time.perf_counter()
        return self

    async def __aenter__(self) -> RequestRecorder:
        return self.__enter__()

    def token(self, count: int = 1) -> None:
        """``count`` output tokens were produced now (the first call marks the first token)."""
        now = time.perf_counter()
        if self._first is None:
            self._first = now
        self._last = now
        self._output += count

    def input_tokens(self, count: int) -> None:
        """The prompt's token count."""
        self._input = count

    def output_tokens(self, count: int) -> None:
        """The output token count, when the server knows it better than the ``token()`` calls."""
        self._output_reported = count

    def reject(self) -> None:
        """The request was shed (queue full, answered 429/503) without an exception."""
        self._error = "rejected"

    def cancel(self) -> None:
        """The client went away before the answer was complete."""
        self._error = "cancelled"

    def fail(self, error_type: str) -> None:
        """The request failed without an exception (e.g. answered 500): ``error.type``."""
        self._error = error_type or "_OTHER"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = time.perf_counter()
        error = self._error
        if exc_type is not None:
            if issubclass(exc_type, Rejected):
                error = "rejected"
            elif issubclass(exc_type, (asyncio.CancelledError, GeneratorExit)):
                error = "cancelled"
            else:
                error = exc_type.__qualname__
        owner, attrs = self._owner, self.attributes
        duration_attrs = {**attrs, "error.type": error} if error else attrs
        owner.duration.record(end - self._start, duration_attrs)
        output = self._output_reported if self._output_reported is not None else self._output
        if error is None and self._first is not None:
            owner.ttft.record(self._first - self._start, attrs)
            if output > 1 and self._last is not None:
                owner.tpot.record((self._last - self._first) / (output - 1), attrs)
        if self._input is not None:
            owner.tokens.record(self._input, {**attrs, "gen_ai.token.type": "input"})
        if output:
            owner.tokens.record(output, {**attrs, "gen_ai.token.type": "output"})

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
