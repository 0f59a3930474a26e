"""The current GenAI semantic conventions (open-telemetry/semantic-conventions-genai): the
provider attribute that replaced ``gen_ai.system``, the inference token counters, and the
client-side metrics the receiver leaves out. Fixtures are written from the conventions'
metric names, instruments, units and attributes (model/gen-ai/metrics.yaml,
token-metrics.yaml)."""

from __future__ import annotations

import pytest

from gpuslo.collectors.otlp import OtlpReceiver
from tests.collectors.test_otlp import canonical, export, hist_metric, one, pick

NAME = "gen_ai.server.request.duration"


def sum_metric(name: str, points: list[tuple[int, int]], attrs: dict[str, str], temporality=2):
    """A monotonic Sum (what an OpenTelemetry Counter exports): (start time, value) points."""
    return {
        "name": name,
        "unit": "{token}",
        "sum": {
            "aggregationTemporality": temporality,
            "isMonotonic": True,
            "dataPoints": [
                {
                    "attributes": [
                        {"key": k, "value": {"stringValue": v}} for k, v in attrs.items()
                    ],
                    "startTimeUnixNano": str(start),
                    "timeUnixNano": str(start + 10**9),
                    "asInt": str(value),
                }
                for start, value in points
            ],
        },
    }


@pytest.mark.parametrize(
    ("attrs", "resource", "server"),
    [
        ({"gen_ai.provider.name": "openai"}, {}, "openai"),
        ({"gen_ai.system": "vllm"}, {}, "vllm"),  # the attribute it replaced, still read
        ({"gen_ai.provider.name": "openai", "gen_ai.system": "az.ai.openai"}, {}, "openai"),
        ({}, {"gen_ai.provider.name": "aws.bedrock"}, "aws.bedrock"),
        ({"gen_ai.provider.name": "openai"}, {"gpuslo.server": "sglang"}, "sglang"),
        ({}, {}, "otlp"),
    ],
)
def test_the_provider_names_the_server_label(attrs, resource, server):
    r = OtlpReceiver()
    point_attrs = {"gen_ai.request.model": "m", "gen_ai.operation.name": "chat", **attrs}
    metric = hist_metric(NAME, [(1, [1, 0], [0.5], 0.2)], 1, point_attrs)
    assert r.ingest(export(metric, {"k8s.pod.name": "p0", **resource})) == (0, "")
    samples = canonical(r)
    assert one(samples, "gen_ai_server_requests_total", model="m")
    assert set(pick(samples, "gen_ai_server_requests_total")) == {
        (("model", "m"), ("outcome", "success"), ("pod", "p0"), ("server", server))
    }


def test_inference_token_counters_fold_into_token_usage_by_type():
    """``gen_ai.client.inference.usage.{input,output}_tokens`` are counters: cumulative
    points add their increase (a restart its whole value), over every modality."""
    r = OtlpReceiver()
    attrs = {"gen_ai.request.model": "m", "gen_ai.provider.name": "openai"}
    text = {**attrs, "gen_ai.token.modality": "text"}
    image = {**attrs, "gen_ai.token.modality": "image"}
    for start, value in [(1, 100), (1, 250), (2, 40)]:  # the last one: a restarted sender
        m = sum_metric("gen_ai.client.inference.usage.input_tokens", [(start, value)], text)
        assert r.ingest(export(m)) == (0, "")
    m = sum_metric("gen_ai.client.inference.usage.input_tokens", [(1, 7)], image)
    assert r.ingest(export(m)) == (0, "")
    m = sum_metric("gen_ai.client.inference.usage.output_tokens", [(1, 30)], text, temporality=1)
    assert r.ingest(export(m)) == (0, "")
    samples = canonical(r)
    usage = "gen_ai_server_token_usage_total"
    assert one(samples, usage, token_type="input", server="openai") == 250 + 40 + 7
    assert one(samples, usage, token_type="output", server="openai") == 30


def test_a_token_counter_sent_as_something_else_is_rejected_with_a_reason():
    r = OtlpReceiver()
    hist = hist_metric(
        "gen_ai.client.inference.usage.output_tokens", [(1, [1, 0], [10.0], 5.0)], unit="{token}"
    )
    rejected, message = r.ingest(export(hist))
    assert rejected == 1 and "counter" in message
    assert r.rejected == {"unsupported": 1.0}
    assert not pick(canonical(r), "gen_ai_server_token_usage_total")


@pytest.mark.parametrize(
    "name",
    [
        "gen_ai.client.operation.duration",  # the client's view: network and gateway included
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
        "gen_ai.client.inference.operation.input_tokens",  # repeats the usage counters
        "gen_ai.client.inference.usage.cache_read.input_tokens",  # a subset of input tokens
        "gen_ai.client.inference.usage.reasoning.output_tokens",
        "gen_ai.workflow.duration",
    ],
)
def test_client_side_and_subset_metrics_are_ignored_not_double_counted(name):
    r = OtlpReceiver()
    metric = (
        sum_metric(name, [(1, 5)], {"gen_ai.request.model": "m"})
        if "usage" in name
        else hist_metric(name, [(1, [1, 0], [0.5], 0.2)])
    )
    assert r.ingest(export(metric)) == (0, "")
    assert r.points == {"accepted": 0, "ignored": 1, "rejected": 0}
    samples = canonical(r)
    assert not [k for k in samples if k[0].startswith("gen_ai_server")]
