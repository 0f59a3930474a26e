"""Where generated rules go: Prometheus rule files, prometheus-operator PrometheusRules,
Mimir/Cortex ruler namespaces, Thanos Ruler and vmalert; each target's layout and document.

What each ruler guarantees, and so how the rules are grouped:

- Prometheus, Mimir, Cortex, Thanos Ruler: groups run concurrently, the rules of a group in
  order at one timestamp, each seeing what the earlier ones recorded (Mimir's ruler pushes to
  its ingesters before the next rule queries them; Thanos Ruler queries its own store through
  Thanos Query). So alerts share a group with the recordings they read (``chained``).
- vmalert: rules of a group run in order (``concurrency: 1``), but recording results are
  persisted asynchronously through remote write, so a rule must not read what its own group
  records in the same evaluation (vmalert docs, "Limitations"). Rules are laid out so no rule
  reads its own group's recordings; what reads another group's recordings lags by up to one
  interval plus the storage's ingestion delay (``-search.latencyOffset`` on VictoriaMetrics).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .rules import DEFAULT_LAYOUT, Layout

Target = Literal["prometheus", "prometheusrule", "mimir", "thanos", "vmalert"]
TARGETS: tuple[Target, ...] = ("prometheus", "prometheusrule", "mimir", "thanos", "vmalert")
ALIASES: dict[str, Target] = {"rules": "prometheus"}  # the older --format value
SUFFIX: dict[Target, str] = {
    "prometheus": ".rules.yaml",
    "prometheusrule": ".prometheusrule.yaml",
    "mimir": ".mimir.yaml",
    "thanos": ".thanos.yaml",
    "vmalert": ".vmalert.yaml",
}
# Grafana Mimir's ruler defaults (limits: ruler_max_rules_per_rule_group,
# ruler_max_rule_groups_per_tenant); Cortex has the same limits, unlimited by default.
MIMIR_MAX_RULES_PER_GROUP = 20
MIMIR_MAX_GROUPS_PER_TENANT = 70
# Thanos Ruler: an SLO computed from a partial view of the stores is wrong, not approximate;
# "abort" fails the evaluation (the rule turns unhealthy) instead of recording it.
THANOS_PARTIAL_RESPONSE = "abort"


def target(name: str) -> Target:
    """A target by name or alias; ValueError naming the choices otherwise."""
    name = ALIASES.get(name, name)
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}: choose one of {', '.join(TARGETS)}")
    return name


def layout_for(tgt: Target, layout: Layout = DEFAULT_LAYOUT) -> Layout:
    """The layout a target needs: vmalert reads no recording of its own group in the same
    evaluation, so its windows are plain sums over the base rates (no hourly partial sums,
    which chain)."""
    if tgt == "vmalert":
        return replace(layout, chained=False, tiled=False)
    return layout


def document(tgt: Target, groups: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The file content for one spec file's groups; ``name`` is the file's stem."""
    if tgt == "prometheus":
        return {"groups": groups}
    if tgt == "mimir":
        return {"namespace": namespace(name), "groups": groups}
    if tgt == "thanos":
        return {
            "groups": [{**g, "partial_response_strategy": THANOS_PARTIAL_RESPONSE} for g in groups]
        }
    if tgt == "vmalert":
        return {"groups": [_vmalert_group(g) for g in groups]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": k8s_name(f"gpuslo-{name}"),
            "labels": {"app.kubernetes.io/part-of": "gpuslo"},
        },
        "spec": {"groups": groups},
    }


def _vmalert_group(group: dict[str, Any]) -> dict[str, Any]:
    """vmalert's group: rules in order, one at a time (its default, written out)."""
    out = {k: v for k, v in group.items() if k != "rules"}
    return {**out, "concurrency": 1, "rules": group["rules"]}


def namespace(stem: str) -> str:
    """The Mimir ruler namespace for a spec file: ``gpuslo-<stem>``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"gpuslo-{stem}")


def k8s_name(text: str) -> str:
    """A DNS-1123 object name from a file stem (``My_SLOs`` -> ``my-slos``)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:253] or "gpuslo"


@dataclass(frozen=True)
class Limits:
    """What an output needs from a ruler's per-tenant limits."""

    groups: int
    max_rules_per_group: int
    rules: int

    def summary(self, tgt: Target) -> str:
        """One or two lines for the operator: the totals, and for Mimir and Cortex the limits
        to set where the defaults are too low."""
        lines = [
            f"{self.rules} rules in {self.groups} groups, at most {self.max_rules_per_group} "
            "rules per group"
        ]
        if tgt == "mimir":
            over = []
            if self.groups > MIMIR_MAX_GROUPS_PER_TENANT:
                over.append(f"groups (default {MIMIR_MAX_GROUPS_PER_TENANT})")
            if self.max_rules_per_group > MIMIR_MAX_RULES_PER_GROUP:
                over.append(f"rules per group (default {MIMIR_MAX_RULES_PER_GROUP})")
            lines.append(
                f"Mimir/Cortex tenant limits needed: ruler_max_rule_groups_per_tenant >= "
                f"{self.groups}, ruler_max_rules_per_rule_group >= {self.max_rules_per_group}"
                + (f"; above Mimir's defaults: {', '.join(over)}" if over else "")
            )
        return "\n".join(lines)


def limits(groups: Sequence[dict[str, Any]]) -> Limits:
    """Groups, largest group and rules over every file loaded into one tenant."""
    sizes = [len(g["rules"]) for g in groups]
    return Limits(len(sizes), max(sizes, default=0), sum(sizes))


_RECORDED_NAME = re.compile(r"gpuslo:[A-Za-z0-9_:]+")


def ordering_problems(groups: Sequence[dict[str, Any]], chained: bool) -> list[str]:
    """Where a rule would read a recording from the wrong evaluation, as one line each.

    ``chained`` (Prometheus, Mimir, Thanos): a rule reading a recording of its own group must
    come after it (else it reads the previous evaluation's value), and an alert reads only
    recordings of its own group (another group may not have run yet this cycle). Recordings
    may read other groups' recordings: dashboards, one interval behind at most. Not chained
    (vmalert): no rule reads a recording of its own group at all."""
    problems = []
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    for g in groups:
        position = {r["record"]: i for i, r in enumerate(g["rules"]) if "record" in r}
        for i, rule in enumerate(g["rules"]):
            what = rule.get("record") or rule.get("alert")
            for name in sorted(set(_RECORDED_NAME.findall(rule["expr"])) & recorded):
                if not chained:
                    if name in position:
                        problems.append(f"{g['name']}: {what} reads {name} of its own group")
                elif name in position and position[name] >= i:
                    problems.append(f"{g['name']}: {what} reads {name}, recorded after it")
                elif name not in position and "alert" in rule:
                    problems.append(f"{g['name']}: alert {what} reads {name} of another group")
    return problems
