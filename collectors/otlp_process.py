"""The OTLP receiver in a process of its own, so that ingest never holds the agent's GIL.

Decoding and folding exports is Python work: in the agent's process it competes with the
scrape handler for the GIL, and a saturated sender added 6.6 to 9.4 ms to the scrape p99
(docs/benchmarks.md, ``otlp_ingest``). Here the receiver (``OtlpReceiver``), its OTLP/HTTP
server and its OTLP/gRPC server run in a child process (``spawn``: no threads are forked).
Once per sampling interval the agent's collector (``OtlpIngest``) asks the child for its
families; the child renders them (both exposition formats) and hands back finished text, or
"unchanged". The agent only joins that text into a scrape, so the cost of ingest on the
scrape path is the copy of the rendered families once a second, whatever the senders do.

Nothing accepted is lost and memory stays bounded: an export is answered only after it is
folded in (the canonical state lives in the child), what the child holds in hand is bounded by
the receiver's in-flight slots (``--otlp-max-inflight``; a sender beyond them is refused with
429 or UNAVAILABLE and retries), and what crosses the pipe by the receiver's series budget.

Tenants: the child keeps its own cap of the same size (``--tenant-cap``) and reports the
tenants it admitted and its overflow counts; the agent adds them to its own ``TenantCap``, so
``gpuslo_tenants_tracked`` and ``gpuslo_tenant_overflow_total{source="otlp"}`` still tell what
the receiver did. The two caps are apart: server targets and OTLP can each admit up to the cap.

If the child dies, the collector reports it (``gpuslo_collector_success{collector="otlp"} 0``
and a log line) rather than serving stale series; the canonical state of a child that died is
gone (its counters restart, which ``rate()`` handles).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import render

from .agent import Rendered, _split
from .errors import CollectorUnavailable
from .otlp import SELF_SERIES, OtlpReceiver
from .tenants import TenantCap

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for the child to import, bind its ports and say so
ANSWER_TIMEOUT = 10.0  # seconds for the child to answer one collect
# The child runs at a lower CPU priority: where the node's cores are all busy, the scheduler
# gives the agent's scrape and sampling threads the CPU first, and ingest slows down instead
# (its senders then meet the in-flight limit and retry: backpressure, not a slow scrape).
NICE = 10


class IngestFailed(Exception):
    """The ingest process could not start (a port taken, a bad address): the message says
    which listener and why."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class IngestConfig:
    """What the child needs: its listeners, the receiver's limits, the tenant cap."""

    http: tuple[str, int] | None = None
    grpc: tuple[str, int] | None = None
    receiver: dict[str, Any] = field(default_factory=dict)  # OtlpReceiver keyword arguments
    tenant_cap: int | None = None
    log_level: int = logging.WARNING
    nice: int = NICE


def _rendered(fam: Metric) -> tuple[str, str, str, int, dict[bool, tuple[str, str]]]:
    """One family as text in both formats. Their sample lines are the same (only the HELP and
    TYPE lines of counters and info differ), so the samples are rendered once: the
    OpenMetrics header comes from the family cut to its first sample."""
    header, body = _split(render([fam], False))
    first = Metric(fam.name, fam.documentation, fam.type)
    first.samples = fam.samples[:1]
    om_header = _split(render([first], True))[0]
    text = {False: (header, body), True: (om_header, body)}
    return fam.name, fam.documentation, fam.type, len(fam.samples), text


def _child(conn: Any, config: IngestConfig) -> None:
    """The ingest process: serve OTLP until the agent says stop or goes away."""
    from .otlp import OtlpServer
    from .otlp_grpc import OtlpGrpcServer

    logging.basicConfig(level=config.log_level, format="%(levelname)s %(name)s: %(message)s")
    if config.nice:
        with contextlib.suppress(OSError):  # not allowed (or not POSIX): same priority
            os.nice(config.nice)
    tenants = TenantCap() if config.tenant_cap is None else TenantCap(config.tenant_cap)
    receiver = OtlpReceiver(tenants, **config.receiver)
    servers: list[Any] = []
    for flag, address, kind in (
        ("--otlp-listen", config.http, OtlpServer),
        ("--otlp-grpc-listen", config.grpc, OtlpGrpcServer),
    ):
        if address is None:
            continue
        try:
            servers.append(kind(receiver, *address))
        except OSError as err:
            for server in servers:
                server.stop()
            conn.send(("error", flag, err.strerror or str(err)))
            return
    for server in servers:
        server.start()
    conn.send(("ready", [server.address for server in servers]))
    # Generations of the families: the agent says which one it holds, and gets "unchanged"
    # (None) only when that is the current one, so a reply it dropped is never assumed.
    last: list[Metric] | None = None
    gen, rendered = 0, list[Any]()
    try:
        while True:
            try:
                ask = conn.recv()
            except (EOFError, OSError):  # the agent went away
                break
            if ask is None:
                break
            seq, have = ask
            families = receiver.collect()
            if families is not last:
                last, gen = families, gen + 1
                rendered = [_rendered(f) for f in families]
            payload = None if have == gen else rendered
            with tenants._lock:
                admitted, overflow = sorted(tenants._admitted), dict(tenants._overflow)
            reply = (seq, gen, payload, admitted, overflow)
            conn.send_bytes(pickle.dumps(reply, protocol=5))
    finally:
        for server in servers:
            server.stop()


class OtlpIngest:
    """Agent collector ``otlp``: the OTLP receiver running in a child process."""

    name = c.COLLECTOR_OTLP

    def __init__(self, config: IngestConfig, tenants: TenantCap) -> None:
        self.config = config
        self.tenants = tenants
        max_series = config.receiver.get("max_series")
        probe = OtlpReceiver(max_series=max_series) if max_series else OtlpReceiver()
        self.series_budget = probe.max_series + SELF_SERIES
        self.addresses: list[tuple[str, int]] = []
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._seq = 0
        self._gen = -1  # the generation of the child's families held here
        self._families: tuple[Metric, ...] = ()
        self._overflow: dict[str, float] = {}

    def start(self, timeout: float = START_TIMEOUT) -> list[tuple[str, int]]:
        """Start the child and wait until its listeners are bound; their addresses (HTTP
        first). Raises ``IngestFailed``."""
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child, args=(theirs, self.config), name="gpuslo-otlp", daemon=True
        )
        self._proc.start()
        theirs.close()
        self._conn = mine
        if not mine.poll(timeout):
            self.close()
            raise IngestFailed("--otlp-listen", "the OTLP ingest process did not start")
        try:
            reply = mine.recv()
        except EOFError:
            self._proc.join(5)
            raise IngestFailed(
                "--otlp-listen", f"the OTLP ingest process exited ({self._proc.exitcode})"
            ) from None
        if reply[0] == "error":
            self.close()
            raise IngestFailed(reply[1], reply[2])
        self.addresses = list(reply[1])
        return self.addresses

    def collect(self) -> tuple[Metric, ...]:
        """The child's families as rendered text (the same objects while nothing changed)."""
        if self._proc is None or not self._proc.is_alive():
            code = None if self._proc is None else self._proc.exitcode
            raise CollectorUnavailable(
                f"the OTLP ingest process is not running (exit code {code})", logging.ERROR
            )
        with self._lock:
            self._seq += 1
            seq = self._seq
            try:
                self._conn.send((seq, self._gen))
                while True:  # answers to earlier, timed-out asks are skipped
                    if not self._conn.poll(ANSWER_TIMEOUT):
                        raise CollectorUnavailable(
                            f"the OTLP ingest process did not answer in {ANSWER_TIMEOUT} s",
                            logging.ERROR,
                        )
                    got, gen, payload, admitted, overflow = pickle.loads(self._conn.recv_bytes())
                    if got == seq:
                        break
            except (EOFError, OSError) as err:
                raise CollectorUnavailable(
                    f"the OTLP ingest process went away: {err}", logging.ERROR
                ) from None
        for tenant in admitted:
            self.tenants.admit(tenant, c.COLLECTOR_OTLP, 0.0)
        for source, total in overflow.items():
            delta = total - self._overflow.get(source, 0.0)
            if delta > 0:
                self.tenants.count_overflow(source, delta)
        self._overflow = overflow
        if payload is not None:
            self._families = tuple(Rendered(*fam) for fam in payload)
            self._gen = gen
        return self._families

    def close(self) -> None:
        """Stop the child: ask, then wait, then terminate."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        self._proc = None
        with self._lock, contextlib.suppress(OSError, ValueError):  # already gone
            conn.send(None)
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        conn.close()
