"""Cost allocation with numbers checked by hand: a time-sliced GPU, MIG instances, spot vs
on-demand, idle sharing, tenant splits. Every case reconciles to the bill."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpuslo.cost_model.allocation import (
    NO_TRAFFIC,
    CpuPod,
    GpuHistory,
    Holding,
    UnitCosts,
    allocate,
)
from gpuslo.cost_model.catalog import load_catalog
from gpuslo.foundation.errors import SpecError

STEP = 60.0
N = 10  # ten one-minute steps: 600 s
PRICE = 3.60  # $/GPU-hour = $0.001 per second: $0.60 per GPU over the window


def ones(value: float = 1.0, n: int = N) -> np.ndarray:
    return np.full(n, value)


def gpu(holdings, util=0.5, price=PRICE, present=None) -> GpuHistory:
    return GpuHistory(
        "GPU-1",
        "node-a",
        np.ones(N, bool) if present is None else present,
        ones(util),
        price,
        holdings,
    )


def test_a_time_sliced_gpu_is_split_evenly_and_usage_leaves_the_rest_idle():
    g = gpu([Holding("ns", "a", ones(0.5)), Holding("ns", "b", ones(0.5))])
    costs = allocate([g], STEP, {("ns", "a"): "m1", ("ns", "b"): "m2"}, {})
    assert costs.bill == pytest.approx(0.60)
    assert costs.allocated == pytest.approx({"m1": 0.30, "m2": 0.30})
    assert costs.used == pytest.approx({"m1": 0.15, "m2": 0.15})  # half busy
    assert costs.idle == pytest.approx(0.0)
    assert costs.idle_used == pytest.approx(0.30)
    assert costs.reconciles()


def test_mig_instances_carry_their_profile_fraction_and_an_unknown_pod_stays_unattributed():
    three_sevenths = 3 / 7
    g = gpu(
        [
            Holding("ns", "a", ones(three_sevenths), util=ones(1.0)),
            Holding("ns", "job", ones(three_sevenths), util=ones(0.2)),
        ]
    )
    costs = allocate([g], STEP, {("ns", "a"): "m1"}, {("m1", "acme"): 10})
    assert costs.allocated["m1"] == pytest.approx(0.60 * 3 / 7)  # $0.257142…
    assert costs.unattributed == pytest.approx(0.60 * 3 / 7)
    assert costs.idle == pytest.approx(0.60 / 7)  # the free 1g slice
    assert costs.used["m1"] == pytest.approx(0.60 * 3 / 7)  # its instance was fully busy
    assert costs.unattributed_used == pytest.approx(0.60 * 3 / 7 * 0.2)
    assert costs.reconciles()


def test_a_pod_holding_half_the_window_pays_half_and_a_lost_gpu_is_still_billed():
    half = np.where(np.arange(N) < 5, 1.0, 0.0)
    g = gpu([Holding("ns", "a", half)], util=1.0)
    lost = GpuHistory("GPU-2", "node-a", np.ones(N, bool), ones(0.0), PRICE, [])
    costs = allocate([g, lost], STEP, {("ns", "a"): "m1"}, {})
    assert costs.bill == pytest.approx(1.20)
    assert costs.allocated["m1"] == pytest.approx(0.30)
    assert costs.idle == pytest.approx(0.90)
    assert costs.tenants == {("m1", NO_TRAFFIC): pytest.approx(0.30)}  # no requests seen
    assert costs.reconciles()


def test_idle_shared_back_evenly_or_by_usage():
    g1 = gpu([Holding("ns", "a", ones())], util=0.75)  # m1: $0.60, used 0.45
    g2 = gpu([Holding("ns", "b", ones())], util=0.25)  # m2: $0.60, used 0.15
    spare = gpu([], util=0.0)  # idle $0.60
    pods = {("ns", "a"): "m1", ("ns", "b"): "m2"}
    even = allocate([g1, g2, spare], STEP, pods, {}, share_idle="even")
    assert even.allocated == pytest.approx({"m1": 0.90, "m2": 0.90})
    assert even.idle == 0.0 and even.reconciles()
    usage = allocate([g1, g2, spare], STEP, pods, {}, share_idle="usage")
    # usage-basis idle: 1.80 - 0.60 used = 1.20, shared 3:1
    assert usage.used == pytest.approx({"m1": 0.45 + 0.90, "m2": 0.15 + 0.30})
    assert usage.allocated == pytest.approx({"m1": 0.60 + 0.45, "m2": 0.60 + 0.15})
    assert usage.reconciles()


def test_tenants_split_a_models_cost_by_requests_and_unit_costs_follow():
    g = gpu([Holding("ns", "a", ones())])
    costs = allocate([g], STEP, {("ns", "a"): "m1"}, {("m1", "acme"): 300, ("m1", "globex"): 100})
    assert costs.tenants == pytest.approx({("m1", "acme"): 0.45, ("m1", "globex"): 0.15})
    unit = UnitCosts(400, 380, 200_000, 100_000, costs.allocated["m1"], joules=3_000.0)
    assert unit.per_1k_requests == pytest.approx(1.50)
    assert unit.per_1m_tokens == pytest.approx(2.00)
    assert unit.per_1m_output_tokens == pytest.approx(6.00)
    assert unit.per_1k_good_requests == pytest.approx(0.60 / 380 * 1000)
    assert unit.joules_per_token == pytest.approx(0.01)
    assert math.isnan(UnitCosts(0, None, 0, 0, 1.0).per_1k_requests)


def test_a_gpu_without_a_price_is_reported_not_billed():
    g = gpu([Holding("ns", "a", ones())], price=None)
    costs = allocate([g], STEP, {("ns", "a"): "m1"}, {})
    assert costs.bill == 0.0 and costs.unpriced_gpu_seconds == 600.0


CATALOG = """\
apiVersion: gpuslo/v1
kind: PriceCatalog
currency: USD
as_of: "2026-11-01"
gpus:
  H100: {on-demand: 2.95, spot: 1.25}
nodes:
  - {match: "gpu-node-0[01]", gpu: H100, class: spot}
  - {match: "gpu-node-.*", gpu: H100, class: on-demand}
mig: {3g.40gb: 0.5}
"""


def test_catalog_prices_spot_and_on_demand_nodes_and_mig_fractions(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    catalog = load_catalog(path)
    assert catalog.gpu_hour("gpu-node-01") == 1.25
    assert catalog.gpu_hour("gpu-node-07") == 2.95
    assert catalog.gpu_hour("cpu-node-0") is None
    assert catalog.mig_fraction("3g.40gb") == 0.5  # as given
    assert catalog.mig_fraction("1g.10gb") == pytest.approx(1 / 7)  # compute slices / 7


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ("class: spot}", "nodes[0].class", "Input should be 'on-demand', 'reserved' or 'spot'"),
        ("gpu: H100, class: spot}", "nodes[0].gpu", "no price for A100"),
        ('as_of: "2026-11-01"', "as_of", "date"),
    ],
)
def test_catalog_errors_name_the_line_and_field(tmp_path, change, where, message):
    bad = {
        "class: spot}": CATALOG.replace("class: spot}", "class: cheap}"),
        "gpu: H100, class: spot}": CATALOG.replace(
            "gpu: H100, class: spot}", "gpu: A100, class: spot}"
        ),
        'as_of: "2026-11-01"': CATALOG.replace('as_of: "2026-11-01"', 'as_of: "last week"'),
    }[change]
    path = tmp_path / "catalog.yaml"
    path.write_text(bad)
    with pytest.raises(SpecError) as err:
        load_catalog(path)
    problem = err.value.problems[0]
    assert problem.field == where
    assert message in problem.message
    assert problem.line > 1


def test_a_cpu_pod_pays_its_requests_and_joins_the_bill():
    g = gpu([Holding("ns", "a", ones())], util=1.0)
    cpu = CpuPod("ns", "fallback-0", ones(16.0), ones(64.0))
    costs = allocate(
        [g],
        STEP,
        {("ns", "a"): "m1", ("ns", "fallback-0"): "m2"},
        {},
        cpu_pods=[cpu],
        cpu_prices=(0.012, 0.0032),
    )
    # 10 minutes of 16 vCPUs at $0.012 and 64 GiB at $0.0032 per hour
    expected = (16 * 0.012 + 64 * 0.0032) / 6
    assert costs.allocated["m2"] == pytest.approx(expected)
    assert costs.cpu_bill == pytest.approx(expected)
    assert costs.bill == pytest.approx(0.60 + expected)
    assert costs.reconciles()
