import gzip
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from gpuslo.collectors import Agent, AgentServer, CollectorUnavailable
from gpuslo.collectors.scrape_process import ScrapeListenFailed, ScrapeProcess
from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family


class Static:
    def __init__(self, name, n=3):
        self.name, self.n, self.calls = name, n, 0

    def collect(self):
        self.calls += 1
        fam = family(c.MetricSpec(f"test_{self.name}_value", "gauge", "A test gauge."))
        for i in range(self.n):
            add(fam, {"i": str(i)}, i)
        return [fam]


class Broken:
    name = "broken"

    def collect(self):
        raise RuntimeError("sensor on fire")


class Absent:
    name = "absent"

    def collect(self):
        raise CollectorUnavailable("no such hardware")


class Blocking:
    """Hangs inside collect() until released, like a wedged driver call."""

    name = "blocking"

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def collect(self):
        self.entered.set()
        self.release.wait(30)
        return []


def test_a_broken_collector_reports_failure_and_the_others_still_serve():
    agent = Agent([Broken(), Static("ok"), Absent()])
    agent.sample_all()
    text = agent.render()
    assert 'gpuslo_collector_success{collector="broken"} 0' in text
    assert 'gpuslo_collector_success{collector="absent"} 0' in text
    assert 'gpuslo_collector_success{collector="ok"} 1' in text
    assert 'test_ok_value{i="2"} 2' in text
    assert agent.health()["broken"]["error"] == "RuntimeError: sensor on fire"


def test_series_over_the_cap_are_dropped_and_counted():
    agent = Agent([Static("big", n=10)], max_series=4)
    agent.sample_all()
    agent.sample_all()
    text = agent.render()
    assert text.count("test_big_value{") == 4
    assert 'gpuslo_collector_series_dropped_total{collector="big"} 12' in text
    assert 'gpuslo_collector_series{collector="big"} 4' in text


def test_last_sample_age_grows_between_samples(clock):
    agent = Agent([Static("ok")], clock=clock)
    agent.sample_all()
    clock.advance(2.5)
    assert 'gpuslo_collector_last_sample_age_seconds{collector="ok"} 2.5' in agent.render()


def test_a_collector_that_has_not_sampled_yet_reports_success_zero():
    text = Agent([Static("late")]).render()
    assert 'gpuslo_collector_success{collector="late"} 0' in text
    assert "test_late_value" not in text


def test_snapshot_is_rendered_once_per_sample_not_per_scrape():
    agent = Agent([Static("ok")])
    agent.sample_all()
    snap = agent.snapshot("ok")
    first = snap.text(False)
    assert snap.text(False) is first


def test_new_snapshots_are_prerendered_in_the_formats_scrapers_asked_for():
    agent = Agent([Static("ok")])
    agent.sample_all()
    assert agent.snapshot("ok")._rendered == {}  # nobody scraped yet: nothing rendered
    agent.render(openmetrics=True)
    agent.sample_all()
    assert set(agent.snapshot("ok")._rendered) == {True}


@pytest.mark.parametrize("bad", [{"interval": 0}, {"max_series": 0}])
def test_agent_rejects_nonsense_settings(bad):
    with pytest.raises(ValueError):
        Agent([Static("x")], **bad)


def test_duplicate_collector_names_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        Agent([Static("x"), Static("x")])


@pytest.fixture(params=["in-process", "scrape-process"])
def served(request):
    """Serve an agent in its own process (``AgentServer``) or, as ``gpuslo agent`` does, from
    a scrape process of its own (``ScrapeProcess``): every test here holds for both."""
    started = []

    def start(agent):
        if request.param == "in-process":
            server = AgentServer(agent, "127.0.0.1", 0)
        else:
            server = ScrapeProcess(agent, "127.0.0.1", 0)
            server.bind()
        agent.start()
        server.start()
        started.append((agent, server))
        return "http://{}:{}".format(*server.address)

    yield start
    for agent, server in started:
        server.stop()
        agent._stop.set()


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, dict(resp.headers), resp.read()


def test_scrape_is_served_while_a_collector_is_stuck_in_hardware(served):
    blocking, ok = Blocking(), Static("ok")
    agent = Agent([blocking, ok], interval=0.05)
    base = served(agent)
    assert blocking.entered.wait(5)
    deadline = time.monotonic() + 5
    while agent.snapshot("ok") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    _, _, body = get(base + "/metrics")
    text = body.decode()
    assert 'test_ok_value{i="1"} 1' in text
    assert 'gpuslo_collector_success{collector="blocking"} 0' in text
    blocking.release.set()


def test_metrics_negotiates_openmetrics_and_gzip(served):
    base = served(Agent([Static("ok")], interval=0.05))
    while True:
        _, headers, body = get(base + "/metrics")
        if b"test_ok_value" in body:
            break
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert not body.endswith(b"# EOF\n")
    _, headers, body = get(
        base + "/metrics",
        {
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            "Accept-Encoding": "gzip",
        },
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n") and 'test_ok_value{i="2"} 2' in text


def test_healthz_reports_each_collector_and_unknown_paths_are_404(served):
    base = served(Agent([Static("ok"), Broken()], interval=0.05))
    while True:
        health = json.loads(get(base + "/healthz")[2])
        if health["collectors"]["ok"]["success"]:
            break
    assert health["status"] == "ok"
    assert health["collectors"]["broken"]["success"] is False
    with pytest.raises(urllib.error.HTTPError) as err:
        get(base + "/nope")
    assert err.value.code == 404


class SameFamily:
    """Serves the canonical request counter, as the server and OTLP collectors both do."""

    def __init__(self, name, server):
        self.name, self.server = name, server

    def collect(self):
        fam = family(c.MetricSpec(c.REQUESTS_TOTAL, "counter", "Requests by outcome."))
        add(fam, {"server": self.server, "outcome": "success"}, 3)
        other = family(c.MetricSpec(f"test_{self.name}_only", "gauge", "One collector's own."))
        add(other, {}, 1)
        return [fam, other]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_family_two_collectors_serve_is_one_block_in_the_scrape(openmetrics):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as text

    agent = Agent([SameFamily("servers", "vllm"), SameFamily("otlp", "otlp")])
    agent.sample_all()
    out = agent.render(openmetrics=openmetrics)
    families = list((om if openmetrics else text)(out))  # both parsers refuse a second block
    name = c.REQUESTS_TOTAL.removesuffix("_total")
    requests = [f for f in families if f.name in (name, c.REQUESTS_TOTAL)]
    assert len(requests) == 1
    assert sorted(
        s.labels["server"] for s in requests[0].samples if s.name == c.REQUESTS_TOTAL
    ) == [
        "otlp",
        "vllm",
    ]
    assert out.count("# TYPE test_servers_only ") == 1 and out.count("# TYPE test_otlp_only ") == 1


class HoldsTheGil:
    """A collector that, once triggered, sits in one C call that never lets the GIL go (a
    sum over a long range runs in C without a switch), like a driver binding that forgot to
    release it; it notes when the hold began and ended (monotonic, system-wide on Linux)."""

    name = "holds"

    def __init__(self):
        self.trigger, self.done = threading.Event(), threading.Event()
        self.held: tuple[float, float] | None = None

    def collect(self):
        if self.trigger.is_set() and self.held is None:
            began = time.monotonic()
            sum(range(200_000_000))  # seconds of one C call
            self.held = (began, time.monotonic())
            self.done.set()
        return []


SCRAPER = """
import sys, time, urllib.request
url, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < until:
    began = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            ok = b'test_ok_value{i="2"} 2' in resp.read()
    except OSError:
        ok = False
    print(began, time.monotonic(), int(ok), flush=True)
    time.sleep(0.02)
"""


def test_the_scrape_process_answers_while_a_collector_holds_the_gil():
    """In the agent's own process nothing could answer until the call ends (the scraper is a
    process of its own, since this one is held too); the scrape process serves the last
    snapshot meanwhile: some scrape begins and ends inside the hold."""
    import subprocess
    import sys

    holds, ok = HoldsTheGil(), Static("ok")
    agent = Agent([ok, holds], interval=0.05)
    server = ScrapeProcess(agent, "127.0.0.1", 0)
    server.bind()
    try:
        agent.start()
        server.start()
        url = "http://{}:{}/metrics".format(*server.address)
        while b"test_ok_value" not in get(url)[2]:
            time.sleep(0.05)
        scraper = subprocess.Popen(
            [sys.executable, "-c", SCRAPER, url, "12"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.5)  # the scraper is scraping
        holds.trigger.set()
        assert holds.done.wait(60)
        out, _ = scraper.communicate(timeout=30)
    finally:
        agent._stop.set()
        server.stop()
    began, ended = holds.held
    assert ended - began > 0.5, "the hold was too short to tell"
    rows = [tuple(map(float, line.split())) for line in out.splitlines()]
    inside = [r for r in rows if began < r[0] and r[1] < ended]
    assert inside and all(r[2] == 1 for r in inside)


def test_the_scrape_process_refuses_a_taken_port_and_ends_with_the_agent():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = ScrapeProcess(Agent([]), "127.0.0.1", s.getsockname()[1])
        with pytest.raises(ScrapeListenFailed, match="in use"):
            taken.bind()
        assert not taken.alive
    server = ScrapeProcess(Agent([Static("ok")]), "127.0.0.1", 0)
    server.start()
    assert server.alive
    child = server._proc
    server.stop()
    assert not server.alive and child.exitcode == 0
