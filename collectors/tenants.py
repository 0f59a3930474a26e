"""The tenant cardinality cap: the first ``cap`` distinct tenants keep their own series, every
later one is folded into ``tenant="__other__"`` and counted.

Admission is first come, first kept, for the life of the process: a tenant never moves
between its own series and ``__other__``, so no counter appears to reset or jumps between
series. A restart re-admits in arrival order; docs/requests.md says how to size the cap.
"""

from __future__ import annotations

import threading

from prometheus_client.core import Metric

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family

DEFAULT_TENANT_CAP = 100


class TenantCap:
    """Maps a tenant to itself or to ``__other__``; thread-safe. Also an agent collector
    (``tenants``) exposing the overflow counter, the tracked count and the cap."""

    name = "tenants"

    def __init__(self, cap: int = DEFAULT_TENANT_CAP) -> None:
        if cap < 0:
            raise ValueError("tenant cap must be >= 0")
        self.cap = cap
        self._admitted: set[str] = set()
        self._overflow: dict[str, float] = {}
        self._lock = threading.Lock()

    def admit(self, tenant: str, source: str = "", samples: float = 1.0) -> str:
        """The tenant label value to use; ``samples`` are counted as overflow when folded."""
        if not tenant or tenant == c.TENANT_OTHER:
            return tenant
        admitted = self._admitted
        if tenant in admitted:  # the hot path takes no lock: set membership is atomic
            return tenant
        with self._lock:
            if tenant in admitted:
                return tenant
            if len(admitted) < self.cap:
                admitted.add(tenant)
                return tenant
            self._overflow[source] = self._overflow.get(source, 0.0) + samples
        return c.TENANT_OTHER

    def count_overflow(self, source: str, samples: float) -> None:
        """Count samples folded into ``__other__`` by a caller that cached the mapping."""
        with self._lock:
            self._overflow[source] = self._overflow.get(source, 0.0) + samples

    @property
    def tracked(self) -> int:
        return len(self._admitted)

    def collect(self) -> list[Metric]:
        """The collector interface: the same as ``metrics()``."""
        return self.metrics()

    def metrics(self) -> list[Metric]:
        """``gpuslo_tenant_overflow_total{source}``, ``gpuslo_tenants_tracked``, the cap."""
        overflow, tracked, cap = (
            family(c.TENANT_OVERFLOW),
            family(c.TENANTS_TRACKED),
            family(c.TENANT_CAP),
        )
        with self._lock:
            for source, value in sorted(self._overflow.items()):
                add(overflow, {c.LABEL_SOURCE: source}, value)
            add(tracked, {}, float(len(self._admitted)))
        add(cap, {}, float(self.cap))
        return [overflow, tracked, cap]
