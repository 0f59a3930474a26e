"""``range_many`` (several range queries in flight at once, answers in order, bounded) and
``grid_matrix`` (many series laid on one grid at once, as ``on_grid`` lays each), against a
loopback server answering ``/api/v1/query_range`` in the Prometheus HTTP API's documented
shape (``{"status": "success", "data": {"resultType": "matrix", "result": [...]}}``)."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from gpuslo.foundation.prometheus import (
    HistoryError,
    grid_matrix,
    on_grid,
    range_many,
    range_series,
)


class FakePrometheus:
    """Answers each query ``q<i>`` with series ``i`` after ``delay`` seconds (``fail``: HTTP
    400 for that query); counts the queries in flight at once."""

    def __init__(self, delay: float = 0.0, fail: str = "") -> None:
        self.delay, self.fail = delay, fail
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.seen: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                args = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                expr = args["query"][0]
                start, end, step = (float(args[k][0]) for k in ("start", "end", "step"))
                with fake.lock:
                    fake.active += 1
                    fake.peak = max(fake.peak, fake.active)
                    fake.seen.append(expr)
                time.sleep(fake.delay)
                with fake.lock:
                    fake.active -= 1
                if expr == fake.fail:
                    self._send(400, {"status": "error", "error": f"parse error in {expr}"})
                    return
                i = int(expr.removeprefix("q"))
                n = round((end - start) / step) + 1
                result = [
                    {
                        "metric": {"gpu": str(g), "q": expr},
                        "values": [[start + k * step, f"{i * 100 + g + k}"] for k in range(n)],
                    }
                    for g in range(i % 3)  # 0, 1 or 2 series
                ]
                self._send(
                    200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
                )

            def _send(self, code: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)  # a client that timed out has gone

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def __enter__(self) -> FakePrometheus:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    with FakePrometheus(delay=0.05) as fake:
        yield fake


def test_answers_come_back_in_the_order_of_the_queries(prom: FakePrometheus) -> None:
    exprs = [f"q{i}" for i in range(12)]
    got = range_many(prom.url, exprs, 0.0, 50.0, 10.0, timeout=5, workers=4)
    assert got == [range_series(prom.url, e, 0.0, 50.0, 10.0, timeout=5) for e in exprs]
    assert [len(found) for found in got] == [i % 3 for i in range(12)]


def test_queries_overlap_but_never_more_than_the_pool_allows(prom: FakePrometheus) -> None:
    range_many(prom.url, [f"q{i}" for i in range(12)], 0.0, 50.0, 10.0, timeout=5, workers=4)
    assert prom.peak == 4
    prom.peak = 0
    range_many(prom.url, [f"q{i}" for i in range(6)], 0.0, 50.0, 10.0, timeout=5, workers=1)
    assert prom.peak == 1


def test_a_failing_query_raises_its_one_line_error_without_the_queue() -> None:
    with FakePrometheus(delay=0.2, fail="q0") as fake:
        started = time.monotonic()
        with pytest.raises(HistoryError, match="HTTP 400: parse error in q0"):
            range_many(fake.url, [f"q{i}" for i in range(40)], 0.0, 50.0, 10.0, 5, workers=2)
        # 40 queries two at a time would take 4 s; the queued ones are dropped
        assert time.monotonic() - started < 2.0
        assert len(fake.seen) < 10


def test_a_slow_prometheus_is_bounded_by_the_per_query_timeout() -> None:
    with FakePrometheus(delay=3.0) as fake:
        started = time.monotonic()
        with pytest.raises(HistoryError, match="cannot reach Prometheus"):
            range_many(fake.url, ["q1", "q2", "q3"], 0.0, 50.0, 10.0, timeout=0.3, workers=3)
        assert time.monotonic() - started < 2.0


def _series(points: list[tuple[float, str]]) -> dict[str, object]:
    return {"metric": {}, "values": [[t, v] for t, v in points]}


def test_the_matrix_rows_are_each_series_on_the_grid() -> None:
    series = [
        _series([(-10.0, "9"), (0.0, "+Inf"), (10.0, "NaN"), (20.0, "-Inf"), (30.0, "4")]),
        _series([]),
        _series([(0.4, "1"), (9.6, "2"), (10.2, "3")]),  # two land on one point: they add up
        _series([(20.0, "-0"), (0.0, "0.1")]),
    ]
    got = grid_matrix(series, start=0.0, step=10.0, n=3)
    assert got.shape == (4, 3)
    for row, s in zip(got, series, strict=True):
        np.testing.assert_array_equal(row, on_grid(s, 0.0, 10.0, 3))
    assert got[0][0] == math.inf and math.isnan(got[0][1]) and got[0][2] == -math.inf
    assert np.isnan(got[1]).all()
    assert got[2].tolist()[:2] == [1.0, 5.0]
    assert got[3][0] == 0.1 and got[3][2] == 0.0


def test_no_series_or_no_points_is_an_all_nan_matrix() -> None:
    assert grid_matrix([], 0.0, 1.0, 3).shape == (0, 3)
    assert np.isnan(grid_matrix([_series([]), _series([(99.0, "1")])], 0.0, 1.0, 3)).all()
