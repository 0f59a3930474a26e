"""The Kubernetes actuator against recorded API contracts (named as such): the official client
talks to a loopback server that answers from ``fixtures/contracts/kubernetes_remediation.json``
and fails the test on any request the contract does not list, in order."""

from __future__ import annotations

import json

import pytest

from gpuslo.remediation.actuators import ActuatorError
from gpuslo.remediation.kube import KubernetesActuator
from gpuslo.remediation.policy import Route, Workload
from tests.conftest import FIXTURES
from tests.contracts import contract_fixture

pytestmark = pytest.mark.contract
CONTRACT = json.loads((FIXTURES / "contracts" / "kubernetes_remediation.json").read_text())
POOL = Workload(namespace="inference", name="llama")
ROUTE = Route(namespace="inference", name="chat")


contract = contract_fixture(CONTRACT)


def test_a_deployment_without_an_hpa_is_scaled_through_its_scale_subresource(contract):
    server = contract("scale_without_hpa")
    kube = KubernetesActuator(server.api_client())
    assert kube.replicas(POOL) == 2
    assert kube.scale(POOL, 4) == "scale subresource"
    patch = [s for s in server.seen if s[0] == "PATCH"]
    assert patch and "merge-patch" in patch[0][2]  # a merge patch of spec.replicas only


def test_an_hpa_owned_deployment_gets_its_bounds_raised_not_its_scale(contract):
    server = contract("scale_owned_by_hpa")
    kube = KubernetesActuator(server.api_client())
    assert kube.replicas(POOL) == 2  # the HPA's floor, not the current scale
    assert kube.scale(POOL, 4) == "HPA llama minReplicas"


def test_forbidden_is_an_error_with_the_api_servers_reason(contract):
    server = contract("scale_forbidden")
    with pytest.raises(ActuatorError, match=r"HTTP 403 .*cannot patch resource") as err:
        KubernetesActuator(server.api_client()).scale(POOL, 4)
    assert not err.value.retryable


def test_route_weights_retry_a_conflict_on_the_latest_version(contract):
    server = contract("route_weights_with_conflict")
    kube = KubernetesActuator(server.api_client())
    assert kube.weights(ROUTE) == {"llama": 100, "llama-cpu": 0}
    kube.set_weights(ROUTE, {"llama": 75, "llama-cpu": 25})
