"""Prometheus durations (``5m``, ``1h30m``, ``30d``) to seconds and back."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; ``ValueError`` for anything else."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise ValueError(f"not a duration like 5m, 1h or 30d: {text!r}")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for whole seconds (``86400`` -> ``1d``)."""
    whole = round(seconds)
    if whole <= 0:
        raise ValueError("duration must be positive")
    out = []
    for unit in ("d", "h", "m", "s"):  # no weeks: 30d reads better than 4w2d
        size = int(_UNITS[unit])
        if whole >= size:
            n, whole = divmod(whole, size)
            out.append(f"{n}{unit}")
    return "".join(out)


def format_range(seconds: float) -> str:
    """A range selector of ``seconds`` minus one millisecond (``1h`` -> ``59m59s999ms``).

    Prometheus 2 selects ``[t-W, t]`` with both ends included, so a window of W over a series
    recorded every interval holds W/interval + 1 samples and counts one interval twice over
    consecutive windows; Prometheus 3 leaves the start out. One millisecond less gives exactly
    W/interval samples on both, as long as W is a multiple of the evaluation interval.
    """
    ms = round(seconds * 1000) - 1
    if ms <= 0:
        raise ValueError("duration must be positive")
    out = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = round(_UNITS[unit] * 1000)
        if ms >= size:
            n, ms = divmod(ms, size)
            out.append(f"{n}{unit}")
    return "".join(out)
