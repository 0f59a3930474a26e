"""The Kubernetes actuator, on the official client.

- Replicas go through the ``/scale`` subresource of a Deployment or StatefulSet, unless a
  HorizontalPodAutoscaler (KEDA makes one too) targets the workload: then the hook raises the
  HPA's ``minReplicas`` (and ``maxReplicas`` when needed) instead of fighting it over
  ``/scale``.
- CPU fallback sets the ``weight`` of a Gateway API ``HTTPRoute``'s backendRefs, with the
  route's ``resourceVersion`` in the patch so a concurrent edit is a 409, re-read and retried.
- 403 (RBAC) and other API errors become ActuatorError with the API's message.

The RBAC this needs is in ``deploy/remediation/role.yaml``.
"""

from __future__ import annotations

from typing import Any

from .actuators import ActuatorError
from .policy import Route, Workload

GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
RETRIES = 3


class KubernetesActuator:
    name = "kubernetes"

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.apps = client.AppsV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def from_environment(cls) -> KubernetesActuator:
        """In a pod: the service account; elsewhere: the kubeconfig."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            try:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            except (config.ConfigException, OSError) as err:
                raise ActuatorError(f"no Kubernetes credentials: {err}") from None
        return cls(client.ApiClient())

    # ------------------------------------------------------------------ helpers
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            raise ActuatorError(
                f"{what}: HTTP {err.status} {_message(err)}",
                retryable=err.status in (409, 429) or (err.status or 0) >= 500,
            ) from None
        except OSError as err:  # urllib3 wraps most; keep outages retryable
            raise ActuatorError(f"{what}: {err}", retryable=True) from None

    def _hpa(self, workload: Workload) -> Any | None:
        """The HPA that targets the workload, if any."""
        hpas = self._call(
            f"list HPAs in {workload.namespace}",
            self.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            workload.namespace,
        )
        for hpa in hpas.items:
            ref = hpa.spec.scale_target_ref
            if ref.kind == workload.kind and ref.name == workload.name:
                return hpa
        return None

    def _scale_api(self, workload: Workload) -> tuple[Any, Any]:
        if workload.kind == "StatefulSet":
            return (
                self.apps.read_namespaced_stateful_set_scale,
                self.apps.patch_namespaced_stateful_set_scale,
            )
        return (
            self.apps.read_namespaced_deployment_scale,
            self.apps.patch_namespaced_deployment_scale,
        )

    # ------------------------------------------------------------------ replicas
    def replicas(self, workload: Workload) -> int:
        """The replica floor the hook controls: the HPA's minReplicas, or the scale."""
        hpa = self._hpa(workload)
        if hpa is not None:
            return int(hpa.spec.min_replicas or 1)
        read, _ = self._scale_api(workload)
        scale = self._call(f"read {workload.ref}/scale", read, workload.name, workload.namespace)
        return int(scale.spec.replicas or 0)

    def scale(self, workload: Workload, replicas: int) -> str:
        hpa = self._hpa(workload)
        if hpa is not None:
            body = {"spec": {"minReplicas": replicas}}
            if hpa.spec.max_replicas < replicas:
                body["spec"]["maxReplicas"] = replicas
            self._call(
                f"patch HPA {workload.namespace}/{hpa.metadata.name}",
                self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                hpa.metadata.name,
                workload.namespace,
                body,
            )
            return f"HPA {hpa.metadata.name} minReplicas"
        _, patch = self._scale_api(workload)
        self._call(
            f"patch {workload.ref}/scale",
            patch,
            workload.name,
            workload.namespace,
            {"spec": {"replicas": replicas}},
        )
        return "scale subresource"

    # ------------------------------------------------------------------ traffic
    def _route(self, route: Route) -> dict[str, Any]:
        obj: dict[str, Any] = self._call(
            f"read {route.ref}",
            self.custom.get_namespaced_custom_object,
            GATEWAY_GROUP,
            GATEWAY_VERSION,
            route.namespace,
            "httproutes",
            route.name,
        )
        return obj

    def weights(self, route: Route) -> dict[str, int]:
        weights: dict[str, int] = {}
        for rule in self._route(route).get("spec", {}).get("rules", []):
            for ref in rule.get("backendRefs", []):
                weights[ref["name"]] = weights.get(ref["name"], 0) + int(ref.get("weight", 1))
        return weights

    def set_weights(self, route: Route, weights: dict[str, int]) -> None:
        for attempt in range(RETRIES):
            obj = self._route(route)
            rules = obj.get("spec", {}).get("rules", [])
            names = {ref["name"] for rule in rules for ref in rule.get("backendRefs", [])}
            missing = sorted(set(weights) - names)
            if missing:
                raise ActuatorError(
                    f"{route.ref} has no backendRef {missing[0]!r}: list it with weight 0"
                )
            for rule in rules:
                for ref in rule.get("backendRefs", []):
                    if ref["name"] in weights:
                        ref["weight"] = weights[ref["name"]]
            body = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {"rules": rules},
            }
            try:
                self._call(
                    f"patch {route.ref}",
                    self.custom.patch_namespaced_custom_object,
                    GATEWAY_GROUP,
                    GATEWAY_VERSION,
                    route.namespace,
                    "httproutes",
                    route.name,
                    body,
                )
                return
            except ActuatorError as err:
                if "HTTP 409" not in str(err) or attempt == RETRIES - 1:
                    raise


def _message(err: Any) -> str:
    """The API server's Status message, else the reason."""
    import json

    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)
