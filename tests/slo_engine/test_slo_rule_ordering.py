"""The ordering rule in a real Prometheus: an alert acts on the recordings made in the same
evaluation, not the previous one.

Prometheus evaluates groups concurrently and the rules of a group in order, all at the
group's evaluation timestamp. The generated alerts share a group with every recording they
read, placed before them, so the first evaluation whose recorded burn rates cross the
threshold is the one that fires; an alert reading another group's (or a later rule's)
recordings would fire one interval late, or early by the same amount when it stops.

A loopback exporter serves request counters; Prometheus scrapes it every second and evaluates
the generated groups every second. Errors start mid-run; afterwards the recorded samples and
the ALERTS series are compared timestamp by timestamp. The SLO's 3h period is summed from
hourly partial sums, so the same run checks them live against a plain sum over the recorded
base rates (the group evaluates at an offset within its interval, unlike promtool's steps).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from gpuslo.foundation.exposition import sample_line
from gpuslo.foundation.promlab import Prometheus
from gpuslo.slo_engine import load_specs, rule_groups
from gpuslo.slo_engine.rules import Layout, error_ratio
from tests.conftest import need

pytestmark = pytest.mark.component

WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.02, long_window: 8s, short_window: 4s}
"""
SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: live, window: 3h}
slos:
  - name: order
    objective: 99
    selector: {model: m}
    availability: {}
    alerting: {windows: windows.yaml, base_window: 4s}
"""
METRIC = "gen_ai_server_requests_total"


class Counters:
    """Requests at 100/s; errors at 60/s once ``fail_from`` is set."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.fail_from: float | None = None

    def render(self) -> bytes:
        now = time.time()
        err = 0.0 if self.fail_from is None else 60 * max(0.0, now - self.fail_from)
        ok = 100 * (now - self.t0) - err
        lines = [
            sample_line(METRIC, {"model": "m", "outcome": "success"}, ok),
            sample_line(METRIC, {"model": "m", "outcome": "error"}, err),
        ]
        return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def exporter():
    counters = Counters()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = counters.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield counters, server.server_address[1]
    server.shutdown()
    server.server_close()


def samples(prom: Prometheus, expr: str, seconds: int) -> dict[float, float]:
    """Raw samples of one series over the last ``seconds``: timestamp -> value."""
    result = prom.query(f"{expr}[{seconds}s]")
    assert len(result) == 1, (expr, result)
    return {round(float(t), 3): float(v) for t, v in result[0]["values"]}


def test_alerts_fire_in_the_same_evaluation_as_the_recordings_they_read(tmp_path, exporter):
    need("prometheus")
    counters, port = exporter
    (tmp_path / "windows.yaml").write_text(WINDOWS)
    spec = tmp_path / "slo.yaml"
    spec.write_text(SPEC)
    slos, _ = load_specs([spec])
    (slo,) = slos
    groups = rule_groups(slos, layout=Layout(interval=1))
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    scrape = yaml.safe_dump(
        {
            "scrape_configs": [
                {
                    "job_name": "live",
                    "scrape_interval": "1s",
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
            ]
        }
    )
    with Prometheus(tmp_path / "prom", rule_files=[rules], config_extra=scrape) as prom:
        time.sleep(12)  # fill the 8s window with healthy traffic
        counters.fail_from = time.time()
        time.sleep(14)
        sel = '{slo="order"}'
        long_ = samples(prom, f"{error_ratio('8s')}{sel}", 40)
        short = samples(prom, f"{error_ratio('4s')}{sel}", 40)
        firing = samples(
            prom, f'ALERTS{{alertname="{slo.alert_name}",alertstate="firing",slo="order"}}', 40
        )
        threshold = slo.tiers[0].factor(slo.period) * slo.budget
        crossing = sorted(t for t in long_ if long_[t] > threshold and short.get(t, 0) > threshold)
        assert crossing, (threshold, long_)
        # Every evaluation whose own recordings cross the threshold fires, and no other does.
        assert sorted(firing) == crossing
        assert min(t for t in long_ if long_[t] > 0) < crossing[0]  # the ramp was seen

        # The 3h period, from hourly partial sums: equal to a plain sum over the samples.
        period = samples(prom, f"{error_ratio('3h')}{sel}", 40)
        plain = (
            "sum_over_time(gpuslo:slo_errors:rate4s{sel}[2h59m59s999ms]) / "
            "sum_over_time(gpuslo:slo_requests:rate4s{sel}[2h59m59s999ms])"
        ).replace("{sel}", sel)
        checked = 0
        for t in sorted(period)[-10:]:
            direct = prom.scalar(plain, at=t)
            assert period[t] == pytest.approx(direct, rel=1e-9, abs=1e-12), t
            checked += direct > 0
        assert checked  # the errors reached the period ratio
