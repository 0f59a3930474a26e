"""Where the evaluator's base rates come from: a Prometheus (range queries of the SLO's own
SLI expressions, chunked under Prometheus' 11,000-points-per-series limit), an OpenMetrics
file (loaded into a throwaway local Prometheus, so the PromQL is Prometheus' own), or a table
of base rates (CSV or Parquet: ``timestamp, slo, errors, requests``)."""

from __future__ import annotations

import contextlib
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .evaluator import SliData
from .model import SLO

MAX_POINTS = 10_000  # per range query; Prometheus refuses more than 11,000


class HistoryError(Exception):
    """History that cannot be read: one line for the user."""


Series = dict[str, Any]  # one result series of the Prometheus HTTP API


def steps(start: float, end: float, step: float) -> int:
    """Evaluation times ``start + k * step`` up to ``end``."""
    return math.floor((end - start) / step + 1e-9) + 1


def range_series(
    url: str,
    expr: str,
    start: float,
    end: float,
    step: float,
    progress: Callable[[int], None] | None = None,
    timeout: float = 300.0,
) -> list[Series]:
    """Every series ``expr`` returns at ``start + k * step`` up to ``end``, fetched in chunks
    under Prometheus' points-per-series limit and joined back per label set."""
    n = steps(start, end, step)
    joined: dict[tuple[tuple[str, str], ...], Series] = {}
    for lo in range(0, n, MAX_POINTS):
        hi = min(n, lo + MAX_POINTS)
        params = {
            "query": expr,
            "start": repr(start + lo * step),
            "end": repr(start + (hi - 1) * step),
            "step": repr(step),
        }
        body = get_json(
            f"{url.rstrip('/')}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout
        )
        for series in body["data"]["result"]:
            key = tuple(sorted(series["metric"].items()))
            if key in joined:
                joined[key]["values"].extend(series["values"])
            else:
                joined[key] = {"metric": series["metric"], "values": list(series["values"])}
        if progress is not None:
            progress(hi - lo)
    return list(joined.values())


def instant(url: str, expr: str, at: float, timeout: float = 300.0) -> list[Series]:
    """The series ``expr`` returns at ``at``."""
    params = urllib.parse.urlencode({"query": expr, "time": repr(at)})
    return list(get_json(f"{url.rstrip('/')}/api/v1/query?{params}", timeout)["data"]["result"])


def on_grid(
    series: Series | list[Series], start: float, step: float, n: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The samples of one series (or the sum of several) on the grid ``start + k * step``,
    NaN where there is none."""
    values = np.full(n, np.nan)
    for s in series if isinstance(series, list) else [series]:
        for t, v in s["values"]:
            k = round((float(t) - start) / step)
            if 0 <= k < n:
                value = float(v)
                values[k] = value if np.isnan(values[k]) else values[k] + value
    return values


def query_range(
    url: str,
    expr: str,
    start: float,
    end: float,
    step: float,
    progress: Callable[[int], None] | None = None,
    timeout: float = 300.0,
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], int]:
    """Values of ``expr`` at ``start + k * step`` up to ``end`` (NaN where it had none), and
    the number of series it returned (0 or 1 expected; several are summed)."""
    found = range_series(url, expr, start, end, step, progress, timeout)
    return on_grid(found, start, step, steps(start, end, step)), len(found)


def get_json(url: str, timeout: float) -> Any:
    """A Prometheus HTTP API answer; HistoryError with one line for anything else."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as err:
        try:
            detail = json.load(err).get("error", "")
        except (ValueError, OSError):
            detail = ""
        raise HistoryError(f"Prometheus answered HTTP {err.code}: {detail or err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise HistoryError(
            f"cannot reach Prometheus at {url.split('/api/')[0]}: {reason}"
        ) from None
    if body.get("status") != "success":
        raise HistoryError(f"Prometheus: {body.get('error', 'query failed')}")
    return body


@contextlib.contextmanager
def openmetrics_prometheus(
    paths: Sequence[Path],
    recording_rules: list[dict[str, Any]] | None = None,
    interval: str = "1m",
) -> Iterator[tuple[str, float, float]]:
    """A throwaway loopback Prometheus holding OpenMetrics history files, and the recording
    rules evaluated over them at ``interval``: yields its URL and the first and last sample
    times. Stopped and removed afterwards."""
    import tempfile

    from gpuslo.promlab import LabError, Prometheus

    for path in paths:
        if not path.is_file():
            raise HistoryError(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="gpuslo-history-") as tmp:
        try:
            with Prometheus(Path(tmp) / "prom") as prom:
                for path in paths:
                    prom.backfill_openmetrics(path)
                prom.restart()
                span = prom.block_span()
                if span is None:
                    raise HistoryError("--data: no samples in the files")
                if recording_rules:
                    prom.backfill_rules(recording_rules, span[0], span[1], interval)
                yield prom.url, span[0], span[1]
        except LabError as err:
            raise HistoryError(f"--data: {err}") from None


def sli_from_prometheus(
    url: str,
    slo: SLO,
    start: float,
    end: float,
    step: float,
    progress: Callable[[int], None] | None = None,
) -> SliData:
    """The SLO's base rates evaluated by Prometheus at every step, as the recording rules
    would have recorded them."""
    errors, n_err = query_range(url, slo.errors_query, start, end, step, progress)
    requests, n_req = query_range(url, slo.total_query, start, end, step, progress)
    if n_req > 1 or n_err > 1:
        raise HistoryError(
            f"{slo.name}: the SLI queries return {max(n_req, n_err)} series; the rules expect one"
        )
    return SliData(start, step, errors, requests)


def sli_from_table(paths: Iterable[Path], step: float | None = None) -> dict[str, SliData]:
    """Base rates per SLO from CSV or Parquet files with columns ``timestamp`` (Unix seconds
    or ISO 8601), ``slo``, ``errors`` and ``requests`` (events per second over the base window,
    as the recording rules hold them). Rows are placed on an even grid of ``step`` (default:
    the most common spacing); missing steps become gaps."""
    import pandas as pd

    frames = []
    for path in paths:
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except (OSError, ValueError, ImportError) as err:
            raise HistoryError(f"{path}: cannot read: {err}") from None
        missing = {"timestamp", "slo", "errors", "requests"} - set(frame.columns)
        if missing:
            raise HistoryError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        frames.append(frame)
    if not frames:
        return {}
    table = pd.concat(frames, ignore_index=True)
    ts = table["timestamp"]
    if not np.issubdtype(ts.dtype, np.number):
        try:
            ts = pd.to_datetime(ts, utc=True).astype("int64") / 1e9
        except (ValueError, TypeError) as err:
            raise HistoryError(f"timestamp: not Unix seconds or ISO 8601: {err}") from None
    table = table.assign(timestamp=ts.astype(float))
    out = {}
    for name, rows in table.groupby("slo", sort=True):
        rows = rows.sort_values("timestamp")
        times = rows["timestamp"].to_numpy()
        if step:
            spacing = step
        elif len(times) > 1:
            spacing = float(pd.Series(np.diff(times)).mode().iloc[0])
        else:
            spacing = 60.0
        if spacing <= 0:
            raise HistoryError(f"slo {name}: repeated timestamps")
        n = round((times[-1] - times[0]) / spacing) + 1
        errors, requests = np.full(n, np.nan), np.full(n, np.nan)
        k = np.round((times - times[0]) / spacing).astype(int)
        errors[k] = rows["errors"].to_numpy(dtype=float)
        requests[k] = rows["requests"].to_numpy(dtype=float)
        out[str(name)] = SliData(float(times[0]), spacing, errors, requests)
    return out
