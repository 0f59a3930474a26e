"""The agent core: each collector samples on its own thread; a scrape serves snapshots.

A scrape never touches hardware: it joins each collector's last snapshot (rendered once per
snapshot and cached) with a few self-metrics computed at scrape time. A collector may hand back
families rendered elsewhere (``Rendered``: the OTLP receiver's, from its own process); their
text is joined as it is.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from gpuslo import __version__
from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family, render

from .errors import CollectorUnavailable

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0
DEFAULT_MAX_SERIES = 20_000


class Collector(Protocol):
    """A source of metric families, read fresh on each ``collect()``."""

    name: str

    def collect(self) -> Iterable[Metric]:
        """Read the source once."""
        ...


class Rendered(Metric):
    """A family rendered in another process (the OTLP ingest process, ``otlp_process``): its
    exposition text per format (``openmetrics`` -> (HELP and TYPE lines, sample lines)) and
    the number of samples it holds. It carries no sample objects: the agent joins its text."""

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        series: int,
        text: dict[bool, tuple[str, str]],
    ) -> None:
        super().__init__(name, documentation, typ)
        self.series = series
        self.text = text


def _count(fam: Metric) -> int:
    return fam.series if isinstance(fam, Rendered) else len(fam.samples)


def _render(families: Iterable[Metric], openmetrics: bool) -> str:
    """``render`` for families some of which were rendered elsewhere (their text as it is)."""
    out: list[str] = []
    plain: list[Metric] = []
    for fam in families:
        if isinstance(fam, Rendered):
            if plain:
                out.append(render(plain, openmetrics))
                plain = []
            if fam.series:
                out.extend(fam.text[openmetrics])
        else:
            plain.append(fam)
    if plain:
        out.append(render(plain, openmetrics))
    return "".join(out)


def _split(text: str) -> tuple[str, str]:
    """One family's text as (its HELP and TYPE lines, its sample lines)."""
    cut = text.find("\n", text.find("\n") + 1) + 1
    return text[:cut], text[cut:]


@dataclass
class Snapshot:
    """What one sample of one collector produced."""

    families: tuple[Metric, ...]
    series: int
    duration: float
    success: bool
    taken_at: float
    error: str | None = None
    _rendered: dict[bool, str] = field(default_factory=dict, repr=False)
    _parts: dict[tuple[str, bool], tuple[str, str]] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """The names of the families that have samples."""
        return frozenset(m.name for m in self.families if _count(m))

    def text(self, openmetrics: bool) -> str:
        """Exposition text of the families, rendered once per format."""
        cached = self._rendered.get(openmetrics)
        if cached is None:
            cached = _render(self.families, openmetrics)
            self._rendered[openmetrics] = cached
        return cached

    def text_without(self, shared: frozenset[str], openmetrics: bool) -> str:
        """Exposition text of the families not in ``shared``, rendered once per format."""
        key = ("\0" + " ".join(sorted(shared)), openmetrics)  # never a family name
        cached = self._parts.get(key)
        if cached is None:
            rest = [m for m in self.families if m.name not in shared]
            cached = self._parts[key] = ("", _render(rest, openmetrics))
        return cached[1]

    def parts(self, fam: Metric, openmetrics: bool) -> tuple[str, str]:
        """One family's (header, samples) text, rendered once per format: a family that two
        collectors serve is joined from these on every scrape, never rendered again."""
        key = (fam.name, openmetrics)
        cached = self._parts.get(key)
        if cached is None:
            if isinstance(fam, Rendered):
                cached = fam.text[openmetrics]
            else:
                cached = _split(render([fam], openmetrics))
            self._parts[key] = cached
        return cached


def _shared_names(snaps: Sequence[Snapshot]) -> frozenset[str]:
    """Family names that more than one snapshot serves."""
    seen: set[str] = set()
    shared: set[str] = set()
    for snap in snaps:
        shared |= seen & snap.names
        seen |= snap.names
    return frozenset(shared)


def _same(a: tuple[Metric, ...], b: tuple[Metric, ...]) -> bool:
    """The very same family objects (a collector that hands back what it had)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


_GROUPED = ("histogram", "gaugehistogram", "summary")


def _whole_series(fam: Metric, room: int) -> list[Sample]:
    """The first samples of ``fam`` that fit in ``room`` without cutting a series: for a
    histogram or summary, the samples of one label set (less ``le``/``quantile``) go together."""
    if fam.type not in _GROUPED:
        return list(fam.samples[:room])
    groups: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
    for s in fam.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("le", "quantile")))
        groups.setdefault(key, []).append(s)
    out: list[Sample] = []
    for samples in groups.values():
        if len(out) + len(samples) > room:
            break
        out.extend(samples)
    return out


@dataclass(frozen=True)
class CollectorState:
    """What the self-metrics and ``/healthz`` say about one collector: plain values, so the
    scrape process (``scrape_process``) can compute them from a copy."""

    name: str
    dropped: int
    sampled: bool = False
    duration: float = 0.0
    success: bool = False
    taken_at: float = 0.0
    series: int = 0
    error: str | None = None


def self_families(states: Sequence[CollectorState], now: float) -> list[Metric]:
    """Per-collector duration, success, sample age, series and drops at ``now``."""
    duration, success = family(c.COLLECTOR_DURATION), family(c.COLLECTOR_SUCCESS)
    age, series = family(c.COLLECTOR_AGE), family(c.COLLECTOR_SERIES)
    dropped, info = family(c.COLLECTOR_DROPPED), family(c.AGENT_INFO)
    add(info, {c.LABEL_VERSION: __version__}, 1.0)
    for st in states:
        labels = {c.LABEL_COLLECTOR: st.name}
        add(dropped, labels, st.dropped)
        if not st.sampled:
            add(success, labels, 0.0)
            continue
        add(duration, labels, st.duration)
        add(success, labels, 1.0 if st.success else 0.0)
        add(age, labels, max(0.0, now - st.taken_at))
        add(series, labels, st.series)
    return [info, duration, success, age, series, dropped]


def health_of(states: Sequence[CollectorState], now: float) -> dict[str, dict[str, object]]:
    """Per-collector state for ``/healthz`` at ``now``."""
    return {
        st.name: {
            "success": st.sampled and st.success,
            "age_seconds": round(now - st.taken_at, 3) if st.sampled else None,
            "error": st.error if st.sampled else None,
        }
        for st in states
    }


def whole_scrape(
    collected: str, states: Sequence[CollectorState], now: float, openmetrics: bool
) -> str:
    """The scrape: the collectors' text, the self-metrics at ``now`` and, for OpenMetrics,
    ``# EOF`` (the agent's own server and the scrape process both serve this)."""
    tail = render(self_families(states, now), openmetrics)
    return collected + tail + ("# EOF\n" if openmetrics else "")


class Agent:
    """Runs collectors on their own cadence and renders the latest snapshots."""

    def __init__(
        self,
        collectors: Sequence[Collector],
        interval: float = DEFAULT_INTERVAL,
        max_series: int = DEFAULT_MAX_SERIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("sampling interval must be > 0 seconds")
        if max_series < 1:
            raise ValueError("series cap must be >= 1")
        names = [col.name for col in collectors]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate collector names: {names}")
        self.collectors = list(collectors)
        self.interval = interval
        self.max_series = max_series
        self._clock = clock
        self._snapshots: dict[str, Snapshot] = {}
        self._dropped: dict[str, int] = dict.fromkeys(names, 0)
        self._logged: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Exposition formats scrapers have asked for: new snapshots are pre-rendered in them
        # on the sampling thread, so a scrape only joins ready text.
        self._formats_wanted: set[bool] = set()
        # Called after every new snapshot (the scrape process's pusher wakes on it).
        self.on_sample: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ sampling
    def sample(self, collector: Collector) -> Snapshot:
        """Run one collector once, isolating its failure from the others."""
        start = self._clock()
        error: str | None = None
        families: tuple[Metric, ...] = ()
        try:
            families = tuple(collector.collect())
            success = True
            self._logged.pop(collector.name, None)
        except CollectorUnavailable as err:
            success, error = False, str(err)
            self._log_once(collector.name, err.level, f"{collector.name} collector: {error}")
        except Exception as err:  # a broken collector must not take the agent down
            success, error = False, f"{type(err).__name__}: {err}"
            if self._logged.get(collector.name) != error:
                log.exception("collector %s failed", collector.name)
                self._logged[collector.name] = error
        cap = self.cap_of(collector)
        families, series, dropped = self._cap(families, cap)
        if dropped:
            self._dropped[collector.name] = self._dropped.get(collector.name, 0) + dropped
            self._log_once(
                collector.name + "/cap",
                logging.WARNING,
                f"{collector.name}: over the cap of {cap} series, dropping {dropped}",
            )
        end = self._clock()
        snap = Snapshot(families, series, end - start, success, end, error)
        prev = self._snapshots.get(collector.name)
        if prev is not None and _same(prev.families, families):
            snap._rendered = prev._rendered  # unchanged families: reuse their text
            snap._parts = prev._parts
        for openmetrics in tuple(self._formats_wanted):
            snap.text(openmetrics)
        self._snapshots[collector.name] = snap
        for notify in self.on_sample:
            notify()
        return snap

    def _log_once(self, key: str, level: int, message: str) -> None:
        if self._logged.get(key) != message:
            log.log(level, "%s", message)
            self._logged[key] = message

    def cap_of(self, collector: Collector) -> int:
        """The series cap of one collector: its own ``series_budget`` when it keeps one (the
        OTLP receiver budgets what clients push by itself), else the agent's ``max_series``.
        Each collector is capped apart, so none can crowd out another's families."""
        budget = getattr(collector, "series_budget", None)
        return budget if isinstance(budget, int) and budget > 0 else self.max_series

    def _cap(
        self, families: tuple[Metric, ...], cap: int | None = None
    ) -> tuple[tuple[Metric, ...], int, int]:
        """Keep at most ``cap`` samples, in order, and only whole series: a histogram or
        summary series (its buckets, count and sum) is kept entirely or not at all."""
        cap = self.max_series if cap is None else cap
        total = sum(map(_count, families))
        if total <= cap:
            return families, total, 0
        kept: list[Metric] = []
        room = cap
        for fam in families:
            if room <= 0:
                break
            if isinstance(fam, Rendered):  # text cannot be cut: whole or not at all
                if fam.series > room:
                    break
                kept.append(fam)
                room -= fam.series
                continue
            if len(fam.samples) > room:
                trimmed = Metric(fam.name, fam.documentation, fam.type)
                trimmed.samples = _whole_series(fam, room)
                if not trimmed.samples:
                    break
                fam = trimmed
            kept.append(fam)
            room -= len(fam.samples)
        series = cap - room
        return tuple(kept), series, total - series

    def sample_all(self) -> None:
        """Sample every collector once, in order (for ``--once`` and tests)."""
        for collector in self.collectors:
            self.sample(collector)

    def start(self) -> None:
        """One sampling thread per collector, so a hung source delays only itself."""
        for collector in self.collectors:
            thread = threading.Thread(
                target=self._loop, args=(collector,), name=f"sample-{collector.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _loop(self, collector: Collector) -> None:
        next_at = self._clock()
        while not self._stop.is_set():
            self.sample(collector)
            next_at += self.interval
            delay = next_at - self._clock()
            if delay < 0:  # fell behind (slow hardware): skip missed ticks, don't burst
                next_at = self._clock()
                delay = 0.0
            self._stop.wait(delay)

    def stop(self) -> None:
        """Stop the sampling threads and close collectors that hold hardware."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for collector in self.collectors:
            close = getattr(collector, "close", None)
            if callable(close):
                close()

    # ------------------------------------------------------------------ exposition
    def snapshot(self, name: str) -> Snapshot | None:
        """The latest snapshot of a collector, if it has sampled yet."""
        return self._snapshots.get(name)

    def states(self) -> list[CollectorState]:
        """Each collector's latest sample as plain values (for self-metrics and health)."""
        out = []
        for collector in self.collectors:
            dropped = self._dropped.get(collector.name, 0)
            snap = self._snapshots.get(collector.name)
            if snap is None:
                out.append(CollectorState(collector.name, dropped))
                continue
            out.append(
                CollectorState(
                    collector.name,
                    dropped,
                    True,
                    snap.duration,
                    snap.success,
                    snap.taken_at,
                    snap.series,
                    snap.error,
                )
            )
        return out

    def self_metrics(self) -> list[Metric]:
        """Per-collector duration, success, sample age, series and drops, computed now."""
        return self_families(self.states(), self._clock())

    def render(self, openmetrics: bool = False) -> str:
        """The whole scrape: every collector's latest snapshot plus self-metrics."""
        collected = self.render_collected(openmetrics)
        return whole_scrape(collected, self.states(), self._clock(), openmetrics)

    def render_collected(self, openmetrics: bool = False) -> str:
        """Every collector's latest snapshot: the scrape less self-metrics and ``# EOF``."""
        self._formats_wanted.add(openmetrics)
        snaps = [s for col in self.collectors if (s := self._snapshots.get(col.name)) is not None]
        shared = _shared_names(snaps)
        if not shared:  # the usual case: each collector's cached text as it is
            parts = [snap.text(openmetrics) for snap in snaps]
        else:
            # Two collectors serve one family (a server target's and OTLP's canonical request
            # series): one HELP/TYPE block holding both's samples, or the scrape is invalid.
            # Joined from each snapshot's text of the family (rendered once per snapshot).
            parts, merged = [], dict[str, list[str]]()
            for snap in snaps:
                if snap.names.isdisjoint(shared):
                    parts.append(snap.text(openmetrics))
                    continue
                parts.append(snap.text_without(shared, openmetrics))
                for m in snap.families:
                    if m.name in shared and _count(m):
                        header, body = snap.parts(m, openmetrics)
                        into = merged.get(m.name)
                        if into is None:
                            merged[m.name] = [header, body]
                        else:
                            into.append(body)
            parts.extend("".join(texts) for texts in merged.values())
        return "".join(parts)

    def health(self) -> dict[str, dict[str, object]]:
        """Per-collector state for ``/healthz``."""
        return health_of(self.states(), self._clock())
