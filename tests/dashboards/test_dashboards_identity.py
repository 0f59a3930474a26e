"""Dashboards when two services each have an SLO of the same name (Sloth's identity is
service + name): one drill-down each, and every panel selects its own service's series."""

from __future__ import annotations

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from gpuslo.dashboards.generate import all_dashboards
from gpuslo.slo_engine.model import SLO, AlertTier


def _slo(service: str) -> SLO:
    tier = AlertTier("page-fast", "page", 0.02, 3600.0, 300.0)
    return SLO("availability", service, 0.99, 30 * 86400.0, "e", "t", (tier,))


def test_same_named_slos_of_two_services_get_a_dashboard_each_selecting_by_service():
    built = all_dashboards([_slo("search"), _slo("chat")])
    details = sorted(
        name for name in built if name.startswith("gpuslo-slo-") and "overview" not in name
    )
    assert details == ["gpuslo-slo-chat-availability.json", "gpuslo-slo-search-availability.json"]
    for service in ("chat", "search"):
        text = JSONEncoder().encode(built[f"gpuslo-slo-{service}-availability.json"])
        assert f'service=\\"{service}\\"' in text
        other = "search" if service == "chat" else "chat"
        assert f'service=\\"{other}\\"' not in text


def test_a_unique_name_keeps_its_dashboard_uid():
    built = all_dashboards([_slo("chat")])
    assert "gpuslo-slo-availability.json" in built
