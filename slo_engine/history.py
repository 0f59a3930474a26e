"""Where the evaluator's base rates come from: a Prometheus (range queries of the SLO's own
SLI expressions), an OpenMetrics file (loaded into a throwaway local Prometheus, so the PromQL
is Prometheus' own), or a table of base rates (CSV or Parquet: ``timestamp, slo, errors,
requests``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from gpuslo.foundation.prometheus import HistoryError, query_range

from .evaluator import SliData
from .model import SLO


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
