"""A cluster's history for incident tests and the incident benchmark, written by hand from the
exporters' documented names (kube-state-metrics' pod and ReplicaSet families, the canonical
request series, the gpuslo agent's GPU families through the naming contract): a Deployment
serving one model on ``pods`` pods with ``gpus_per_pod`` GPUs each; one pod goes NotReady at
``fail_at`` for ``fail_for`` steps and the others shed 8% of the requests meanwhile, which
burns the availability SLO below. GPU series are gauges sampled every ``gpu_every`` steps
from ``gpu_from`` on (to hold thousands of candidate series in a small file).

The history is streamed to a file family by family, series by series, as OpenMetrics wants.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from gpuslo.foundation import conventions as c

START = 1_791_000_000.0
NS = "serving"
MODEL = "llama-3-70b"
DEPLOY = "llama-70b"
RS = "llama-70b-6f8d9c7b5d"
SLOS = f"""\
apiVersion: gpuslo/v1
kind: SLOs
defaults:
  service: chat
  window: 1h
  alerting: {{base_window: 1m, windows: windows.yaml}}
slos:
  - name: llama-availability
    objective: 99.5
    selector: {{model: {MODEL}}}
    availability: {{}}
"""
WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.05, long_window: 5m, short_window: 1m}
"""


def pod_name(i: int) -> str:
    return f"{RS}-p{i:04d}"


def _labels(d: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in d.items())


class _Writer:
    def __init__(self, out: TextIO, start: float, step: float) -> None:
        self.out, self.start, self.step = out, start, step

    def family(self, name: str, typ: str) -> None:
        self.out.write(f"# TYPE {name} {typ}\n")

    def series(self, sample: str, labels: dict[str, str], values: Iterator[tuple[int, float]]):
        key = f"{sample}{{{_labels(labels)}}}"
        self.out.write(
            "".join(f"{key} {v:g} {self.start + k * self.step:.0f}\n" for k, v in values)
        )


def write_history(
    path: Path,
    pods: int = 4,
    gpus_per_pod: int = 1,
    step: float = 15.0,
    steps: int = 540,
    fail_at: int = 480,
    fail_for: int = 60,
    gpu_every: int = 1,
    gpu_from: int = 0,
) -> None:
    """Write the history (OpenMetrics, ``# EOF`` at the end) to ``path``."""
    failing = pods // 2
    naming = c.gpu_naming()
    host = naming.host_label

    def down(k: int) -> bool:
        return fail_at <= k < fail_at + fail_for

    with path.open("w") as out:
        w = _Writer(out, START, step)
        ks = range(steps)
        gpu_ks = range(gpu_from, steps, gpu_every)
        uid = {i: f"{i:08d}-aaaa-4bbb-8ccc-dddddddddddd" for i in range(pods)}
        base = {i: {"namespace": NS, "pod": pod_name(i), "uid": uid[i]} for i in range(pods)}
        w.family(c.KSM_POD_INFO, "gauge")
        for i in range(pods):
            labels = {**base[i], "node": f"gpu-node-{i:04d}"}
            w.series(c.KSM_POD_INFO, labels, ((k, 1) for k in ks))
        w.family(c.KSM_POD_OWNER, "gauge")
        owner = {"owner_kind": "ReplicaSet", "owner_name": RS, "owner_is_controller": "true"}
        for i in range(pods):
            w.series(c.KSM_POD_OWNER, {**base[i], **owner}, ((k, 1) for k in ks))
        w.family(c.KSM_REPLICASET_OWNER, "gauge")
        rs = {"namespace": NS, "replicaset": RS, "owner_kind": "Deployment"}
        rs |= {"owner_name": DEPLOY, "owner_is_controller": "true"}
        w.series(c.KSM_REPLICASET_OWNER, rs, ((k, 1) for k in ks))
        w.family(c.KSM_POD_STATUS_READY, "gauge")
        for i in range(pods):
            for cond in ("true", "false", "unknown"):

                def ready(k: int, i: int = i, cond: str = cond) -> float:
                    ok = not (down(k) and i == failing)
                    return float(ok if cond == "true" else (not ok) if cond == "false" else 0)

                labels = {**base[i], "condition": cond}
                w.series(c.KSM_POD_STATUS_READY, labels, ((k, ready(k)) for k in ks))
        family = c.REQUESTS_TOTAL.removesuffix("_total")
        w.family(family, "counter")
        for i in range(pods):
            for outcome in ("success", "rejected"):

                def counts(i: int = i, outcome: str = outcome) -> Iterator[tuple[int, float]]:
                    total = 0.0
                    for k in ks:
                        out_now = down(k) and i == failing
                        rps = 0.0 if out_now else 40.0 / (pods - (1 if down(k) else 0))
                        shed = 0.08 if down(k) else 0.0
                        total += rps * (shed if outcome == "rejected" else 1 - shed) * step
                        yield k, total

                labels = {"model": MODEL, "namespace": NS, "pod": pod_name(i), "server": "vllm"}
                w.series(c.REQUESTS_TOTAL, {**labels, "outcome": outcome}, counts())
        gpus = [(i, g) for i in range(pods) for g in range(gpus_per_pod)]

        def gpu_labels(i: int, g: int) -> dict[str, str]:
            return {"gpu": str(g), c.LABEL_UUID: f"GPU-{i:05d}-{g}", host: f"gpu-node-{i:04d}"}

        families = (
            (naming.name(c.GPU_UP), lambda i, g, k: 1.0),
            (naming.name(c.DCGM_GPU_TEMP), lambda i, g, k: 60.0 + (i * 7 + g * 3 + k) % 5),
            (naming.name(c.DCGM_GPU_UTIL), lambda i, g, k: 70.0 + (i * 5 + g + k * 3) % 9),
            (naming.name(c.DCGM_FB_USED), lambda i, g, k: 60000.0 + (i + g * 11 + k) % 13),
        )
        for name, value in families:
            w.family(name, "gauge")
            for i, g in gpus:
                w.series(name, gpu_labels(i, g), ((k, value(i, g, k)) for k in gpu_ks))
        info = naming.name(c.GPU_POD_INFO)
        w.family(info, "gauge")
        for i, g in gpus:
            holder = {**gpu_labels(i, g), "namespace": NS, "pod": pod_name(i)}
            w.series(info, {**holder, "container": "server"}, ((k, 1) for k in gpu_ks))
        out.write("# EOF\n")


def page_time(step: float = 15.0, fail_at: int = 480) -> float:
    """When the page fires: two minutes after the pod went NotReady."""
    return START + fail_at * step + 120
