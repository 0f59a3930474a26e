"""Correlation on a real cluster's series: replica readiness and pod -> pool from
kube-state-metrics, the pods of a model from the canonical request series, and GPU series in
either dcgm-exporter generation. The history here is written by hand from kube-state-metrics'
documented names, labels and types (docs/metrics/workload/pod-metrics.md,
replicaset-metrics.md: every family a gauge; ``kube_pod_owner`` with ``owner_kind``,
``owner_name``, ``owner_is_controller``; ``kube_pod_labels`` with ``label_<name>``); no twin."""

from __future__ import annotations

import json

import pytest

from gpuslo.foundation import conventions as c
from gpuslo.foundation.promlab import Prometheus
from gpuslo.slo_engine import load_specs
from gpuslo.slo_engine.correlate import (
    SIGNALS,
    Config,
    blast_radius,
    candidates_from_prometheus,
    explain,
    pool_identity,
    template_names,
)
from tests.conftest import run_gpuslo

START = 1_791_000_000.0
STEP = 15.0
STEPS = 480  # two hours
FAIL_AT = 240  # the step a pod goes NotReady (one hour in)
FAIL_FOR = 80  # steps (20 minutes)


def _labels(d: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in d.items())


class _Om:
    """A hand-written OpenMetrics history: each family's series, each series' samples."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, dict[str, list[tuple[float, float]]]]] = {}

    def put(self, family: str, typ: str, sample: str, labels: dict[str, str], k: int, v: float):
        series = self.families.setdefault(family, (typ, {}))[1]
        series.setdefault(f"{sample}{{{_labels(labels)}}}", []).append((START + k * STEP, v))

    def text(self) -> str:
        out = []
        for family, (typ, series) in self.families.items():
            out.append(f"# TYPE {family} {typ}")
            for key, samples in series.items():
                out += [f"{key} {v:g} {t:.0f}" for t, v in samples]
        return "\n".join(out) + "\n# EOF\n"


# Three workloads: a Deployment serving llama (a pod of it fails), a Deployment serving
# mistral (a pod of it fails at the same time: outside llama's radius), and a
# LeaderWorkerSet serving llama-405b (a leader StatefulSet and a worker StatefulSet per group).
LLAMA_RS = "llama-70b-6f8d9c7b5d"
LLAMA_PODS = [f"{LLAMA_RS}-{s}" for s in ("x2k4p", "b7q9z", "m3n8w", "t5v6r")]
MISTRAL_RS = "mistral-7b-5c4b8d6f9"
MISTRAL_PODS = [f"{MISTRAL_RS}-{s}" for s in ("h4j2k", "p9l3c")]
LWS_PODS = {"llama-405b-0": "llama-405b", "llama-405b-0-1": "llama-405b-0"}  # pod -> its STS
LWS_LABEL = "leaderworkerset.sigs.k8s.io/name"
FOREIGN_UID = "ffffffff-eeee-4ddd-8ccc-bbbbbbbbbbbb"


def history(host_label: str = "Hostname") -> str:
    om = _Om()
    ns = "serving"
    pods = [
        *((p, "llama-3-70b", "ReplicaSet", LLAMA_RS, "chat-70b") for p in LLAMA_PODS),
        *((p, "mistral-7b", "ReplicaSet", MISTRAL_RS, "chat-7b") for p in MISTRAL_PODS),
        *((p, "llama-405b", "StatefulSet", sts, "") for p, sts in LWS_PODS.items()),
    ]
    failing = {LLAMA_PODS[2], MISTRAL_PODS[1]}
    counts: dict[tuple[str, str], float] = {}
    for k in range(STEPS):
        down = FAIL_AT <= k < FAIL_AT + FAIL_FOR
        for n, (pod, model, kind, owner, pool_label) in enumerate(pods):
            uid = f"0000000{n}-aaaa-4bbb-8ccc-dddddddddddd"
            base = {"namespace": ns, "pod": pod, "uid": uid}
            ready = not (down and pod in failing)
            om.put("kube_pod_info", "gauge", "kube_pod_info", {**base, "node": f"gpu-{n}"}, k, 1)
            owner_l = {"owner_kind": kind, "owner_name": owner, "owner_is_controller": "true"}
            om.put("kube_pod_owner", "gauge", "kube_pod_owner", {**base, **owner_l}, k, 1)
            pod_labels = {"label_pool": pool_label} if pool_label else {}
            if kind == "StatefulSet":
                pod_labels = {"label_leaderworkerset_sigs_k8s_io_name": "llama-405b"}
            om.put("kube_pod_labels", "gauge", "kube_pod_labels", {**base, **pod_labels}, k, 1)
            for cond, v in (("true", ready), ("false", not ready), ("unknown", False)):
                labels = {**base, "condition": cond}
                om.put("kube_pod_status_ready", "gauge", "kube_pod_status_ready", labels, k, v)
            # The pod's server, scraped with its target labels: the canonical series.
            server = {"model": model, "namespace": ns, "pod": pod, "server": "vllm"}
            same = [p for p in pods if p[1] == model]
            up = [p for p in same if not (down and p[0] in failing)]
            rps = 0.0 if not ready else 40.0 / len(up)
            # the pods left over are overloaded while one is out: 8% of requests rejected
            shed = 0.08 if len(up) < len(same) else 0.0
            for outcome, share in (("success", 1 - shed), ("rejected", shed)):
                key = (pod, outcome)
                counts[key] = counts.get(key, 0.0) + rps * share * STEP
                om.put(
                    "gen_ai_server_requests",
                    "counter",
                    "gen_ai_server_requests_total",
                    {**server, "outcome": outcome},
                    k,
                    counts[key],
                )
            gpu = {"gpu": "0", "UUID": f"GPU-{n:08d}", host_label: f"gpu-{n}"}
            om.put("gpuslo_gpu_up", "gauge", "gpuslo_gpu_up", gpu, k, 1)
            holder = {**gpu, "namespace": ns, "pod": pod, "container": "server"}
            om.put("gpuslo_gpu_pod_info", "gauge", "gpuslo_gpu_pod_info", holder, k, 1)
            # The GPU's processes, each with the pod UID its cgroup names: the server's own
            # and, on the first GPU late in the history, another pod's (a noisy neighbour).
            procs = [("4242", uid)] + ([("31337", FOREIGN_UID)] if n == 0 and k >= 400 else [])
            for pid, owner_uid in procs:
                proc = {**gpu, "pid": pid, "pod_uid": owner_uid, "container_id": "c0ffee"}
                om.put("gpuslo_gpu_process_info", "gauge", "gpuslo_gpu_process_info", proc, k, 1)
        for rs, deploy in ((LLAMA_RS, "llama-70b"), (MISTRAL_RS, "mistral-7b")):
            owner_l = {"owner_kind": "Deployment", "owner_name": deploy}
            labels = {"namespace": ns, "replicaset": rs, **owner_l, "owner_is_controller": "true"}
            om.put("kube_replicaset_owner", "gauge", "kube_replicaset_owner", labels, k, 1)
    return om.text()


SLOS = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults:
  service: chat
  window: 1h
  alerting: {base_window: 1m, windows: windows.yaml}
slos:
  - name: llama-availability
    objective: 99.5
    selector: {model: llama-3-70b}
    availability: {}
"""
WINDOWS = """\
version: 1
tiers:
  - {name: page-fast, severity: page, budget_fraction: 0.05, long_window: 5m, short_window: 1m}
"""


def test_the_documented_kube_state_metrics_names_are_the_ones_the_correlator_reads():
    assert c.KSM_POD_STATUS_READY == "kube_pod_status_ready"
    assert c.KSM_POD_OWNER == "kube_pod_owner"
    assert c.KSM_POD_LABELS == "kube_pod_labels"
    assert c.KSM_REPLICASET_OWNER == "kube_replicaset_owner"
    assert c.KSM_POD_INFO == "kube_pod_info"
    readiness = next(s for s in SIGNALS if s.kind == "replica_loss")
    assert "gpuslo_twin" not in readiness.expr.format(
        **template_names(c.gpu_naming()),
        **{k: '"x"' for k in ("uuids", "nodes", "pods", "pools", "namespaces", "model")},
        pool_map="m",
    )


@pytest.mark.parametrize(
    ("text", "by", "label", "ksm"),
    [
        ("owner", "owner", "pool", "label_pool"),
        ("label", "label", "pool", "label_pool"),
        (
            "label:app.kubernetes.io/part-of",
            "label",
            "app.kubernetes.io/part-of",
            "label_app_kubernetes_io_part_of",
        ),
    ],
)
def test_a_pool_identity_is_parsed_and_names_the_kube_state_metrics_label(text, by, label, ksm):
    ident = pool_identity(text)
    assert (ident.by, ident.label, ident.ksm_label) == (by, label, ksm)


@pytest.mark.parametrize("text", ["deployment", "owner:x", "label:", "label:-bad", "label:a b"])
def test_a_bad_pool_identity_is_a_clear_error(text):
    with pytest.raises(ValueError, match="use owner, label or label:NAME"):
        pool_identity(text)


def test_gpu_queries_follow_the_naming_names_host_label_and_units(monkeypatch):
    util = c.DCGM_GPU_UTIL.name
    monkeypatch.setitem(c.DCGM_CURRENT_NAMES, util, c.CurrentName("DCGM_FI_X_UTIL", 0.01))
    names = template_names(c.gpu_naming("current"))
    assert names["dcgm_gpu_util"] == "DCGM_FI_X_UTIL"
    assert names["u_dcgm_gpu_util"] == " / 0.01"  # back to the percent the signal is named in
    assert names["l_hostname"] == "hostname" and names["by_gpu"].startswith("hostname,")
    legacy = template_names(c.gpu_naming("legacy"))
    assert legacy["dcgm_gpu_util"] == util and legacy["u_dcgm_gpu_util"] == ""
    assert legacy["l_hostname"] == "Hostname"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ksm")
    (tmp / "history.om").write_text(history())
    (tmp / "slos.yaml").write_text(SLOS)
    (tmp / "windows.yaml").write_text(WINDOWS)
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(tmp / "history.om")
        prom.restart()
        yield prom, tmp


@pytest.mark.component
def test_the_unready_replica_of_the_slos_deployment_is_the_cause_and_the_other_models_not(
    cluster,
):
    prom, tmp = cluster
    (slo,) = load_specs([tmp / "slos.yaml"])[0]
    at = START + FAIL_AT * STEP + 120
    result = explain(prom.url, slo, at, STEP)
    assert result.radius.pods == sorted(LLAMA_PODS)
    assert result.radius.pools == ["llama-70b"]  # the Deployment owning its ReplicaSet
    top = result.causes[0]
    assert top.kind == "replica_loss"
    assert dict(top.entity) == {"namespace": "serving", "pool": "llama-70b"}
    ev = top.evidence[0]
    assert (ev.before, ev.after) == (4.0, 3.0)
    assert abs(ev.changed_at - (START + FAIL_AT * STEP)) <= 2 * STEP
    assert "kube_pod_status_ready" in ev.query and "gpuslo_twin" not in ev.query
    pools = {dict(cause.entity).get("pool") for cause in result.causes}
    assert "mistral-7b" not in pools  # its pod failed too, but it serves another model


@pytest.mark.component
def test_pools_by_a_pod_label_group_what_owners_split(cluster):
    prom, tmp = cluster
    end = START + STEPS * STEP
    by_owner = blast_radius(prom.url, "llama-405b", START, end)
    # A LeaderWorkerSet's leader and workers are StatefulSets of their own...
    assert by_owner.pools == ["llama-405b", "llama-405b-0"]
    # ...its name label (allowlisted in kube-state-metrics) is one pool.
    lws = Config(pools=pool_identity(f"label:{LWS_LABEL}"))
    assert blast_radius(prom.url, "llama-405b", START, end, lws).pools == ["llama-405b"]
    labelled = Config(pools=pool_identity("label"))  # the `pool` pod label
    assert blast_radius(prom.url, "llama-3-70b", START, end, labelled).pools == ["chat-70b"]
    (slo,) = load_specs([tmp / "slos.yaml"])[0]
    result = explain(prom.url, slo, START + FAIL_AT * STEP + 120, STEP, config=labelled)
    assert dict(result.causes[0].entity) == {"namespace": "serving", "pool": "chat-70b"}


@pytest.mark.component
def test_explain_cli_takes_the_pool_identity_and_the_gpu_naming(cluster):
    prom, tmp = cluster
    common = [
        "explain",
        str(tmp / "slos.yaml"),
        "--slo",
        "llama-availability",
        "--at",
        str(START + FAIL_AT * STEP + 120),
        "--prometheus",
        prom.url,
        "--step",
        "15s",
        "--json",
    ]
    proc = run_gpuslo(*common, "--pool-by", "label:pool", "--dcgm-names", "legacy")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["causes"][0]["kind"] == "replica_loss"
    assert out["causes"][0]["entity"] == {"namespace": "serving", "pool": "chat-70b"}
    assert out["radius"]["pools"] == ["chat-70b"] and out["radius"]["gpus"] == 4
    # current dcgm-exporter names: the host label is `hostname`, absent from this history
    cur = json.loads(run_gpuslo(*common, "--dcgm-names", "current").stdout)
    assert cur["radius"]["nodes"] == [] and cur["radius"]["pools"] == ["llama-70b"]
    bad = run_gpuslo(*common, "--pool-by", "deployment")
    assert bad.returncode == 2 and "--pool-by" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.component
def test_a_gpu_lost_on_a_current_naming_cluster_is_named_by_its_hostname(tmp_path):
    text = history(host_label="hostname")
    # GPU 1 (a llama pod's) is lost half a minute before the pod goes NotReady.
    lost_from = START + (FAIL_AT - 2) * STEP
    lines = []
    for line in text.splitlines():
        if line.startswith("gpuslo_gpu_up{") and 'UUID="GPU-00000002"' in line:
            t = float(line.rsplit(" ", 1)[1])
            if lost_from <= t < START + (FAIL_AT + FAIL_FOR) * STEP:
                line = line.replace("} 1 ", "} 0 ")
        lines.append(line)
    (tmp_path / "history.om").write_text("\n".join(lines) + "\n")
    (tmp_path / "slos.yaml").write_text(SLOS)
    (tmp_path / "windows.yaml").write_text(WINDOWS)
    (slo,) = load_specs([tmp_path / "slos.yaml"])[0]
    with Prometheus(tmp_path / "prom") as prom:
        prom.backfill_openmetrics(tmp_path / "history.om")
        prom.restart()
        at = START + FAIL_AT * STEP + 120
        current = explain(prom.url, slo, at, STEP, config=Config(naming=c.gpu_naming("current")))
        legacy = explain(prom.url, slo, at, STEP)
    assert current.radius.nodes == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    top = current.causes[0]
    assert top.kind == "gpu_lost" and dict(top.entity) == {"Hostname": "gpu-2", "gpu": "0"}
    assert legacy.radius.nodes == []  # the legacy host label is not on these series
    # the GPU is still found by its UUID, but the host it is on cannot be named
    lost = [cause for cause in legacy.causes if cause.kind == "gpu_lost"]
    assert lost and all(dict(cause.entity)["Hostname"] == "" for cause in lost)


@pytest.mark.component
def test_a_process_of_no_serving_pod_is_told_from_the_servers_own_by_its_pod_uid(cluster):
    prom, _ = cluster
    end = START + (STEPS - 1) * STEP
    radius = blast_radius(prom.url, "llama-3-70b", START, end)
    signal = next(s for s in SIGNALS if s.name == "processes of no serving pod")
    up = next(s for s in SIGNALS if s.name == "GPU up")  # where the history starts
    times, found = candidates_from_prometheus(
        prom.url, radius, START + 380 * STEP, end, STEP, signals=[up, signal]
    )
    cands = [c for c in found if c.signal is signal]
    # every GPU runs its own pod's server; only GPU-00000000 gets another pod's process
    assert [dict(c.labels)["UUID"] for c in cands] == ["GPU-00000000"]
    values = cands[0].values
    assert values[times < START + 400 * STEP].max() == 0 and values[-1] == 1
