"""Small PromQL text helpers shared by the generators."""

from __future__ import annotations

from collections.abc import Mapping


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def matchers(labels: Mapping[str, str], extra: str = "") -> str:
    """``{a="x",b="y"}`` (empty string when there is nothing to match)."""
    parts = [f"{k}={quote(v)}" for k, v in labels.items()]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def number(value: float) -> str:
    """A float as PromQL reads it, without binary noise (0.0010000000000000009 -> 0.001)."""
    return format(value, ".12g")


def bucket_le_matcher(seconds: float) -> str:
    """Matcher for the histogram bucket at ``seconds``: Go clients write ``le="1"``, Python
    clients ``le="1.0"``, so whole numbers match both spellings."""
    text = number(seconds)
    if float(seconds).is_integer():
        return f'le=~"{text}|{text}.0"'
    return f'le="{text}"'
