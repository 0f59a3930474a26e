"""``on_grid``: Prometheus range answers laid on a fixed grid, summed across series."""

from __future__ import annotations

import math

import numpy as np

from gpuslo.foundation.prometheus import on_grid


def _series(points: list[tuple[float, str]]) -> dict[str, object]:
    return {"metric": {}, "values": [[t, v] for t, v in points]}


def test_samples_land_on_their_grid_points_and_gaps_stay_nan() -> None:
    got = on_grid(_series([(100.0, "1"), (130.0, "3.5")]), start=100.0, step=15.0, n=4)
    assert got[0] == 1.0 and got[2] == 3.5
    assert math.isnan(got[1]) and math.isnan(got[3])


def test_several_series_add_up_where_they_meet_and_keep_their_own_points() -> None:
    a = _series([(0.0, "1"), (10.0, "2")])
    b = _series([(10.0, "5"), (20.0, "7")])
    got = on_grid([a, b], start=0.0, step=10.0, n=3)
    assert got.tolist() == [1.0, 7.0, 7.0]


def test_points_off_the_window_are_dropped_and_special_values_parse() -> None:
    s = _series([(-10.0, "9"), (0.0, "+Inf"), (10.0, "NaN"), (20.0, "-Inf"), (30.0, "4")])
    got = on_grid(s, start=0.0, step=10.0, n=3)
    assert got[0] == math.inf and math.isnan(got[1]) and got[2] == -math.inf


def test_timestamps_a_little_off_the_grid_round_to_the_nearest_point() -> None:
    got = on_grid(_series([(0.4, "1"), (9.6, "2")]), start=0.0, step=10.0, n=2)
    assert got.tolist() == [1.0, 2.0]


def test_no_series_or_no_points_is_all_nan() -> None:
    assert np.isnan(on_grid([], 0.0, 1.0, 3)).all()
    assert np.isnan(on_grid(_series([]), 0.0, 1.0, 3)).all()
