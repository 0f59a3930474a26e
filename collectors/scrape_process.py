"""The agent's ``/metrics`` and ``/healthz`` served from a process of their own.

In the agent's process a scrape shares the GIL with every sampling thread: the server
collector's fetch threads and its parser, the GPU collector, the renderer. While they work, a
scrape that needs two milliseconds of Python gets a fraction of the interpreter and waits
tens of milliseconds (bench/otlp_ingest.py, condition A: a p99 of 46 ms with 20 vLLM
targets, against a p50 of 2 ms). Here the HTTP server runs in a child process (``spawn``: no
threads are forked) that holds a copy of the rendered snapshots and nothing else, so a scrape
waits on no collector whatever the collectors do.

After every new snapshot the agent's pusher thread joins the collectors' text in both
exposition formats (each snapshot is rendered once per format, on its sampling thread; see
``Agent.sample``) and sends it with each collector's state (duration, success, time taken,
series, error) to the child; pushes that pile up while one is sent are coalesced into the
next. The child computes the self-metrics' sample age at scrape time from the same monotonic
clock (system-wide on Linux), so a scrape of the child says what a scrape of the agent would.

If the agent dies the child sees its pipe close and exits; if the child dies the agent logs
it and stops (``ScrapeProcess.alive``), as it would if its HTTP thread died: a node agent that
cannot be scraped should be restarted by its supervisor, not linger.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import threading
import time
from typing import Any

from .agent import Agent, CollectorState, health_of, whole_scrape
from .server import CONNECTION_TIMEOUT, AgentServer

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for the child to import, bind its port and say so


class ScrapeListenFailed(OSError):
    """The child could not bind its address: the message says why."""


class Mirror:
    """What the child serves: the latest collected text per format and the collectors'
    states; ``render`` and ``health`` as ``Agent`` has them, so ``AgentServer`` serves it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: dict[bool, str] = {False: "", True: ""}
        self._states: list[CollectorState] = []

    def update(self, texts: dict[bool, str], states: list[CollectorState]) -> None:
        with self._lock:
            self._texts, self._states = texts, states

    def render(self, openmetrics: bool = False) -> str:
        with self._lock:
            text, states = self._texts[openmetrics], self._states
        return whole_scrape(text, states, time.monotonic(), openmetrics)

    def health(self) -> dict[str, dict[str, object]]:
        with self._lock:
            states = self._states
        return health_of(states, time.monotonic())


def _child(conn: Any, host: str, port: int, timeout: float, log_level: int) -> None:
    """The scrape process: bind, then serve the mirror from the agent's first push (so the
    port answers only once the agent is up) until the agent says stop or goes away."""
    # Ctrl-C reaches the whole process group: the agent stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    mirror = Mirror()
    try:
        server = AgentServer(mirror, host, port, timeout)  # type: ignore[arg-type]
    except OSError as err:
        conn.send(("error", err.strerror or str(err)))
        return
    conn.send(("ready", server.address))
    serving = False
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):  # the agent went away
                break
            message = pickle.loads(data)
            if message is None:
                break
            mirror.update(*message)
            if not serving:
                server.start()
                serving = True
    finally:
        server.stop()


class ScrapeProcess:
    """Serves ``agent``'s scrape from a child process on ``host:port`` (0: a free port)."""

    def __init__(
        self,
        agent: Agent,
        host: str,
        port: int,
        timeout: float = CONNECTION_TIMEOUT,
        log_level: int = logging.WARNING,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the connection timeout must be > 0 seconds")
        self.agent = agent
        self._args = (host, port, timeout, log_level)
        self._proc: Any = None
        self._conn: Any = None
        self._address: tuple[str, int] | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._pusher: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        if self._address is None:
            raise RuntimeError("the scrape process has not started")
        return self._address

    @property
    def alive(self) -> bool:
        """Whether the child still serves."""
        return self._proc is not None and self._proc.is_alive()

    def bind(self, timeout: float = START_TIMEOUT) -> tuple[str, int]:
        """Start the child and wait until it listens; its address. Raises
        ``ScrapeListenFailed`` (an ``OSError``) when the address cannot be bound."""
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child, args=(theirs, *self._args), name="gpuslo-scrape", daemon=True
        )
        self._proc.start()
        theirs.close()
        self._conn = mine
        reply: Any = None
        with contextlib.suppress(EOFError):
            reply = mine.recv() if mine.poll(timeout) else None
        if reply is None or reply[0] != "ready":
            why = reply[1] if reply else "the scrape process did not start"
            self._end()
            raise ScrapeListenFailed(why)
        host, port = reply[1]
        self._address = (str(host), int(port))
        return self._address

    def start(self) -> None:
        """Push the agent's state now and after every new snapshot (``bind`` first)."""
        if self._address is None:
            self.bind()
        self.agent.on_sample.append(self._wake.set)
        self._push()  # the collectors' state before their first sample
        self._pusher = threading.Thread(target=self._loop, name="scrape-push", daemon=True)
        self._pusher.start()

    def _push(self) -> None:
        texts = {om: self.agent.render_collected(om) for om in (False, True)}
        message = (texts, self.agent.states())
        self._conn.send_bytes(pickle.dumps(message, protocol=5))

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()  # what samples land from here on wakes the next push
            try:
                self._push()
            except (OSError, ValueError) as err:  # the child is gone
                if not self._stopping:
                    log.error("the scrape process went away: %s", err)
                return

    def stop(self) -> None:
        """Stop pushing and stop the child: ask, then wait, then terminate."""
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(ValueError):
            self.agent.on_sample.remove(self._wake.set)
        if self._pusher is not None:
            self._pusher.join(timeout=5)
            self._pusher = None
        self._end()

    def _end(self) -> None:
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        self._proc = None
        with contextlib.suppress(OSError, ValueError):
            conn.send_bytes(pickle.dumps(None))
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        conn.close()
