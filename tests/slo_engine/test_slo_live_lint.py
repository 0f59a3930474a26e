"""`gpuslo slo validate --prometheus URL` against a real Prometheus scraping a small target."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpuslo.slo_engine.live_lint import query
from tests.conftest import free_port, run_gpuslo, start_prometheus

pytestmark = pytest.mark.component

SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat}
slos:
  - name: busy-ttft-on-boundary
    objective: 99
    selector: {model: busy}
    latency: {metric: ttft, threshold: 250ms}
  - name: busy-ttft-off-boundary
    objective: 99
    selector: {model: busy}
    latency: {metric: ttft, threshold: 500ms}
  - name: busy-e2e-whole-seconds
    objective: 99
    selector: {model: busy}
    latency: {metric: e2e, threshold: 1s}
  - name: idle-availability
    objective: 99.9
    selector: {model: idle}
    availability: {}
"""


def target_text(elapsed: float) -> str:
    """A busy model at ~1000 requests/s (Go-style le="1") and an idle one that never moves."""
    n = int(elapsed * 1000)
    lines = ["# TYPE gen_ai_server_time_to_first_token_seconds histogram"]
    for le, share in (("0.1", 0.5), ("0.25", 0.9), ("1", 0.99), ("+Inf", 1.0)):
        lines.append(
            f'gen_ai_server_time_to_first_token_seconds_bucket{{model="busy",le="{le}"}} '
            f"{int(n * share)}"
        )
    lines.append(f'gen_ai_server_time_to_first_token_seconds_count{{model="busy"}} {n}')
    lines.append(f'gen_ai_server_time_to_first_token_seconds_sum{{model="busy"}} {n * 0.2}')
    lines.append("# TYPE gen_ai_server_request_duration_seconds histogram")
    for le in ("0.5", "1", "2", "+Inf"):
        lines.append(f'gen_ai_server_request_duration_seconds_bucket{{model="busy",le="{le}"}} {n}')
    lines.append(f'gen_ai_server_request_duration_seconds_count{{model="busy"}} {n}')
    lines.append(f'gen_ai_server_request_duration_seconds_sum{{model="busy"}} {n * 0.3}')
    lines.append("# TYPE gen_ai_server_requests_total counter")
    lines.append(f'gen_ai_server_requests_total{{model="busy",outcome="ok"}} {n}')
    lines.append('gen_ai_server_requests_total{model="idle",outcome="ok"} 3')
    return "\n".join(lines) + "\n"


@pytest.fixture
def prometheus(tmp_path, process):
    start = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = target_text(time.monotonic() - start).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    url = start_prometheus(tmp_path, process, "t", f"127.0.0.1:{target.server_address[1]}")
    deadline = time.monotonic() + 30  # until rate() has two samples of the busy model
    while not query(url, 'sum(rate(gen_ai_server_requests_total{model="busy"}[5m])) > 0'):
        assert time.monotonic() < deadline, "Prometheus never scraped the target"
        time.sleep(0.5)
    yield url
    target.shutdown()


def validate(*args):
    return run_gpuslo("slo", "validate", *args)


def test_live_lint_flags_off_boundary_thresholds_and_idle_slis(tmp_path, prometheus):
    spec = tmp_path / "slos.yaml"
    spec.write_text(SPEC)
    out = validate(str(spec), "--prometheus", prometheus)
    assert out.returncode == 0, out.stderr
    warnings = out.stderr.strip().splitlines()
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(
        f"{spec}:9:5: warning: latency.threshold: 0.5s is not a bucket "
        "boundary of gen_ai_server_time_to_first_token_seconds "
        "(boundaries: 0.1, 0.25, 1)"
    )
    assert warnings[1].startswith(f"{spec}:17:5: warning: traffic: about 0.0 events per 5m")
    strict = validate(str(spec), "--prometheus", prometheus, "--strict")
    assert strict.returncode == 1


def test_an_unreachable_prometheus_is_one_clear_error(tmp_path):
    spec = tmp_path / "slos.yaml"
    spec.write_text(SPEC)
    out = validate(str(spec), "--prometheus", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert out.stderr.startswith("gpuslo slo validate: error: cannot query Prometheus at")
    assert len(out.stderr.strip().splitlines()) == 1
