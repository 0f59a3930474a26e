"""The price catalog: $/GPU-hour by GPU model and pricing class, which class each node is,
MIG slice fractions, CPU/memory prices for the fallback pool and an optional energy price.

    apiVersion: gpuslo/v1
    kind: PriceCatalog
    currency: USD
    as_of: "2026-11-01"
    sources: ["https://…"]
    gpus:
      H100: {on-demand: 2.95, spot: 1.25}
    nodes:                      # first match wins (a regular expression on Hostname)
      - {match: "gpu-node-0[01]", gpu: H100, class: spot}
      - {match: ".*", gpu: H100, class: on-demand}
    mig: {3g.40gb: 0.5}         # optional; default: the profile's compute slices / 7
    cpu: {per_vcpu_hour: 0.012, per_gib_hour: 0.0032}
    energy: {per_kwh: 0.12}     # optional: adds measured energy on top of the GPU price

Validated like SLO specs: every problem as ``file:line:col: field: message``.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from gpuslo.foundation.errors import SpecError
from gpuslo.foundation.specmodel import FrozenStrict
from gpuslo.foundation.yamlpos import load_single, problem_at

PricingClass = Literal["on-demand", "reserved", "spot"]


class NodeRule(FrozenStrict):
    match: str = Field(description="regular expression over the node's Hostname, whole name")
    gpu: str
    pricing: PricingClass = Field(alias="class")

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a regular expression: {err}") from None
        return value


class CpuPrices(FrozenStrict):
    per_vcpu_hour: float = Field(ge=0)
    per_gib_hour: float = Field(ge=0)


class EnergyPrice(FrozenStrict):
    per_kwh: float = Field(ge=0)


class PriceCatalog(FrozenStrict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["PriceCatalog"]
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    as_of: date = Field(description="the day the prices were read")
    sources: list[str] = Field(default_factory=list)
    gpus: dict[str, dict[PricingClass, float]] = Field(min_length=1)
    nodes: list[NodeRule] = Field(min_length=1)
    mig: dict[str, float] = Field(default_factory=dict)
    cpu: CpuPrices | None = None
    energy: EnergyPrice | None = None

    @field_validator("gpus")
    @classmethod
    def _prices(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, classes in value.items():
            if not classes:
                raise ValueError(f"{model}: give at least one pricing class")
            for name, price in classes.items():
                if price < 0:
                    raise ValueError(f"{model}.{name}: a price cannot be negative")
        return value

    @field_validator("mig")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        for profile, share in value.items():
            if not 0 < share <= 1:
                raise ValueError(f"{profile}: a MIG fraction is in (0, 1]")
        return value

    def node_rule(self, hostname: str) -> NodeRule | None:
        """The first rule whose pattern matches the whole hostname."""
        return next((r for r in self.nodes if re.fullmatch(r.match, hostname)), None)

    def gpu_hour(self, hostname: str) -> float | None:
        """$ per GPU-hour of the node's GPUs; None when no rule or price covers it."""
        rule = self.node_rule(hostname)
        if rule is None:
            return None
        return self.gpus.get(rule.gpu, {}).get(rule.pricing)

    def mig_fraction(self, profile: str) -> float:
        """The share of a GPU's price a MIG instance of ``profile`` carries."""
        if profile in self.mig:
            return self.mig[profile]
        slices = re.match(r"^(\d+)g\.", profile)
        if slices is None:
            raise ValueError(f"MIG profile {profile!r}: give its fraction under mig:")
        return int(slices.group(1)) / 7


def load_catalog(path: str | Path) -> PriceCatalog:
    """Validate a catalog file; SpecError lists every problem with its place."""
    catalog, node = load_single(path, PriceCatalog, "price catalog")
    problems = []
    for i, rule in enumerate(catalog.nodes):
        prices = catalog.gpus.get(rule.gpu)
        if prices is None:
            known = ", ".join(sorted(catalog.gpus))
            problems.append(
                problem_at(
                    path, node, ("nodes", i, "gpu"), f"no price for {rule.gpu} (have {known})"
                )
            )
        elif rule.pricing not in prices:
            problems.append(
                problem_at(
                    path, node, ("nodes", i, "class"), f"{rule.gpu} has no {rule.pricing} price"
                )
            )
    if problems:
        raise SpecError(problems)
    return catalog
