"""A throwaway Prometheus on loopback, for tests, benchmarks and the digital twin.

It backfills history the way an operator would (``promtool tsdb create-blocks-from
openmetrics`` for raw series, ``… from rules`` for recording rules) and restarts Prometheus so
it loads the new blocks. Recording rules that read other recording rules are backfilled in
stages, because promtool evaluates every rule of a run against the same, unchanged
Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml


class LabError(RuntimeError):
    """A Prometheus tool is missing or failed."""


def binary(name: str) -> str:
    """Path of a Prometheus tool, or a clear error naming the package that has it."""
    path = shutil.which(name)
    if path is None:
        raise LabError(f"{name} not found: `make setup` installs it from Debian packages")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: Sequence[str], timeout: float, cwd: Path | None = None) -> str:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if out.returncode != 0:
        raise LabError(f"{Path(args[0]).name} failed: {(out.stderr or out.stdout).strip()[-2000:]}")
    return out.stdout


def backfill_openmetrics(path: Path, data: Path, max_block: str = "24h") -> None:
    """Write TSDB blocks from an OpenMetrics file (timestamps in seconds, ending ``# EOF``)
    into ``data``. A Prometheus running on it loads them when restarted."""
    _run(
        [
            binary("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            f"--max-block-duration={max_block}",
            str(path),
            str(data),
        ],
        timeout=600,
    )


class _Server:
    """A loopback server process: started, waited on until ``/-/ready``, stopped."""

    name = "server"
    workdir: Path
    url: str
    _proc: subprocess.Popen[bytes] | None

    def _launch(self, args: Sequence[str], timeout: float) -> None:
        log = self.workdir / f"{self.name}.log"
        self._proc = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=log.open("ab"))
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1):
                    return
            except OSError:
                if self._proc.poll() is not None:
                    text = log.read_text(errors="replace")
                    raise LabError(f"{self.name} exited: {text.strip()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise LabError(f"{self.name} not ready after {timeout:g}s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise LabError(f"{self.name} is not running")
        return self._proc

    @property
    def pid(self) -> int:
        return self.process.pid


class Prometheus(_Server):
    """A Prometheus with its own data directory, listening on 127.0.0.1 only.

    ``data`` is the TSDB directory (default: ``data`` in the work directory, a temporary one
    unless given); ``rule_files`` are loaded for live evaluation; ``config_extra`` is appended
    to the configuration (scrape jobs). Use as a context manager; ``restart()`` reloads blocks.
    """

    name = "prometheus"

    def __init__(
        self,
        workdir: Path | None = None,
        data: Path | None = None,
        rule_files: Iterable[Path] = (),
        config_extra: str = "",
        evaluation_interval: str = "1m",
        retention: str = "90d",
        flags: Sequence[str] = (),
    ) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="gpuslo-prom-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = data or self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "prometheus.yml"
        files = [str(Path(p).resolve()) for p in rule_files]
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"evaluation_interval": evaluation_interval},
                    "rule_files": files,
                }
            )
            + config_extra
        )
        self.retention = retention
        self.flags = list(flags)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> Prometheus:
        self._launch(
            [
                binary("prometheus"),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *self.flags,
            ],
            timeout,
        )
        return self

    def restart(self) -> None:
        """Stop and start again on the same data: Prometheus loads blocks added meanwhile."""
        self.stop()
        self.start()

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ backfill
    def backfill_openmetrics(self, path: Path, max_block: str = "24h") -> None:
        """Write blocks from an OpenMetrics file into the data directory; call ``restart()``
        to load them."""
        backfill_openmetrics(path, self.data, max_block)

    def backfill_rules(
        self, groups: list[dict[str, Any]], start: float, end: float, interval: str = "1m"
    ) -> None:
        """Evaluate recording rules over [start, end] into blocks and load them. Rules reading
        series that other rules record are evaluated in a later stage, after a restart.

        Promtool evaluates a group at an offset within the interval hashed from the group's
        name and its rule file's path as given, so the rule file is named relative to the
        work directory: the same groups land on the same seconds in every run, wherever the
        work directory is. (Promtool drops an evaluation whose timestamp falls in the last
        second before each two-hour block boundary, so an offset within a second of the
        interval loses one sample every two hours; a path-dependent offset made that a
        rare, unreproducible failure.)"""
        recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
        stages = _stages(groups, recorded)
        for n, stage in enumerate(stages):
            rule_file = self.workdir / f"backfill-stage-{n}.yaml"
            rule_file.write_text(yaml.safe_dump({"groups": stage}, sort_keys=False))
            out = self.workdir / f"backfill-stage-{n}"
            shutil.rmtree(out, ignore_errors=True)
            _run(
                [
                    binary("promtool"),
                    "tsdb",
                    "create-blocks-from",
                    "rules",
                    f"--url={self.url}",
                    f"--start={int(start)}",
                    f"--end={int(end)}",
                    f"--eval-interval={interval}",
                    f"--output-dir={out.resolve()}",
                    "--quiet",
                    rule_file.name,
                ],
                timeout=1800,
                cwd=self.workdir,
            )
            for block in out.iterdir():
                block.rename(self.data / block.name)
            self.restart()

    def block_span(self) -> tuple[float, float] | None:
        """First and last sample time (Unix seconds) over the TSDB's persisted blocks, from
        ``promtool tsdb list``; None when there are none."""
        out = _run([binary("promtool"), "tsdb", "list", str(self.data)], timeout=120)
        spans = []
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
                spans.append((int(fields[1]) / 1000, (int(fields[2]) - 1) / 1000))
        if not spans:
            return None
        return min(a for a, _ in spans), max(b for _, b in spans)

    # ------------------------------------------------------------------ queries
    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=120) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise LabError(f"{path}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        result: list[dict[str, Any]] = self.api("query", **params)["result"]
        return result

    def scalar(self, expr: str, at: float | None = None) -> float:
        """The value of a query that must return exactly one series."""
        result = self.query(expr, at)
        if len(result) != 1:
            raise LabError(f"{expr}: expected one series, got {len(result)}")
        return float(result[0]["value"][1])


def _stages(groups: list[dict[str, Any]], recorded: set[str]) -> list[list[dict[str, Any]]]:
    """Split recording rules into dependency stages: a rule's stage is one more than the
    latest stage of any recorded series its expression names. Alerts are left out (promtool
    backfills recordings only)."""
    rules = [(g["name"], r) for g in groups for r in g["rules"] if "record" in r]
    deps = {id(r): set(_NAME.findall(r["expr"])) & recorded - {r["record"]} for _, r in rules}
    stage_of: dict[str, int] = {}
    for _ in range(len(rules) + 1):
        changed = False
        for _, r in rules:
            stage = 1 + max((stage_of.get(d, 0) for d in deps[id(r)]), default=-1)
            if stage > stage_of.get(r["record"], -1):
                stage_of[r["record"]] = stage
                changed = True
        if not changed:
            break
    else:
        raise LabError("recording rules depend on each other in a cycle")
    stages: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for group, r in rules:
        stages.setdefault(stage_of[r["record"]], {}).setdefault(group, []).append(r)
    return [[{"name": name, "rules": rs} for name, rs in stages[n].items()] for n in sorted(stages)]


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class Alertmanager(_Server):
    """An Alertmanager on loopback with its own storage, clustering off."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = None

    def start(self, timeout: float = 30.0) -> Alertmanager:
        self._launch(
            [
                binary("prometheus-alertmanager"),
                f"--config.file={self.config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip
            ],
            timeout,
        )
        return self
