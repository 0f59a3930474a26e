"""The fleet model: pools of replicas on GPUs, tenants' traffic, a queueing latency model, GPU
power and temperature that follow load, and faults that take capacity away.

Deterministic for a scenario and seed. ``step(dt)`` advances the model and returns what
happened in that interval; counters accumulate in ``Totals`` for the exporters.

The latency model, per pool and step: demand (output tokens/s) over capacity (ready replicas
x tokens/s x each replica's health) is the load ρ. Below 1, the mean time to first token is
``ttft_base / (1 - ρ)``, capped at ρ = 0.95; above, the excess piles up as a backlog that
adds its drain time. A backlog longer than ``MAX_QUEUE_S`` of capacity is shed (rejected).
Latencies are exponentially distributed around their means, which fixes every bucket count.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from gpuslo.collectors.backends.sim import PROFILES, gpu_uuid
from gpuslo.foundation.durations import parse_duration

from .scenario import Fallback, Pool, Scenario, mig_compute, node_names_of
from .versions import Versions

MAX_QUEUE_S = 30.0
BASE_ERROR_SHARE = 0.0005
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
E2E_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
AMBIENT_C = 30.0
THROTTLE_C = 88.0
IB_BYTES_PER_S = 5e9  # collective traffic per InfiniBand port
CRC_ERRORS_PER_S = 40.0  # NVLink CRC flit errors a second on a link in a CRC storm
HEALTH = {  # capacity left on a GPU under each fault
    "thermal_throttle": 0.6,
    "nvlink_crc": 0.85,
    "noisy_neighbour": 0.7,
}


@dataclass(frozen=True)
class Incident:
    """One fault on the timeline, in model seconds: the ground truth of what broke."""

    kind: str
    start: float
    end: float
    node: str | None = None
    gpu: int | None = None
    tenant: str | None = None
    factor: float = 1.0

    def truth(self, offset: float = 0.0) -> dict[str, object]:
        """As written to incidents.json: times in Unix seconds, only the fields that apply."""
        out: dict[str, object] = {"kind": self.kind, "start": offset + self.start}
        out["end"] = offset + self.end
        for key in ("node", "gpu", "tenant"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class MigSlice:
    """One MIG instance of a GPU (``GPU_I_ID``, ``GPU_I_PROFILE``)."""

    index: int
    profile: str
    pool: str | None = None
    replica: int | None = None
    util: float = 0.0


@dataclass
class Gpu:
    node: str
    index: int
    profile: str
    uuid: str
    pool: str | None = None
    replica: int | None = None
    util: float = 0.0
    power: float = 0.0
    temperature: float = 35.0
    energy_j: float = 0.0
    throttle_s: float = 0.0
    xids: dict[int, int] = field(default_factory=dict)
    lost: bool = False
    faults: set[str] = field(default_factory=set)
    slices: list[MigSlice] = field(default_factory=list)
    crc_errors: float = 0.0  # NVLink CRC flit errors so far


@dataclass
class IbLink:
    """One InfiniBand port of a node (HCA ``mlx5_<port>``): down half the time while its node's
    link flaps, each step of the flap a link error recovery, collective traffic while up."""

    node: str
    port: int
    down: bool = False
    downed: int = 0  # times the link went down
    recoveries: float = 0.0
    sent_bytes: float = 0.0


@dataclass
class Replica:
    gpus: list[Gpu]
    ready_at: float  # model time it starts serving
    restarts_until: float = -1.0
    slice: MigSlice | None = None  # MIG replicas run on one instance of their GPU


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[float]
    total: float = 0.0
    sum: float = 0.0

    @classmethod
    def empty(cls, buckets: tuple[float, ...]) -> Histogram:
        return cls(buckets, [0.0] * len(buckets))

    def observe_exponential(self, n: float, mean: float) -> None:
        """Add ``n`` observations drawn from an exponential distribution with ``mean``."""
        if n <= 0:
            return
        for i, le in enumerate(self.buckets):
            self.counts[i] += n * (1.0 - math.exp(-le / mean))
        self.total += n
        self.sum += n * mean


@dataclass
class TenantTotals:
    """Counters of one (pool, tenant) pair, as the request exporters expose them."""

    model: str
    namespace: str
    outcomes: dict[str, float] = field(
        default_factory=lambda: {"success": 0.0, "error": 0.0, "rejected": 0.0}
    )
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    ttft: Histogram = field(default_factory=lambda: Histogram.empty(TTFT_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram.empty(TPOT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram.empty(E2E_BUCKETS))


@dataclass
class PoolState:
    spec: Pool | Fallback
    gpu_pool: bool
    desired: int
    replicas: list[Replica] = field(default_factory=list)
    backlog: float = 0.0  # output tokens waiting
    load: float = 0.0  # last step's ρ
    ttft_mean: float = 0.0
    healths: list[float] = field(default_factory=list)  # last step's, per replica
    in_flight: float = 0.0  # requests being served (Little's law: rate x mean duration)
    tpot_mean: float = 0.0  # last step's
    shed_share: float = 0.0  # last step's share of requests rejected
    demand: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # last step's
    # Warm replicas: placed and loaded, not serving, paid for; promoted in ``warm_start``.
    warm: list[Replica] = field(default_factory=list)
    warm_target: int = 0

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas if r.ready_at >= 0)


class Fleet:
    def __init__(self, scenario: Scenario, telemetry: bool = True) -> None:
        """``telemetry=False``: skip the GPU physics (power, temperature, CRC errors) and the
        fabric, which only the agents' series need (planning replays read request, latency
        and replica outcomes only)."""
        self.scenario = scenario
        self.telemetry = telemetry
        self.rng = random.Random(scenario.seed)
        self.t = 0.0
        self.gpus: list[Gpu] = []
        for group in scenario.nodes:
            for node in node_names_of(group):
                for i in range(group.gpus):
                    # The same UUIDs and GPU_I_IDs the agent's sim backend reports.
                    gpu = Gpu(node, i, group.profile, gpu_uuid(node, i))
                    gpu.slices = [MigSlice(n + 1, p) for n, p in enumerate(group.mig)]
                    self.gpus.append(gpu)
        self.pools: dict[str, PoolState] = {}
        for p in scenario.pools:
            self.pools[p.name] = PoolState(p, True, p.replicas)
        fb = scenario.fallback
        if fb is not None:
            self.pools[fb.name] = PoolState(fb, False, fb.replicas)
        # Share of each GPU pool's traffic sent to the fallback (0..100), as route weights.
        self.fallback_share: dict[str, float] = {p.name: 0.0 for p in scenario.pools}
        self.totals: dict[tuple[str, str], TenantTotals] = {}
        for state in self.pools.values():
            self._reconcile(state, initial=True)
            state.warm_target = getattr(state.spec, "warm_replicas", 0)
            self._reconcile_warm(state, initial=True)
        self.versions = Versions(self)  # canary model versions and their split (versions.py)
        self.incidents = [
            Incident(
                f.kind,
                parse_duration(f.at),
                parse_duration(f.at) + parse_duration(f.for_),
                f.node,
                f.gpu,
                f.tenant,
                f.factor,
            )
            for f in scenario.faults
        ]
        self._started: set[int] = set()
        self.last_dt = 0.0
        self._actions = sorted(
            ((parse_duration(a.at), n, a) for n, a in enumerate(scenario.actions)),
            key=lambda x: (x[0], x[1]),
        )
        self.links = [  # every node's InfiniBand ports, for the agents' fabric collectors
            IbLink(node, port)
            for group in scenario.nodes
            for node in node_names_of(group)
            for port in range(group.ib_ports)
        ]

    # ------------------------------------------------------------------ control (pool API)
    def set_replicas(self, pool: str, replicas: int) -> None:
        state = self.pools[pool]
        state.desired = max(0, replicas)
        self._reconcile(state)

    def set_warm(self, pool: str, replicas: int) -> None:
        """Keep ``replicas`` warm: new ones load the model (a cold start) before they are."""
        state = self.pools[pool]
        state.warm_target = max(0, replicas)
        self._reconcile_warm(state)

    def promote_warm(self, pool: str, replicas: int) -> int:
        """Make the pool serve ``replicas``: warm replicas first (serving after the pool's
        ``warm_start``; loaded ones before those still loading), cold ones behind them for
        the rest; the warm pool is refilled behind. Below the current size: scale down
        (replicas go back to the warm pool while it is short). Returns the warm replicas
        promoted. Absolute, as every pool API call: repeating it changes nothing."""
        state = self.pools[pool]
        target = max(0, replicas)
        promoted = 0
        if target > state.desired and state.warm:
            state.warm.sort(key=lambda r: r.ready_at)
            quick = parse_duration(getattr(state.spec, "warm_start", "10s"))
            while state.warm and state.desired < target:
                replica = state.warm.pop(0)
                replica.ready_at = max(replica.ready_at, self.t + quick)
                self._hold(replica, state.spec.name, len(state.replicas))
                state.replicas.append(replica)
                state.desired += 1
                promoted += 1
        self.set_replicas(pool, target)
        self._reconcile_warm(state)
        return promoted

    def interrupt(self, pool: str, index: int) -> None:
        """A spot reclaim of one replica: it is replaced, serving again after a cold start
        (and paid for meanwhile)."""
        state = self.pools[pool]
        if index < len(state.replicas):
            cold = parse_duration(state.spec.cold_start)
            state.replicas[index].restarts_until = self.t + cold

    @staticmethod
    def _hold(replica: Replica, pool: str | None, index: int | None) -> None:
        for gpu in replica.gpus:
            gpu.pool, gpu.replica = pool, index
            if index is None:
                gpu.util = 0.0

    def _reconcile_warm(self, state: PoolState, initial: bool = False) -> None:
        if not state.gpu_pool or getattr(state.spec, "mig_profile", None) is not None:
            return  # warm pools of whole-GPU replicas only
        while len(state.warm) > state.warm_target:
            self._hold(state.warm.pop(), None, None)
        cold = 0.0 if initial else parse_duration(state.spec.cold_start)
        while len(state.warm) < state.warm_target:
            gpus = self._place(state.spec.gpus_per_replica)  # type: ignore[union-attr]
            if not gpus:
                break  # no free GPUs: the warm pool stays short
            replica = Replica(gpus, self.t + cold)
            self._hold(replica, state.spec.name, None)
            state.warm.append(replica)

    def set_fallback_share(self, pool: str, percent: float) -> None:
        self.fallback_share[pool] = min(100.0, max(0.0, percent))

    def _reconcile(self, state: PoolState, initial: bool = False) -> None:
        """Start or stop replicas to match ``desired``; new ones serve after their cold start."""
        cold = 0.0 if initial else parse_duration(state.spec.cold_start)
        while len(state.replicas) > state.desired:
            replica = state.replicas.pop()
            loading = [r for r in state.warm if r.ready_at > self.t]
            if (
                replica.slice is None
                and state.gpu_pool
                and state.warm_target > 0
                and (len(state.warm) < state.warm_target or loading)
                and not any(g.lost for g in replica.gpus)
            ):
                if len(state.warm) >= state.warm_target:  # a loaded one beats one still loading
                    late = max(loading, key=lambda r: r.ready_at)
                    state.warm.remove(late)
                    self._hold(late, None, None)
                self._hold(replica, state.spec.name, None)  # back to the warm pool, loaded
                replica.ready_at = min(replica.ready_at, self.t)
                state.warm.append(replica)
                continue
            if replica.slice is not None:
                replica.slice.pool = replica.slice.replica = None
                replica.slice.util = 0.0
            else:
                for gpu in replica.gpus:
                    gpu.pool = gpu.replica = None
        mig = getattr(state.spec, "mig_profile", None)
        while len(state.replicas) < state.desired:
            gpus: list[Gpu] = []
            slot: MigSlice | None = None
            if state.gpu_pool and mig is not None:
                found = self._place_slice(mig)
                if found is None:
                    break  # no free instance: the replica stays pending
                gpu, slot = found
                gpus = [gpu]
                slot.pool, slot.replica = state.spec.name, len(state.replicas)
            elif state.gpu_pool:
                gpus = self._place(state.spec.gpus_per_replica)  # type: ignore[union-attr]
                if not gpus:
                    break  # no free GPUs: the replica stays pending
                for gpu in gpus:
                    gpu.pool, gpu.replica = state.spec.name, len(state.replicas)
            state.replicas.append(Replica(gpus, self.t + cold, slice=slot))

    def _place(self, n: int) -> list[Gpu]:
        """``n`` free GPUs on the node with the most free (spreading replicas, as a scheduler
        would), else across nodes (a sharded model)."""
        free = [g for g in self.gpus if g.pool is None and not g.lost and not g.slices]
        by_node: dict[str, list[Gpu]] = {}
        for g in free:
            by_node.setdefault(g.node, []).append(g)
        fitting = [gpus for gpus in by_node.values() if len(gpus) >= n]
        if fitting:
            return max(fitting, key=len)[:n]
        return free[:n] if len(free) >= n else []

    def _place_slice(self, profile: str) -> tuple[Gpu, MigSlice] | None:
        """A free MIG instance of ``profile``, on the node with the most of them free."""
        free: dict[str, list[tuple[Gpu, MigSlice]]] = {}
        for gpu in self.gpus:
            if gpu.lost:
                continue
            for slot in gpu.slices:
                if slot.profile == profile and slot.pool is None:
                    free.setdefault(gpu.node, []).append((gpu, slot))
        if not free:
            return None
        return max(free.values(), key=len)[0]

    # ------------------------------------------------------------------ faults
    def _active(self, kind: str) -> list[Incident]:
        return [i for i in self.incidents if i.kind == kind and i.start <= self.t < i.end]

    def _apply_faults(self) -> None:
        for gpu in self.gpus:
            gpu.faults.clear()
            gpu.lost = False
        for n, inc in enumerate(self.incidents):
            if not inc.start <= self.t < inc.end:
                continue
            gpus = [g for g in self.gpus if g.node == inc.node]
            if inc.gpu is not None:
                gpus = [g for g in gpus if g.index == inc.gpu]
            first = n not in self._started
            self._started.add(n)
            for gpu in gpus:
                if inc.kind == "xid79":
                    gpu.lost = True
                    if first:
                        gpu.xids[79] = gpu.xids.get(79, 0) + 1
                elif inc.kind in ("xid48", "xid94"):
                    if first:
                        code = int(inc.kind[3:])
                        gpu.xids[code] = gpu.xids.get(code, 0) + 1
                        self._restart_replica_of(gpu)
                else:
                    gpu.faults.add(inc.kind)

    def _restart_replica_of(self, gpu: Gpu) -> None:
        if gpu.pool is None or gpu.replica is None:
            return
        state = self.pools[gpu.pool]
        if gpu.replica < len(state.replicas):
            replica = state.replicas[gpu.replica]
            replica.restarts_until = self.t + parse_duration(state.spec.cold_start)

    def _health(self, replica: Replica) -> float:
        if self.t < replica.ready_at or self.t < replica.restarts_until:
            return 0.0
        health = 1.0
        nodes = {g.node for g in replica.gpus}
        for gpu in replica.gpus:
            if gpu.lost:
                return 0.0
            for f in gpu.faults:
                if f == "nvlink_crc" and len(replica.gpus) == 1:
                    continue  # no collectives on a single GPU
                if f == "noisy_neighbour" and replica.slice is not None:
                    continue  # MIG isolates instances: a neighbour cannot take our share
                health = min(health, HEALTH.get(f, 1.0))
        if len(nodes) > 1 and any(inc.node in nodes for inc in self._active("ib_flap")):
            health = min(health, 0.2)  # a sharded model waits on the flapping link
        return health

    # ------------------------------------------------------------------ traffic
    def tenant_rps(self, tenant_index: int) -> float:
        tenant = self.scenario.tenants[tenant_index]
        day = 2 * math.pi * (self.t % 86400) / 86400
        rps = tenant.requests_per_second * (1 + tenant.diurnal * math.sin(day - math.pi / 2))
        if tenant.weekend != 1.0 and (self.t // 86400) % 7 >= 5:  # day 0 is a Monday
            rps *= tenant.weekend
        for b in tenant.bursts:
            if parse_duration(b.at) <= self.t < parse_duration(b.at) + parse_duration(b.for_):
                rps *= b.factor
        for inc in self._active("traffic_spike"):
            if inc.tenant == tenant.name:
                rps *= inc.factor
        return rps * (1 + 0.04 * (self.rng.random() - 0.5))

    def tenant_input_tokens(self, tenant_index: int) -> float:
        """Mean prompt length of a tenant now (a prompt_shift fault scales it)."""
        tenant = self.scenario.tenants[tenant_index]
        tokens = float(tenant.input_tokens)
        for inc in self._active("prompt_shift"):
            if inc.tenant == tenant.name:
                tokens *= inc.factor
        return tokens

    def sample_requests(self, n: int) -> list[tuple[str, str, float, float]]:
        """``n`` requests drawn from the current traffic mix: (model, tenant, prompt tokens,
        output tokens), lengths lognormal around each tenant's means (for drift jobs)."""
        tenants = self.scenario.tenants
        weights = [self.tenant_rps(i) for i in range(len(tenants))]
        out: list[tuple[str, str, float, float]] = []
        for _ in range(n):
            i = self.rng.choices(range(len(tenants)), weights)[0]
            t = tenants[i]
            prompt = self.rng.lognormvariate(math.log(self.tenant_input_tokens(i)), 0.35)
            output = self.rng.lognormvariate(math.log(t.output_tokens), 0.35)
            out.append((t.model, t.name, float(round(prompt)), float(round(output))))
        return out

    # ------------------------------------------------------------------ the step
    def step(self, dt: float) -> None:
        self.t += dt
        self.last_dt = dt
        while self._actions and self._actions[0][0] <= self.t:
            _, _, action = self._actions.pop(0)
            if action.scale is not None:
                self.set_replicas(action.scale.pool, action.scale.replicas)
            elif action.warm is not None:
                self.set_warm(action.warm.pool, action.warm.replicas)
            elif action.promote_warm is not None:
                self.promote_warm(action.promote_warm.pool, action.promote_warm.replicas)
            elif action.reclaim is not None:
                self.interrupt(action.reclaim.pool, action.reclaim.replica)
            elif action.fallback is not None:
                self.set_fallback_share(action.fallback.pool, action.fallback.percent)
        self._apply_faults()
        # Demand per pool and tenant (requests/s), after the fallback share.
        demand: dict[str, dict[str, tuple[float, float, int]]] = {p: {} for p in self.pools}
        fallback = self.scenario.fallback
        for i, tenant in enumerate(self.scenario.tenants):
            rps = self.tenant_rps(i)
            pool = next(p for p in self.scenario.pools if p.model == tenant.model)
            share = self.fallback_share.get(pool.name, 0.0) / 100 if fallback else 0.0
            if fallback is not None and fallback.serves == pool.name and share > 0:
                demand[fallback.name][tenant.name] = (
                    rps * share,
                    self.tenant_input_tokens(i),
                    tenant.output_tokens,
                )
            demand[pool.name][tenant.name] = (
                rps * (1 - share),
                self.tenant_input_tokens(i),
                tenant.output_tokens,
            )
        self.versions.split(demand)
        for name, state in self.pools.items():
            self._serve(state, demand[name], dt)
        if self.telemetry:
            self._gpu_physics(dt)
            self._fabric(dt)

    def _fabric(self, dt: float) -> None:
        flapping = {inc.node for inc in self._active("ib_flap")}
        for link in self.links:
            down = link.node in flapping and int(self.t // 30) % 2 == 0
            if down and not link.down:
                link.downed += 1
            link.down = down
            if link.node in flapping:
                link.recoveries += 1.0
            if not down:
                link.sent_bytes += IB_BYTES_PER_S * dt

    def _serve(
        self, state: PoolState, demand: dict[str, tuple[float, float, int]], dt: float
    ) -> None:
        spec = state.spec
        healths = [self._health(r) for r in state.replicas]
        capacity = spec.tokens_per_second * sum(healths)
        want = sum(rps * out for rps, _, out in demand.values())  # output tokens/s
        state.backlog = max(0.0, state.backlog + (want - capacity) * dt)
        shed_share = 0.0
        limit = capacity * MAX_QUEUE_S
        if state.backlog > limit:
            shed = state.backlog - limit
            state.backlog = limit
            shed_share = min(1.0, shed / max(want * dt, 1e-9))
        rho = want / capacity if capacity > 0 else math.inf
        state.load = rho
        wait = state.backlog / capacity if capacity > 0 else MAX_QUEUE_S
        ttft = spec.ttft_base / (1 - min(rho, 0.95)) + wait
        serving = [h for h in healths if h > 0]
        slowest = min(serving) if serving else 1.0
        tpot = spec.tpot_base / slowest * (1 + 0.3 * min(rho, 1.0))
        state.ttft_mean = ttft
        state.tpot_mean = tpot
        state.shed_share = shed_share if capacity > 0 else 1.0
        state.demand = demand
        state.healths = healths
        state.in_flight = 0.0
        drawn = self.versions.record(state, demand, dt, ttft, tpot, shed_share, capacity)
        for tenant, (rps, tokens_in, tokens_out) in ({} if drawn else demand).items():
            totals = self.totals.get((spec.name, tenant))
            if totals is None:
                totals = self.totals[(spec.name, tenant)] = TenantTotals(
                    model=spec.model, namespace=spec.namespace
                )
            n = rps * dt
            rejected = n * shed_share if capacity > 0 else n
            errors = (n - rejected) * BASE_ERROR_SHARE
            ok = n - rejected - errors
            totals.outcomes["rejected"] += rejected
            totals.outcomes["error"] += errors
            totals.outcomes["success"] += ok
            served = ok + errors
            if dt > 0:
                state.in_flight += served / dt * (ttft + tpot * tokens_out)
            totals.input_tokens += served * tokens_in
            totals.output_tokens += ok * tokens_out
            totals.ttft.observe_exponential(served, ttft)
            totals.tpot.observe_exponential(ok, tpot)
            totals.e2e.observe_exponential(ok, ttft + tpot * tokens_out)
        # GPU utilisation of each replica follows the pool's load.
        for replica, health in zip(state.replicas, healths, strict=True):
            util = 0.0 if health == 0 else min(1.0, rho) * 0.92 + 0.03
            if replica.slice is not None:
                replica.slice.util = util
                continue
            for gpu in replica.gpus:
                gpu.util = util

    def _gpu_physics(self, dt: float) -> None:
        for gpu in self.gpus:
            p = PROFILES[gpu.profile]
            if "nvlink_crc" in gpu.faults:  # on its first link
                gpu.crc_errors += CRC_ERRORS_PER_S * dt
            if gpu.slices:  # a MIG GPU is as busy as its instances, by compute share
                gpu.util = sum(mig_compute(s.profile) / 7 * s.util for s in gpu.slices)
            elif gpu.pool is None:
                gpu.util = 0.0
            if "noisy_neighbour" in gpu.faults:
                gpu.util = min(1.0, gpu.util + 0.3)
            if gpu.lost:
                gpu.util = 0.0
                gpu.power = 0.0
                continue
            throttled = "thermal_throttle" in gpu.faults
            clock = 0.6 if throttled else 1.0
            gpu.power = p.idle_watts + (p.tdp_watts - p.idle_watts) * gpu.util * clock
            target = AMBIENT_C + 80.0 * gpu.power / p.tdp_watts
            if throttled:  # cooling failed: it sits at the slowdown temperature
                target = max(target, THROTTLE_C)
            gpu.temperature += (target - gpu.temperature) * (1.0 - math.exp(-dt / 30.0))
            gpu.energy_j += gpu.power * dt
            if throttled:
                gpu.throttle_s += dt
