"""Test helpers for dcgm-exporter's two generations of GPU series names."""

from __future__ import annotations

import re

from gpuslo.foundation import conventions as c

CURRENT = c.gpu_naming("current")
LEGACY = c.gpu_naming("legacy")
# legacy name -> spec of every exported GPU field whose current name differs
RENAMED = {s.name: s for s in (*c.GPU_FIELDS, c.DCGM_XID_ERRORS) if CURRENT.name(s) != s.name}
_NAME = re.compile(r"(?:# (?:HELP|TYPE|UNIT) )?([A-Za-z_:][A-Za-z0-9_:]*)")


def has_name(text: str, name: str) -> bool:
    """``name`` occurs as a whole word (DCGM_FI_DEV_GPU_UTIL is not in ..._GPU_UTIL_RATIO)."""
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def to_current(history: str) -> str:
    """An OpenMetrics history in legacy names rewritten as an agent with ``--dcgm-names
    current`` (or dcgm-exporter 4.9.0) exports it: DCGM-4 names, base units, ``hostname``."""
    out = []
    for line in history.splitlines():
        line = line.replace(f'{c.LABEL_HOSTNAME}="', f'{c.LABEL_HOSTNAME_CURRENT}="')
        name = _NAME.match(line)
        spec = RENAMED.get(name.group(1)) if name else None
        if spec is not None:
            line = re.sub(rf"\b{spec.name}\b", CURRENT.name(spec), line, count=1)
            factor = CURRENT.factor(spec)
            if not line.startswith("#") and factor != 1.0:
                head, value, ts = line.rsplit(" ", 2)
                line = f"{head} {float(value) * factor!r} {ts}"
        out.append(line)
    return "\n".join(out) + "\n"
