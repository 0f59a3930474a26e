"""Benchmark reading a large SLO spec: ``gpuslo slo validate`` on a ~1 MB file, and the
loader alone, against the loader it replaced.

A spec of ``--size-mb`` is generated in each format: native ``gpuslo/v1`` (one document, a
long ``slos:`` list) and OpenSLO v1 (one ``kind: SLO`` document per SLO, an inline ratio
SLI each). For each, the best of ``--repeat`` runs of:

- ``load_documents``: the spec-file loader alone (one libyaml parse, data built from the
  composed nodes, the depth check);
- ``load_specs``: the loader plus validation into SLOs and the lint, in this process;
- ``gpuslo slo validate FILE``: the command as a user runs it, a fresh interpreter each time;
- the same ``load_specs`` with the loader as it was before (the pure-Python composer, then the
  nodes serialized back to YAML and parsed again by the pure-Python loader).

Target (issue: spec-file hardening): a 1 MB spec validates in under 3 s.

    .venv/bin/python bench/spec_load.py [--size-mb 1] [--repeat 3] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results import write_block  # noqa: E402
from gpuslo.foundation import yamlpos  # noqa: E402
from gpuslo.slo_engine import load_specs  # noqa: E402
from gpuslo.slo_engine import specs as specs_module  # noqa: E402


def native_spec(target_bytes: int) -> tuple[str, int]:
    head = "apiVersion: gpuslo/v1\nkind: SLOs\ndefaults: {service: chat, window: 30d}\nslos:\n"
    parts, size, n = [head], len(head), 0
    while size < target_bytes:
        kind = "availability: {}" if n % 2 else "latency: {metric: ttft, threshold: 500ms}"
        item = (
            f"  - name: slo-{n:05d}\n"
            f"    description: Requests of model {n} that succeed, in budget.\n"
            f"    objective: 99.{n % 9 + 1}\n"
            f"    selector: {{model: model-{n:05d}, tenant: tenant-{n % 50:02d}}}\n"
            f"    labels: {{team: team-{n % 20:02d}}}\n"
            f"    {kind}\n"
            "    alerting: {min_events: 50}\n"
        )
        parts.append(item)
        size += len(item)
        n += 1
    return "".join(parts), n


def openslo_spec(target_bytes: int) -> tuple[str, int]:
    parts: list[str] = []
    size, n = 0, 0
    while size < target_bytes:
        doc = (
            "---\napiVersion: openslo/v1\nkind: SLO\nmetadata:\n"
            f"  name: slo-{n:05d}\n"
            f"  labels: {{team: team-{n % 20:02d}}}\n"
            "spec:\n  service: chat\n  indicator:\n    metadata:\n"
            f"      name: sli-{n:05d}\n"
            "    spec:\n      ratioMetric:\n        counter: true\n"
            "        good:\n          metricSource:\n            type: Prometheus\n"
            "            spec:\n"
            f'              query: requests_total{{model="m{n}",outcome="ok"}}\n'
            "        total:\n          metricSource:\n            type: Prometheus\n"
            "            spec:\n"
            f'              query: requests_total{{model="m{n}"}}\n'
            "  timeWindow:\n    - duration: 28d\n      isRolling: true\n"
            "  budgetingMethod: Occurrences\n"
            "  objectives:\n    - target: 0.999\n"
        )
        parts.append(doc)
        size += len(doc)
        n += 1
    return "".join(parts), n


def old_load_documents(path: str | Path) -> list[tuple[Any, yaml.Node]]:
    """The loader before this benchmark's change: pure-Python compose, then serialize every
    document and parse it again."""
    text = Path(path).read_text()
    nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if n is not None]
    data = [yaml.safe_load(yaml.serialize(n)) for n in nodes]
    return list(zip(data, nodes, strict=True))


def best(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def validate_cli(path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpuslo", "slo", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"slo validate failed: {out.stderr[-2000:]}")


def measure(path: Path, repeat: int) -> dict[str, float]:
    new = best(repeat, lambda: yamlpos.load_documents(path))
    specs = best(repeat, lambda: load_specs([path], unsupported="warn"))
    cli = best(repeat, lambda: validate_cli(path))
    saved = specs_module.load_documents
    specs_module.load_documents = old_load_documents  # type: ignore[assignment]
    try:
        before = best(1, lambda: load_specs([path], unsupported="warn"))
    finally:
        specs_module.load_documents = saved
    return {"load_documents": new, "load_specs": specs, "cli": cli, "before": before}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = ap.parse_args()
    target = int(args.size_mb * 1024 * 1024)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, make in (("native gpuslo/v1", native_spec), ("OpenSLO v1", openslo_spec)):
            text, n = make(target)
            path = Path(tmp) / "slos.yaml"
            path.write_text(text)
            size = path.stat().st_size
            fig = measure(path, args.repeat)
            rows.append((label, size, n, fig))
            print(
                f"{label}: {size / 1024 / 1024:.2f} MiB, {n} SLOs: load_documents "
                f"{fig['load_documents']:.2f}s, load_specs {fig['load_specs']:.2f}s, "
                f"slo validate {fig['cli']:.2f}s; before: load_specs {fig['before']:.2f}s",
                flush=True,
            )
    libyaml = "libyaml" if yamlpos._FAST else "pure-Python (no libyaml)"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, PyYAML {yaml.__version__} ({libyaml}). "
        f"Best of {args.repeat} runs (the loader before: one run).",
        "",
        f"Command: `.venv/bin/python bench/spec_load.py --size-mb {args.size_mb:g} --repeat "
        f"{args.repeat} --write docs/benchmarks.md`",
        "",
        "| spec | size (MiB) | SLOs | load_documents (s) | load_specs (s) "
        "| `gpuslo slo validate` (s) | load_specs, loader before (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, size, n, fig in rows:
        lines.append(
            f"| {label} | {size / 1024 / 1024:.2f} | {n} | {fig['load_documents']:.2f} "
            f"| {fig['load_specs']:.2f} | {fig['cli']:.2f} | {fig['before']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_block(args.write, "spec_load", text)


if __name__ == "__main__":
    main()
