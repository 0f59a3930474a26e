"""The whole agent against one golden file (node_exporter's end-to-end style): the real
``gpuslo agent --once`` with every collector on fixtures (a recorded GPU node, the sysfs tree,
a vLLM server on loopback), so two collectors emitting one family, or a renamed series, show
up in one diff. Timings vary between runs and are masked; everything else is compared."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SYSFS, need, run_gpuslo

HERE = Path(__file__).parent
GPU_RECORDING = HERE / "fixtures" / "gpu" / "sim-h100x2.json"
VLLM = HERE / "fixtures" / "servers" / "vllm_v1_metrics.prom"
# Per-run timings: how long a sample or scrape took and how old it is.
VOLATILE = re.compile(
    r"^((?:gpuslo_collector_duration_seconds|gpuslo_collector_last_sample_age_seconds"
    r"|gpuslo_target_scrape_duration_seconds)\{[^}]*\}) \S+$",
    re.M,
)


@pytest.fixture
def vllm_target() -> Iterator[str]:
    body = VLLM.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def scrape(target: str, *extra: str) -> str:
    out = run_gpuslo(
        "agent",
        "--once",
        "--gpu-backend",
        "fixture",
        "--gpu-fixture",
        str(GPU_RECORDING),
        "--hostname",
        "node-a",
        "--path.sysfs",
        str(SYSFS),
        "--pod-resources-socket",
        "/nonexistent/kubelet.sock",
        "--server-target",
        f"{target};namespace=llm;pod=vllm-0",
        *extra,
    )
    assert out.returncode == 0, out.stderr
    text = VOLATILE.sub(r"\1 <timing>", out.stdout)
    return text.replace(target, "http://127.0.0.1:PORT/metrics")


def families(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


def test_the_whole_agent_matches_its_golden(vllm_target, golden):
    text = scrape(vllm_target)
    golden("agent_all_collectors.prom", text)
    # every collector took part: GPU, fabric, the server target, and the agent's own series
    for collector in ("gpu", "infiniband", "servers"):
        assert f'gpuslo_collector_success{{collector="{collector}"}} 1' in text


def test_no_family_is_emitted_twice_across_collectors(vllm_target):
    for openmetrics in ((), ("--openmetrics",)):
        names = families(scrape(vllm_target, *openmetrics))
        assert names and len(names) == len(set(names)), sorted(
            {n for n in names if names.count(n) > 1}
        )


@pytest.mark.component
@pytest.mark.parametrize("naming", [(), ("--dcgm-names", "current")], ids=["legacy", "current"])
def test_promtool_accepts_the_whole_scrape(vllm_target, naming):
    text = scrape(vllm_target, *naming).replace("<timing>", "0.001")
    out = subprocess.run(
        [need("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    # promtool 2.42 exits 3 for style lints only (dcgm-exporter's camelCase labels and
    # counters without _total are kept on purpose) and 1 when the text does not parse.
    assert out.returncode in (0, 3), out.stderr
    assert "error while linting" not in out.stderr, out.stderr


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value) if value != "<timing>" else 0.0
    return out


def test_current_names_scrape_is_the_legacy_scrape_renamed_and_rescaled(vllm_target):
    """``--dcgm-names current`` changes GPU names, units and the host label, and nothing else:
    every other collector's series are the same, sample for sample."""
    from tests.naming import CURRENT, RENAMED, has_name

    legacy = _samples(scrape(vllm_target))
    current = _samples(scrape(vllm_target, "--dcgm-names", "current"))
    expected = {}
    for key, value in legacy.items():
        name = key.split("{", 1)[0]
        spec = RENAMED.get(name)
        key = key.replace('Hostname="', 'hostname="')
        if spec is not None:
            key = CURRENT.name(spec) + key[len(name) :]
            value *= CURRENT.factor(spec)
        expected[key] = value
    assert sorted(current) == sorted(expected)
    for key, value in expected.items():
        assert current[key] == pytest.approx(value, rel=1e-12), key
    text = "\n".join(current)
    assert not any(has_name(text, name) for name in RENAMED) and "Hostname=" not in text
