"""Component tests: the agent against real promtool, Prometheus and node_exporter on loopback."""

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from gpuslo.collectors import Agent, GpuCollector, InfinibandCollector
from gpuslo.collectors.backends import SimBackend
from gpuslo.foundation import conventions as c
from tests.conftest import SYSFS, free_port, need, start_prometheus, wait_http

pytestmark = pytest.mark.component

# Lint findings we accept on purpose: dcgm-exporter's label names (UUID, modelName, Hostname,
# GPU_I_ID, GPU_I_PROFILE) and its counters without _total are the naming contract.
DCGM_COUNTERS = {s.name for s in c.GPU_FIELDS if s.type == "counter"}


def full_scrape(openmetrics=False):
    backend = SimBackend(count=2, node="n", mig=[[], ["1g.10gb"]])
    backend.inject_xid(0, 94)
    agent = Agent([GpuCollector(backend, hostname="n"), InfinibandCollector(SYSFS)])
    agent.sample_all()
    return agent.render(openmetrics)


def test_whole_agent_output_passes_promtool_check_metrics():
    promtool = need("promtool")
    text = full_scrape()
    out = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert out.returncode in (0, 3), out.stderr  # 1 would be a parse error
    problems = set(out.stdout.splitlines()) | set(out.stderr.splitlines())
    unexpected = []
    for line in problems:
        name, _, what = line.partition(" ")
        if what == "label names should be written in 'snake_case' not 'camelCase'":
            continue
        if name in DCGM_COUNTERS and what in (
            'counter metrics should have "_total" suffix',
            "metric name should not include type 'counter'",
        ):
            continue
        unexpected.append(line)
    assert unexpected == []


def test_both_exposition_formats_parse_with_the_reference_parsers():
    text = {f.name: f for f in parse_text(full_scrape())}
    om = {f.name: f for f in parse_om(full_scrape(openmetrics=True))}
    assert len(text["DCGM_FI_DEV_GPU_UTIL"].samples) == 2
    assert om["gpuslo_gpu_xid_errors"].type == "counter"
    assert om["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"].type == "unknown"


def query(base, promql):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


def test_a_real_prometheus_scrapes_the_agent(tmp_path, process):
    agent_port = free_port()
    process.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpuslo",
                "agent",
                "--gpu-backend",
                "sim",
                "--sim-gpus",
                "2",
                "--path.sysfs",
                str(SYSFS),
                "--listen",
                f"127.0.0.1:{agent_port}",
                "--interval",
                "0.5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    base = start_prometheus(tmp_path, process, "gpuslo", f"127.0.0.1:{agent_port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        up = query(base, 'up{job="gpuslo"}')
        gpu_up = query(base, "gpuslo_gpu_up")
        if up and up[0]["value"][1] == "1" and len(gpu_up) == 2:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"Prometheus never ingested the agent: up={up} gpu_up={gpu_up}")
    ib = query(base, 'node_infiniband_port_data_received_bytes_total{device="mlx5_0"}')
    assert float(ib[0]["value"][1]) == 10_000_000_000
    util = query(base, "DCGM_FI_DEV_GPU_UTIL")
    assert {r["metric"]["modelName"] for r in util} == {"NVIDIA H100 80GB HBM3"}
    # Info metrics are stored under their _info sample name, whichever format was negotiated.
    assert query(base, "gpuslo_gpu_info")


def test_infiniband_series_match_node_exporter_on_the_same_sysfs_tree(process):
    node_exporter = need("prometheus-node-exporter")
    port = free_port()
    process.append(
        subprocess.Popen(
            [
                node_exporter,
                "--collector.disable-defaults",
                "--collector.infiniband",
                f"--path.sysfs={SYSFS.resolve()}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_http(f"http://127.0.0.1:{port}/metrics")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        theirs_text = resp.read().decode()
    assert 'node_scrape_collector_success{collector="infiniband"} 1' in theirs_text

    def ib(text):
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in parse_text(text)
            for s in f.samples
            if s.name.startswith("node_infiniband_")
        }

    agent = Agent([InfinibandCollector(SYSFS)])
    agent.sample_all()
    ours, theirs = ib(agent.render()), ib(theirs_text)
    assert len(theirs) > 50
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    assert {k: ours[k] for k in theirs} == theirs
    # What we export beyond node_exporter 1.5 under its prefix: the device info metric
    # and pre-4.5 counters_ext counters.
    extra = {name for name, _ in set(ours) - set(theirs)}
    assert extra <= {"node_infiniband_info"} | {
        c.IB_PREFIX + suffix for suffix, _ in c.IB_PORT_COUNTERS_EXT.values()
    }
