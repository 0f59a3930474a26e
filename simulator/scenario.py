"""Twin scenarios (YAML): the fleet, its serving pools, tenants' traffic and a fault timeline.

apiVersion: gpuslo/v1
kind: TwinScenario
duration: 2h
nodes: [{prefix: gpu-node, count: 2, gpus: 8, profile: H100}]
pools:
  - {name: llama-70b, model: llama-3-70b, replicas: 4, gpus_per_replica: 4, tokens_per_second: 2500}
tenants:
  - {name: acme, model: llama-3-70b, requests_per_second: 20}
faults:
  - {at: 30m, for: 20m, kind: thermal_throttle, node: gpu-node-00, gpu: 0}

Validated like SLO specs: every problem as ``file:line:col: field: message``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpuslo.collectors.backends.sim import PROFILES
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.resources import data_names, data_path
from gpuslo.foundation.specmodel import DNS_LABEL, FrozenStrict, check_duration
from gpuslo.foundation.yamlpos import load_single, problem_at

from .versions import CanaryVersion, version_problems

_NAME = DNS_LABEL
_MIG = re.compile(r"^([1-7])g\.\d+gb$")


def mig_compute(profile: str) -> int:
    """Compute slices (of 7) a MIG profile takes: ``3g.40gb`` -> 3."""
    match = _MIG.match(profile)
    return int(match.group(1)) if match else 0


FaultKind = Literal[
    "thermal_throttle",  # one GPU runs hot and clocks down
    "xid79",  # GPU fell off the bus: lost until the fault ends
    "xid48",  # double-bit ECC error: the replica restarts
    "xid94",  # contained ECC error: the replica restarts
    "nvlink_crc",  # CRC error storm on a GPU's NVLinks: slower collectives
    "ib_flap",  # an InfiniBand port on a node flaps: multi-node replicas stall
    "noisy_neighbour",  # another workload shares the GPU
    "traffic_spike",  # a tenant's traffic multiplies
    "prompt_shift",  # a tenant's prompts get longer (or shorter) by a factor: input drift
]


class NodeGroup(FrozenStrict):
    prefix: str = Field(pattern=_NAME)
    count: int = Field(gt=0, le=4096)
    gpus: int = Field(default=8, gt=0, le=16)
    profile: str = "H100"
    ib_ports: int = Field(default=1, ge=0, le=16)
    mig: list[str] = Field(
        default_factory=list,
        description="MIG instances every GPU of the group is split into, e.g. [3g.40gb, 3g.40gb]",
    )

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown GPU profile {value!r}; choose from {', '.join(PROFILES)}")
        return value

    @field_validator("mig")
    @classmethod
    def _mig(cls, value: list[str]) -> list[str]:
        for profile in value:
            if not _MIG.match(profile):
                raise ValueError(f"MIG profile {profile!r} is not like 1g.10gb or 3g.40gb")
        if sum(mig_compute(p) for p in value) > 7:
            raise ValueError("MIG instances use more than the GPU's 7 compute slices")
        return value


class Pool(FrozenStrict):
    """A GPU serving pool: replicas of one model, each on ``gpus_per_replica`` GPUs."""

    name: str = Field(pattern=_NAME)
    namespace: str = "inference"
    model: str
    replicas: int = Field(ge=0)
    gpus_per_replica: int = Field(default=1, gt=0)
    tokens_per_second: float = Field(gt=0, description="output tokens/s one replica serves")
    cold_start: str = "90s"
    ttft_base: float = Field(default=0.15, gt=0, description="seconds, unloaded")
    tpot_base: float = Field(default=0.02, gt=0, description="seconds per output token, unloaded")
    mig_profile: str | None = Field(
        default=None, description="run each replica on one MIG instance of this profile"
    )
    warm_replicas: int = Field(
        default=0, ge=0, description="replicas kept loaded and idle (paid for, not serving)"
    )
    warm_start: str = Field(default="10s", description="a warm replica serves this soon")

    _cold = field_validator("cold_start", "warm_start")(check_duration)

    @model_validator(mode="after")
    def _mig_replica(self) -> Pool:
        if self.mig_profile is not None and self.gpus_per_replica != 1:
            raise ValueError("a MIG replica runs on one instance: gpus_per_replica must be 1")
        return self


class Fallback(FrozenStrict):
    """A CPU pool serving a smaller model, slower, with its own capacity."""

    name: str = Field(pattern=_NAME)
    namespace: str = "inference"
    model: str
    replicas: int = Field(default=1, ge=0)
    tokens_per_second: float = Field(gt=0)
    cold_start: str = "30s"
    ttft_base: float = Field(default=0.6, gt=0)
    tpot_base: float = Field(default=0.08, gt=0)
    serves: str = Field(description="the GPU pool whose traffic it can take")
    vcpus_per_replica: int = Field(default=16, gt=0, description="CPU requested per replica")
    memory_gib_per_replica: float = Field(default=64, gt=0)

    _cold = field_validator("cold_start")(check_duration)


class Burst(FrozenStrict):
    at: str
    for_: str = Field(alias="for")
    factor: float = Field(gt=0)

    _at = field_validator("at", "for_")(check_duration)


class Tenant(FrozenStrict):
    name: str = Field(pattern=_NAME)
    model: str
    requests_per_second: float = Field(gt=0)
    diurnal: float = Field(default=0.3, ge=0, lt=1, description="amplitude of the daily curve")
    input_tokens: int = Field(default=512, gt=0)
    output_tokens: int = Field(default=256, gt=0)
    bursts: list[Burst] = Field(default_factory=list)
    weekend: float = Field(
        default=1.0, gt=0, description="traffic multiplier on days 5 and 6 (day 0: a Monday)"
    )


class Fault(FrozenStrict):
    at: str
    for_: str = Field(alias="for")
    kind: FaultKind
    node: str | None = None
    gpu: int | None = Field(default=None, ge=0)
    tenant: str | None = None
    factor: float = Field(default=3.0, gt=0, description="traffic_spike: traffic multiplier")

    _at = field_validator("at", "for_")(check_duration)

    @model_validator(mode="after")
    def _target(self) -> Fault:
        gpu_kinds = {"thermal_throttle", "xid79", "xid48", "xid94", "nvlink_crc", "noisy_neighbour"}
        if self.kind in gpu_kinds and (self.node is None or self.gpu is None):
            raise ValueError(f"{self.kind} needs node and gpu")
        if self.kind == "ib_flap" and self.node is None:
            raise ValueError("ib_flap needs node")
        if self.kind in ("traffic_spike", "prompt_shift") and self.tenant is None:
            raise ValueError(f"{self.kind} needs tenant")
        return self


class ScaleTo(FrozenStrict):
    pool: str
    replicas: int = Field(ge=0)


class Reclaim(FrozenStrict):
    pool: str
    replica: int = Field(ge=0, description="the replica's index (its pod POOL-N)")


class FallbackTo(FrozenStrict):
    pool: str = Field(description="the GPU pool whose traffic shifts")
    percent: float = Field(ge=0, le=100)


class ScriptedAction(FrozenStrict):
    """What an operator or the remediation hook would do, on the timeline (offline runs have
    no hook): scale a pool, or shift a share of a pool's traffic to the CPU fallback."""

    at: str
    scale: ScaleTo | None = None
    fallback: FallbackTo | None = None
    warm: ScaleTo | None = Field(default=None, description="keep this many replicas warm")
    promote_warm: ScaleTo | None = Field(
        default=None, description="serve this many replicas, promoting warm ones first"
    )
    reclaim: Reclaim | None = Field(
        default=None, description="a spot reclaim: the replica serves again after a cold start"
    )

    _at = field_validator("at")(check_duration)

    @model_validator(mode="after")
    def _one(self) -> ScriptedAction:
        given = (self.scale, self.fallback, self.warm, self.promote_warm, self.reclaim)
        if sum(x is not None for x in given) != 1:
            raise ValueError("give exactly one of scale, fallback, warm, promote_warm, reclaim")
        return self


class Scenario(FrozenStrict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["TwinScenario"]
    description: str = ""
    duration: str
    step: str = "15s"
    seed: int = 1
    nodes: list[NodeGroup] = Field(min_length=1)
    pools: list[Pool] = Field(min_length=1)
    fallback: Fallback | None = None
    tenants: list[Tenant] = Field(min_length=1)
    faults: list[Fault] = Field(default_factory=list)
    actions: list[ScriptedAction] = Field(default_factory=list)
    canaries: list[CanaryVersion] = Field(default_factory=list)  # simulator/versions.py

    _durations = field_validator("duration", "step")(check_duration)


def shipped_scenarios() -> list[str]:
    """The names of the scenarios shipped with gpuslo (``gpu-lost``, ``traffic-spike``, ...)."""
    return [
        name.removesuffix(".yaml")
        for name in data_names("gpuslo.simulator.scenarios", suffix=".yaml")
    ]


def resolve_scenario(name_or_path: str | Path) -> Path:
    """A scenario file: the path when it exists, else the shipped scenario of that name."""
    path = Path(name_or_path)
    if path.exists() or path.parent != Path("."):
        return path
    name = path.name.removesuffix(".yaml")
    if name in shipped_scenarios():
        return data_path("gpuslo.simulator.scenarios", f"{name}.yaml")
    return path  # loading it reports the missing file at its name


def load_scenario(path: str | Path) -> Scenario:
    """Validate a scenario file; SpecError lists every problem with its place."""
    scenario, node = load_single(path, Scenario, "scenario")
    problems: list[SpecProblem] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(problem_at(path, node, loc, message))

    gpus = sum(g.count * g.gpus for g in scenario.nodes if not g.mig)
    wanted = sum(
        (p.replicas + p.warm_replicas) * p.gpus_per_replica
        for p in scenario.pools
        if not p.mig_profile
    )
    if wanted > gpus:
        problem(("pools",), f"the pools need {wanted} whole GPUs; the nodes have {gpus}")
    pools = {p.name for p in scenario.pools}
    for i, a in enumerate(scenario.actions):
        if a.scale is not None and a.scale.pool not in pools | (
            {scenario.fallback.name} if scenario.fallback else set()
        ):
            problem(("actions", i, "scale", "pool"), f"no pool named {a.scale.pool}")
        for key, to in (("warm", a.warm), ("promote_warm", a.promote_warm), ("reclaim", a.reclaim)):
            if to is not None and to.pool not in pools:
                problem(("actions", i, key, "pool"), f"no GPU pool named {to.pool}")
        if a.fallback is not None:
            if scenario.fallback is None:
                problem(("actions", i, "fallback"), "the scenario has no fallback pool")
            elif a.fallback.pool != scenario.fallback.serves:
                problem(
                    ("actions", i, "fallback", "pool"),
                    f"the fallback serves {scenario.fallback.serves}, not {a.fallback.pool}",
                )
    for i, p in enumerate(scenario.pools):
        if p.mig_profile is None:
            continue
        have = sum(g.count * g.gpus * g.mig.count(p.mig_profile) for g in scenario.nodes)
        if p.replicas > have:
            problem(
                ("pools", i, "mig_profile"),
                f"{p.replicas} replicas need {p.replicas} {p.mig_profile} instances; the nodes "
                f"have {have}",
            )
    models = {p.model for p in scenario.pools}
    for i, t in enumerate(scenario.tenants):
        if t.model not in models:
            problem(("tenants", i, "model"), f"no pool serves model {t.model!r}")
    pool_names = {p.name for p in scenario.pools}
    if scenario.fallback is not None and scenario.fallback.serves not in pool_names:
        problem(("fallback", "serves"), f"no pool named {scenario.fallback.serves!r}")
    node_names = {n for g in scenario.nodes for n in node_names_of(g)}
    gpus_of = {n: g.gpus for g in scenario.nodes for n in node_names_of(g)}
    tenants = {t.name for t in scenario.tenants}
    for i, f in enumerate(scenario.faults):
        if f.node is not None and f.node not in node_names:
            problem(("faults", i, "node"), f"no node named {f.node!r}")
        elif f.gpu is not None and f.node is not None and f.gpu >= gpus_of[f.node]:
            problem(("faults", i, "gpu"), f"{f.node} has GPUs 0..{gpus_of[f.node] - 1}")
        if f.tenant is not None and f.tenant not in tenants:
            problem(("faults", i, "tenant"), f"no tenant named {f.tenant!r}")
    problems += version_problems(scenario, path, node)
    if problems:
        raise SpecError(problems)
    return scenario


def node_names_of(group: NodeGroup) -> list[str]:
    width = max(2, len(str(group.count - 1)))
    return [f"{group.prefix}-{i:0{width}d}" for i in range(group.count)]
