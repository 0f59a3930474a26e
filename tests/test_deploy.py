"""Kubernetes manifests, validated against the Kubernetes schemas (kubernetes-validate) and,
for the ServiceMonitor CRD, a hand-written schema; plus checks that they agree with the agent."""

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gpuslo.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S_VERSION = "1.30.0"


def docs():
    out = {}
    for path in sorted((DEPLOY / "agent").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


@pytest.mark.parametrize(
    "kind",
    ["Namespace", "ServiceAccount", "DaemonSet", "Service", "ClusterRole", "ClusterRoleBinding"],
)
def test_core_manifests_are_valid_against_the_kubernetes_schema_strictly(kind):
    kubernetes_validate.validate(docs()[kind], K8S_VERSION, strict=True)


def test_a_misspelled_field_is_caught_by_the_strict_schema():
    ds = docs()["DaemonSet"]
    ds["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def servicemonitor_schema():
    return json.loads((DEPLOY / "schemas" / "servicemonitor.schema.json").read_text())


def test_servicemonitor_is_valid_and_the_schema_rejects_typos():
    schema = servicemonitor_schema()
    sm = docs()["ServiceMonitor"]
    jsonschema.validate(sm, schema)
    sm["spec"]["endpoints"][0]["intreval"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sm, schema)


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((DEPLOY / "agent" / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in (DEPLOY / "agent").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_daemonset_args_are_flags_the_agent_accepts_and_paths_are_mounted():
    ds = docs()["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = build_parser().parse_args(container["args"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert host[mounts[args.sysfs]] == "/sys"
    assert host[mounts[args.procfs]] == "/proc"
    socket_dir = str(Path(args.pod_resources_socket).parent)
    assert host[mounts[socket_dir]] == "/var/lib/kubelet/pod-resources"
    port = int(args.listen.rsplit(":", 1)[1])
    assert container["ports"][0] == {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    assert pod["runtimeClassName"] == "nvidia"
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {}))


def test_agent_rbac_grants_listing_pods_and_resourceslices_and_nothing_else_and_both_are_on():
    d = docs()
    assert d["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"], "verbs": ["list"]},
    ]
    binding = d["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == d["ClusterRole"]["metadata"]["name"]
    account = d["ServiceAccount"]["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    pod = d["DaemonSet"]["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert args.discover_pods and args.dra and args.node_name == "$(NODE_NAME)"
    assert pod["automountServiceAccountToken"] is True
    otlp = int(args.otlp_listen.rsplit(":", 1)[1])
    ports = {p["name"]: p for p in pod["containers"][0]["ports"]}
    assert ports["otlp-http"]["containerPort"] == ports["otlp-http"]["hostPort"] == otlp


def test_service_and_servicemonitor_select_the_agent_pods():
    d = docs()
    pod_labels = d["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    assert d["DaemonSet"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert d["Service"]["spec"]["selector"].items() <= pod_labels.items()
    sm = d["ServiceMonitor"]
    assert (
        sm["spec"]["selector"]["matchLabels"].items() <= d["Service"]["metadata"]["labels"].items()
    )
    assert sm["spec"]["endpoints"][0]["port"] == d["Service"]["spec"]["ports"][0]["name"]
    assert d["Service"]["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]


def remediation_docs():
    out = []
    for path in sorted((DEPLOY / "remediation").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += list(yaml.safe_load_all(path.read_text()))
    return out


@pytest.mark.parametrize("doc", remediation_docs(), ids=lambda d: d["kind"])
def test_remediation_manifests_are_valid_against_the_kubernetes_schema_strictly(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_remediation_role_grants_what_the_kubernetes_actuator_calls_and_no_more():
    role = next(d for d in remediation_docs() if d["kind"] == "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # The calls in tests/fixtures/contracts/kubernetes_remediation.json, as RBAC sees them.
    contract = json.loads(
        (
            Path(__file__).parent / "fixtures" / "contracts" / "kubernetes_remediation.json"
        ).read_text()
    )
    needed = set()
    for name, exchanges in contract.items():
        if name.startswith("_"):
            continue
        for x in exchanges:
            parts = x["request"]["path"].strip("/").split("/")
            group = "" if parts[0] == "api" else parts[1]
            # /apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]
            resource = parts[5] + (f"/{parts[7]}" if len(parts) > 7 else "")
            verb = {"PATCH": "patch"}.get(
                x["request"]["method"], "list" if len(parts) == 6 else "get"
            )
            needed.add((group, resource, verb))
    assert needed <= granted, needed - granted
    assert all(verb in ("get", "list", "patch") for _, _, verb in granted)


def test_remediation_deployment_args_are_flags_the_hook_accepts():
    dep = next(d for d in remediation_docs() if d["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.actuator == "kubernetes" and parsed.token_file is not None
    policy = next(d for d in remediation_docs() if d["kind"] == "ConfigMap")["data"]["policy.yaml"]
    from gpuslo.remediation.policy import PolicyFile

    PolicyFile.model_validate(yaml.safe_load(policy))


def test_the_image_copies_every_folder_the_wheel_is_built_from():
    # pip install . in deploy/Dockerfile sees only what is copied: a folder missing there is
    # a package (or its data) missing from the image.
    import tomllib

    folders = set(
        tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "package-dir"
        ].values()
    )
    copied = {
        line.split()[1]
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    }
    assert folders - copied == set()
    assert {"pyproject.toml", "README.md"} <= {
        part
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    }
