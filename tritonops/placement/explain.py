"""The solver's outcome in words and figures: each replica's reason, each eviction's, each miss's."""

from __future__ import annotations

from collections.abc import Sequence

from tritonops.placement import core
from tritonops.placement.region import (
    Eviction,
    Missing,
    ModelInput,
    ModelPlacement,
    RegionPlacement,
    Replica,
    ReplicaDecision,
    ServerInput,
    ServerUse,
)
from tritonops.placement.server import PlacementPolicy

_HOW = {core.PIN_KEEP: ReplicaDecision.pinned, core.PIN_LOAD: ReplicaDecision.pinned, core.KEEP: ReplicaDecision.keep,
        core.LOAD: ReplicaDecision.load, core.SURPLUS: ReplicaDecision.surplus}  # fmt: skip


class _Words:
    def __init__(self, models: Sequence[ModelInput], policy: PlacementPolicy, p: core.Problem, sol: core.Solution):
        self.models, self.policy, self.p, self.sol = models, policy, p, sol
        placed = [sol.priority[m] * (1.0 + policy.hysteresis if how == core.KEEP else 1.0)
                  for (m, _), how in sol.replicas.items() if how in (core.KEEP, core.LOAD)]  # fmt: skip
        self.cut = min(placed, default=0.0)  # the lowest effective priority that holds memory

    def figures(self, i: int) -> str:
        m = self.models[i]
        return (f"priority {self.sol.priority[i]:.4g} s/GiB = demand {m.demand:g} x ({self.policy.interval_s:g} s"
                f" + {m.load_s:g} s load) / footprint")  # fmt: skip

    def per_replica(self, i: int) -> str:
        m = self.models[i]
        if m.served_per_replica is None:
            return ""
        return f"; one replica serves {m.served_per_replica:g} per window ({m.served_source or 'given'})"

    def replica(self, i: int, k: int, how: int, server: str) -> str:
        m = self.models[i]
        if how == core.PIN_KEEP:
            return "pinned: never evicted"
        if how == core.PIN_LOAD:
            return "pinned: always loaded"
        if how == core.SURPLUS:
            if m.demand <= 0:
                return "no demand in the window; kept while nothing needs its memory"
            return f"{self.figures(i)}; a replica no longer needed, kept while nothing needs its memory"
        tier = self._tier(i, k)
        if how == core.KEEP:
            return f"{self.figures(i)}; {tier}; kept (x{1 + self.policy.hysteresis:g} hysteresis for a loaded model)"
        return f"{self.figures(i)}; {tier}; among the highest that fit the region, on {server!r} by rendezvous rank"

    def _tier(self, i: int, k: int) -> str:
        m = self.models[i]
        if k <= 1:
            return "replica 1 (every model with demand gets one before any gets a second)"
        if k <= m.min_replicas:
            return f"replica {k} of the rule's min {m.min_replicas}"
        return f"replica {k}: demand {m.demand:g} over {k - 1} replica(s){self.per_replica(i)}"

    def evicted(self, i: int, cause: int) -> str:
        if cause == core.NOT_ALLOWED:
            return "this server may no longer hold it"
        if cause == core.OVER_BUDGET:
            return f"{self.figures(i)}: the server holds more than its room; lowest priority evicted first"
        who = "a pinned model" if cause == core.PINNED else f"model {self.models[cause].name!r}"
        return (f"{self.figures(i)} x{1 + self.policy.hysteresis:g} hysteresis is below the cut line {self.cut:.4g}:"
                f" evicted to make room for {who}")  # fmt: skip

    def missing(self, i: int, k: int, why: str) -> str:
        m = self.models[i]
        if why == "servers":
            return f"replica {k}: no other server of the region may hold it"
        if why == "cap":
            return (f"{self.figures(i)}; replica {k} would load, but the cap of {self.policy.max_loads} loads per run"
                    " is reached on every server that may hold it")  # fmt: skip
        if m.demand <= 0 and k > m.min_replicas:
            return "no demand in the window: not loaded"
        return f"{self.figures(i)}; replica {k} is below the cut line {self.cut:.4g} or does not fit the room left"


def explain(
    servers: Sequence[ServerInput], models: Sequence[ModelInput], policy: PlacementPolicy,
    p: core.Problem, sol: core.Solution,
) -> RegionPlacement:  # fmt: skip
    w = _Words(models, policy, p, sol)
    names = [s.name for s in servers]
    reps: dict[int, list[Replica]] = {}
    nth: dict[int, int] = {}
    for (i, s), how in sorted(sol.replicas.items(), key=lambda x: (x[1] not in (core.KEEP, core.LOAD), x[0])):
        k = nth[i] = nth.get(i, 0) + 1
        m = models[i]
        reps.setdefault(i, []).append(Replica(
            names[s], _HOW[how], w.replica(i, k, how, names[s]), m.version_on.get(names[s], m.version),
            m.footprint_on.get(names[s], m.footprint_bytes)))  # fmt: skip
    ev: dict[int, list[Eviction]] = {}
    for (i, s), cause in sorted(sol.evicted.items()):
        ev.setdefault(i, []).append(Eviction(names[s], w.evicted(i, cause),
                                             models[i].footprint_on.get(names[s], models[i].footprint_bytes)))
    out = {}
    for i, m in sorted(enumerate(models), key=lambda x: x[1].name):
        wanted = int(p.allowed[i].sum()) if m.pinned and p.allowed is not None else (
            len(servers) if m.pinned else int(p.want[i]))  # fmt: skip
        out[m.name] = ModelPlacement(
            m.name, m.pinned, m.demand, m.footprint_bytes, m.footprint_source, m.load_s, m.load_source,
            float(sol.priority[i]), m.served_per_replica, m.served_source, wanted,
            tuple(sorted(reps.get(i, []), key=lambda r: r.server)), tuple(ev.get(i, [])),
            tuple(Missing(k, why, w.missing(i, k, why)) for k, why in sol.unplaced.get(i, [])),
        )  # fmt: skip
    loads = [0] * len(servers)
    evs = [0] * len(servers)
    for (_, x), how in sol.replicas.items():
        loads[x] += how in (core.LOAD, core.PIN_LOAD)
    for _, x in sol.evicted:
        evs[x] += 1
    use = {srv.name: ServerUse(int(p.room_bytes[j]), int(sol.used_bytes[j]), loads[j], evs[j])
           for j, srv in enumerate(servers)}  # fmt: skip
    return RegionPlacement(out, dict(sorted(use.items())))
