"""The Prometheus HTTP API client every reader shares: range queries chunked under
Prometheus' 11,000-points-per-series limit and joined back per series, several range queries
at once (a bounded thread pool), instant queries, samples on a fixed grid (one series, or
many at once as a matrix), and a throwaway loopback Prometheus holding OpenMetrics history."""

from __future__ import annotations

import contextlib
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

MAX_POINTS = 10_000  # per range query; Prometheus refuses more than 11,000
T = TypeVar("T")
R = TypeVar("R")
MAX_CONCURRENT = 6  # range queries in flight at once from one range_many() call


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
    if n <= MAX_POINTS:  # one chunk: nothing to join
        found = _range_chunk(url, expr, start, end, step, timeout)
        if progress is not None:
            progress(n)
        return found
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


def _range_chunk(
    url: str, expr: str, start: float, end: float, step: float, timeout: float
) -> list[Series]:
    params = {"query": expr, "start": repr(start), "end": repr(end), "step": repr(step)}
    body = get_json(
        f"{url.rstrip('/')}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout
    )
    return list(body["data"]["result"])


def concurrently(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``fn`` of each of ``items``, at most ``workers`` at once (threads: for calls that wait
    on Prometheus), the results in the order of ``items``. The first exception is raised
    without waiting for the calls still queued; those running end in the background (each
    query bounded by its own timeout). ``workers``: ``MAX_CONCURRENT`` unless given."""
    workers = MAX_CONCURRENT if workers is None else workers
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="promql")
    try:
        futures = [pool.submit(fn, item) for item in items]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def range_many(
    url: str,
    exprs: Sequence[str],
    start: float,
    end: float,
    step: float,
    timeout: float = 300.0,
    workers: int | None = None,
) -> list[list[Series]]:
    """``range_series`` for each of ``exprs``, at most ``workers`` queries in flight at once
    (Prometheus evaluates them in parallel, and one answer is decoded while the others are
    evaluated); the answers in the order of ``exprs``. Each query keeps its own ``timeout``;
    the first failure is raised (HistoryError) without waiting for the queries still queued."""
    return concurrently(
        lambda expr: range_series(url, expr, start, end, step, timeout=timeout), exprs, workers
    )


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
        points = s["values"]
        if not points:
            continue
        # Prometheus answers [[t, "v"], ...]: converted in bulk, not point by point (the
        # correlator grids 10,000 series per explanation).
        ts, vs = zip(*points, strict=True)
        t = np.fromiter(ts, np.float64, len(ts))
        v = np.fromiter(map(float, vs), np.float64, len(vs))
        k = np.rint((t - start) / step).astype(np.int64)
        keep = (k >= 0) & (k < n)
        k, v = k[keep], v[keep]
        if not len(k):
            continue
        # samples landing on one grid point (several series, or a series off the grid) add up
        hit = np.bincount(k, minlength=n) > 0
        sums = np.bincount(k, weights=v, minlength=n)
        values[hit] = np.where(np.isnan(values[hit]), 0.0, values[hit]) + sums[hit]
    return values


def grid_matrix(
    series: Sequence[Series], start: float, step: float, n: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``on_grid`` of each of ``series`` as the rows of one matrix (len(series) x n), converted
    in one pass over all their points (the correlator grids 10,000 series per explanation)."""
    out = np.full((len(series), n), np.nan)
    lengths = [len(s["values"]) for s in series]
    total = sum(lengths)
    if not total:
        return out
    points = list(chain.from_iterable(s["values"] for s in series))  # [t, "v"] pairs
    t = np.fromiter((p[0] for p in points), np.float64, total)
    v = np.fromiter((float(p[1]) for p in points), np.float64, total)
    k = np.rint((t - start) / step).astype(np.int64)
    row = np.repeat(np.arange(len(series), dtype=np.int64), lengths)
    keep = (k >= 0) & (k < n)
    cell, v = row[keep] * n + k[keep], v[keep]
    if not len(cell):
        return out
    # samples landing on one grid point of a series add up, as in on_grid
    hit = np.bincount(cell, minlength=out.size) > 0
    sums = np.bincount(cell, weights=v, minlength=out.size)
    flat = out.reshape(-1)
    flat[hit] = 0.0 + sums[hit]
    return out


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

    from .promlab import LabError, Prometheus

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
