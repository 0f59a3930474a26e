"""Shared test helpers: golden files, free ports, real binaries on loopback."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuslo.foundation.promlab import free_port

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
# A one-price catalog (every node H100 on demand, CPU pods at list price) for component tests.
H100_CATALOG = """\
apiVersion: gpuslo/v1
kind: PriceCatalog
as_of: "2026-05-18"
gpus:
  H100: {on-demand: 2.95}
nodes:
  - {match: ".*", gpu: H100, class: on-demand}
cpu: {per_vcpu_hour: 0.012, per_gib_hour: 0.0032}
"""
SYSFS = FIXTURES / "sysfs"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        help="rewrite every tests/*/golden/* file from the current output (review the diff!)",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Compare text with golden/NAME beside the test file, or rewrite it under --regen-golden."""

    def check(name: str, text: str) -> None:
        path = Path(request.path).parent / "golden" / name
        if request.config.getoption("--regen-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"{path} missing: run `make golden` to create it"
        assert text == path.read_text(), f"output differs from {path} (`make golden` rewrites it)"

    return check


def run_gpuslo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``gpuslo ARGS…`` as a user runs it, in a fresh interpreter; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gpuslo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def otlp_agent(*extra: str) -> Iterator[tuple[str, str]]:
    """A real ``gpuslo agent`` serving /metrics and OTLP/HTTP on loopback (no GPU or fabric
    collectors); yields its /metrics and /v1/metrics URLs and checks it exits cleanly."""
    port, otlp_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpuslo",
            "agent",
            "--no-collector.gpu",
            "--no-collector.infiniband",
            f"--listen=127.0.0.1:{port}",
            f"--otlp-listen=127.0.0.1:{otlp_port}",
            "--interval=0.1",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{otlp_port}/v1/metrics"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err.decode()


_current: list[pytest.Item] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[:] = [item]


def pytest_runtest_teardown(item: pytest.Item) -> None:
    _current.clear()


def _must_be_component(binary: str) -> None:
    """A test that starts a real binary says so with the ``component`` marker."""
    item = _current[0] if _current else None
    if item is not None and item.get_closest_marker("component") is None:
        pytest.fail(f"{item.nodeid} starts {binary} but is not marked component", pytrace=False)


@pytest.fixture(autouse=True)
def _binaries_only_in_component_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """promlab (the throwaway Prometheus, promtool, Alertmanager) checks the marker too."""
    from gpuslo.foundation import promlab

    real = promlab.binary

    def checked(name: str) -> str:
        _must_be_component(name)
        return real(name)

    monkeypatch.setattr(promlab, "binary", checked)


@pytest.fixture
def no_nvml_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real pynvml with libnvidia-ml unloadable, whatever this machine has (a GPU node
    included): its loader's dlopen fails as on a node without the driver."""
    import pynvml

    def dlopen_fails(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "CDLL", dlopen_fails)


def need(binary: str) -> str:
    """The path of a real binary for a component test; fails clearly when it is missing."""
    _must_be_component(binary)
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} not found: `make setup` installs it from Debian packages")
    return path


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_prometheus(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], job: str, target: str
) -> str:
    """A real Prometheus on loopback scraping ``target`` every second; returns its URL once
    ready. Stopped with the test's other processes."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n"
        f"- job_name: {job}\n  static_configs: [{{targets: ['{target}']}}]\n"
    )
    procs.append(
        subprocess.Popen(
            [
                need("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready")
    return url


@pytest.fixture
def process() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test, stopped when it ends."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class FakeClock:
    """A monotonic clock tests advance by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
