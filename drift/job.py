"""Drift jobs: a reference window of request features against the current one, with
Evidently's data-drift preset, exported as Prometheus series.

Features are any numeric columns of the input (prompt and output tokens, latency, labelled
features an app logs); ``timestamp``, ``model`` and ``tenant`` are not features. Evidently
picks the test per column (Kolmogorov-Smirnov for small numeric samples, Wasserstein
distance for large ones, …) and its threshold; a column drifts when its p-value is under the
threshold or its distance is at or over it. The dataset drifts when at least ``drift_share``
of the columns do.

Series (pushed to the agent's OTLP endpoint, or written as text):

- ``gpuslo_drift_score{model, feature, method}``: the test's value (p-value or distance);
- ``gpuslo_drift_detected{model, feature}``: 1 when the feature drifted;
- ``gpuslo_drift_dataset_detected{model}`` and ``gpuslo_drift_share{model}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family, render

NOT_FEATURES = {"timestamp", "model", "tenant", "namespace", "pod"}


class DriftError(Exception):
    """Bad drift input: one line for the user."""


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    model: str
    features: list[FeatureDrift] = field(default_factory=list)
    drift_share: float = 0.5
    reference_rows: int = 0
    current_rows: int = 0
    snapshot: Any = None

    @property
    def share(self) -> float:
        return sum(f.drifted for f in self.features) / len(self.features) if self.features else 0.0

    @property
    def detected(self) -> bool:
        return bool(self.features) and self.share >= self.drift_share


def load_frame(paths: Sequence[Path]) -> Any:
    """Rows from Parquet or CSV files, concatenated."""
    import pandas as pd

    frames = []
    for path in paths:
        try:
            frames.append(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))
        except (OSError, ValueError, ImportError) as err:
            raise DriftError(f"{path}: cannot read: {err}") from None
    if not frames:
        raise DriftError("no input files")
    return pd.concat(frames, ignore_index=True)


def split_windows(
    frame: Any, reference: tuple[float, float], current: tuple[float, float]
) -> tuple[Any, Any]:
    """Rows in each [start, end) time window (``timestamp`` in Unix seconds)."""
    if "timestamp" not in frame.columns:
        raise DriftError("the input has no timestamp column to cut windows from")
    ts = frame["timestamp"].astype(float)
    ref = frame[(ts >= reference[0]) & (ts < reference[1])]
    cur = frame[(ts >= current[0]) & (ts < current[1])]
    return ref, cur


def features_of(frame: Any, wanted: Sequence[str] = ()) -> list[str]:
    import pandas as pd

    numeric = [
        c
        for c in frame.columns
        if c not in NOT_FEATURES and pd.api.types.is_numeric_dtype(frame[c])
    ]
    if wanted:
        unknown = sorted(set(wanted) - set(numeric))
        if unknown:
            raise DriftError(f"no numeric column(s) {', '.join(unknown)} in the input")
        return list(wanted)
    if not numeric:
        raise DriftError("no numeric feature columns in the input")
    return numeric


def run(
    reference: Any,
    current: Any,
    model: str = "",
    features: Sequence[str] = (),
    drift_share: float = 0.5,
    min_rows: int = 30,
) -> DriftResult:
    """Compare the two windows with Evidently's DataDriftPreset."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    if model:
        if "model" not in reference.columns:
            raise DriftError("--model given, but the input has no model column")
        reference = reference[reference["model"] == model]
        current = current[current["model"] == model]
    cols = features_of(reference, features)
    for name, frame in (("reference", reference), ("current", current)):
        if len(frame) < min_rows:
            raise DriftError(f"the {name} window has {len(frame)} rows; at least {min_rows} needed")
    snapshot = Report([DataDriftPreset(columns=cols, drift_share=drift_share)]).run(
        current[cols], reference[cols]
    )
    result = DriftResult(model, [], drift_share, len(reference), len(current), snapshot)
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        method = str(config.get("method", ""))
        score, threshold = float(metric["value"]), float(config.get("threshold", 0.05))
        drifted = score < threshold if "p_value" in method else score >= threshold
        result.features.append(
            FeatureDrift(str(config["column"]), method, score, threshold, drifted)
        )
    return result


def exposition(results: Sequence[DriftResult]) -> str:
    """The results as Prometheus text (for a textfile collector or a Pushgateway), through
    the one exposition writer (label values escaped)."""
    score, detected, dataset, share = (family(spec) for spec in c.DRIFT_FAMILIES)
    for r in results:
        model = {c.LABEL_MODEL: r.model}
        for f in r.features:
            feature = {**model, c.LABEL_FEATURE: f.feature}
            add(score, {**feature, c.LABEL_METHOD: f.method}, f.score)
            add(detected, feature, int(f.drifted))
        add(dataset, model, int(r.detected))
        add(share, model, r.share)
    return render([score, detected, dataset, share], openmetrics=False)


def push(endpoint: str, results: Sequence[DriftResult], service: str = "gpuslo-drift") -> None:
    """Send the results as OTLP gauges (``gpuslo.drift.*``) to the agent's OTLP/HTTP endpoint,
    which exposes them as the series above."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/metrics"):
        url += "/v1/metrics"
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=url), export_interval_millis=3_600_000
    )
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": service})
    )
    meter = provider.get_meter("gpuslo.drift")
    # OTLP names of the drift families: gpuslo_drift_score is pushed as gpuslo.drift.score.
    score, detected, dataset, share = (
        meter.create_gauge(c.OTLP_PASSTHROUGH_PREFIX + spec.name.removeprefix("gpuslo_drift_"))
        for spec in c.DRIFT_FAMILIES
    )
    for r in results:
        for f in r.features:
            attrs = {"model": r.model, "feature": f.feature}
            score.set(f.score, {**attrs, "method": f.method})
            detected.set(int(f.drifted), attrs)
        dataset.set(int(r.detected), {"model": r.model})
        share.set(r.share, {"model": r.model})
    ok = provider.force_flush()
    provider.shutdown()
    if not ok:
        raise DriftError(f"could not push to {url}")


def alert_rules(for_: str = "30m") -> list[dict[str, Any]]:
    """Alert on drift that lasts: a ticket, with its runbook."""
    return [
        {
            "name": c.DRIFT_RULE_GROUP,
            "rules": [
                {
                    "alert": c.ALERT_INPUT_DRIFT,
                    "expr": f"max by (model) ({c.DRIFT_DATASET_DETECTED.name}) == 1",
                    "for": for_,
                    "labels": {"severity": "ticket", "tier": "drift"},
                    "annotations": {
                        "summary": "Request features of {{ $labels.model }} drifted from "
                        "their reference window.",
                        "description": "{{ $value }}: enough features drifted; see the drift "
                        "report and gpuslo_drift_detected by feature.",
                        "runbook_url": f"{c.RUNBOOK_BASE_URL}/drift.md",
                    },
                }
            ],
        }
    ]
