"""One placement for a whole region: for each model, the servers that hold it and why.

:func:`place_region` is a pure function (no I/O, no clock) of

- every server of the region (:class:`ServerInput`): the memory placed models may use there, the
  models it may hold (its allow list), its cap on loads per run;
- every model (:class:`ModelInput`): footprint (per server where a canary version differs), load
  time, demand in the window, pinned or on-demand, the servers holding it now, what one replica
  serves (measured from Triton's statistics or set per model) and its ``replicas`` rule;
- the policy (:class:`tritonops.placement.PlacementPolicy`: interval, hysteresis, cap on loads).

It returns a :class:`RegionPlacement`: model -> replicas (server, decision, reason), the
evictions that make room, and the replicas wanted that could not be placed (no room, the cap on
loads, no server allowed). ``reconcile`` plans each server's loads and evictions from it; the
capacity planner replays traces through the same solver (:mod:`tritonops.placement.core`); routes
are built from :meth:`RegionPlacement.assignment` (model -> servers).

Rules, in order (details in :mod:`tritonops.placement.core`): pinned models on every server
allowed to hold them; every model with demand gets one replica while the region has room, before
any model gets a second; then the replicas a ``min`` rule asks for; then replicas by demand: a
model whose demand per replica is above what one replica serves gets another, on a different
server, up to its ``max``. Where a replica goes: a server already holding it, else the highest
rendezvous-hash rank among the servers with room, so a small change in demand moves few models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from tritonops.placement import core
from tritonops.placement.server import PlacementPolicy


class ReplicaDecision(str, Enum):
    pinned = "pinned"  # a pinned model: kept or loaded on every server allowed to hold it
    keep = "keep"  # loaded there, stays
    load = "load"  # load it there this run
    surplus = "surplus"  # loaded there, no longer needed, kept because nothing needs its memory


@dataclass(frozen=True)
class ServerInput:
    """A server of the region. ``room_bytes``: what placed models may use together (its budget or
    probed free memory, headroom off, plus what the models placed here hold now; the lowest device's
    figure on a multi-GPU server). ``allowed``: the models it may hold (None: every model).
    ``max_loads``: loads per run (None: the policy's)."""

    name: str
    room_bytes: int
    allowed: frozenset[str] | None = None
    max_loads: int | None = None


@dataclass(frozen=True)
class ModelInput:
    """A model of the region. ``demand``: requests in the demand window. ``served_per_replica``:
    requests per window one replica serves (None: one replica serves any demand).
    ``footprint_on`` / ``version_on``: per server, where it differs (a canary version)."""

    name: str
    footprint_bytes: int
    load_s: float
    demand: float
    pinned: bool = False
    loaded_on: frozenset[str] = frozenset()
    served_per_replica: float | None = None
    served_source: str = ""  # "measured" (Triton's statistics) | "config" (models.<m>.served_rps) | ""
    min_replicas: int = 0
    max_replicas: int | None = None
    version: int | None = None
    footprint_on: Mapping[str, int] = field(default_factory=dict)
    version_on: Mapping[str, int] = field(default_factory=dict)
    footprint_source: str = "measured"  # or "estimate" (a size-based first guess)
    load_source: str = "measured"


@dataclass(frozen=True)
class Replica:
    server: str
    decision: ReplicaDecision
    reason: str
    version: int | None
    footprint_bytes: int


@dataclass(frozen=True)
class Eviction:
    server: str
    reason: str
    footprint_bytes: int


@dataclass(frozen=True)
class Missing:
    """A replica wanted and not placed this run: ``why`` is ``room``, ``cap`` or ``servers``."""

    replica: int
    why: str
    reason: str


@dataclass(frozen=True)
class ModelPlacement:
    """One model's outcome and the figures behind it."""

    model: str
    pinned: bool
    demand: float
    footprint_bytes: int
    footprint_source: str
    load_s: float
    load_source: str
    priority: float  # seconds of waiting saved per GiB held, per window (first replica)
    served_per_replica: float | None
    served_source: str
    wanted: int  # replicas wanted (pinned: every allowed server)
    replicas: tuple[Replica, ...]  # sorted by server
    evicted: tuple[Eviction, ...] = ()
    missing: tuple[Missing, ...] = ()

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(r.server for r in self.replicas)

    @property
    def data(self) -> dict[str, Any]:
        return {
            "pinned": self.pinned, "demand": self.demand, "footprint_bytes": self.footprint_bytes,
            "footprint_source": self.footprint_source, "load_s": round(self.load_s, 3),
            "load_source": self.load_source, "priority": round(self.priority, 6),
            "served_per_replica": None if self.served_per_replica is None else round(self.served_per_replica, 3),
            "served_source": self.served_source, "wanted": self.wanted,
            "servers": {r.server: {"decision": r.decision.value, "version": r.version,
                                   "footprint_bytes": r.footprint_bytes, "reason": r.reason} for r in self.replicas},
            "evicted": {e.server: e.reason for e in self.evicted},
            "missing": [{"replica": x.replica, "why": x.why, "reason": x.reason} for x in self.missing],
        }  # fmt: skip


@dataclass(frozen=True)
class ServerUse:
    room_bytes: int
    used_bytes: int  # after the run
    loads: int
    evictions: int


@dataclass(frozen=True)
class RegionPlacement:
    """The region's placement: ``models`` by name (sorted), ``servers`` by name (sorted)."""

    models: Mapping[str, ModelPlacement]
    servers: Mapping[str, ServerUse]

    def servers_of(self, model: str) -> tuple[str, ...]:
        mp = self.models.get(model)
        return mp.servers if mp else ()

    def assignment(self) -> dict[str, tuple[str, ...]]:
        """Model -> the servers that hold it after this run (models placed nowhere left out)."""
        return {m: mp.servers for m, mp in self.models.items() if mp.replicas}

    def on(self, server: str) -> dict[str, Replica]:
        return {m: r for m, mp in self.models.items() for r in mp.replicas if r.server == server}

    @property
    def loads(self) -> int:
        return sum(s.loads for s in self.servers.values())

    @property
    def evictions(self) -> int:
        return sum(s.evictions for s in self.servers.values())

    @property
    def data(self) -> dict[str, Any]:
        return {
            "distinct_models": sum(1 for mp in self.models.values() if mp.replicas),
            "replicas": sum(len(mp.replicas) for mp in self.models.values()),
            "loads": self.loads,
            "evictions": self.evictions,
            "servers": {n: {"room_bytes": min(u.room_bytes, core.UNKNOWN_ROOM), "used_bytes": u.used_bytes,
                            "loads": u.loads, "evictions": u.evictions} for n, u in self.servers.items()},
            "models": {m: mp.data for m, mp in self.models.items() if mp.replicas or mp.evicted or mp.missing},
        }  # fmt: skip


def replicas_wanted(
    demand: float, served_per_replica: float | None, min_replicas: int = 0, max_replicas: int | None = None
) -> int:
    """Replicas demand asks for (one with any demand; more where one replica cannot serve it all),
    within the model's ``min`` / ``max`` rule."""
    base = 0 if demand <= 0 else 1
    if base and served_per_replica is not None and served_per_replica > 0:
        base = max(1, math.ceil(demand / served_per_replica - 1e-9))
    n = max(base, min_replicas)
    return n if max_replicas is None else min(n, max(max_replicas, min_replicas))


def place_region(
    servers: Sequence[ServerInput], models: Sequence[ModelInput], policy: PlacementPolicy, *, evict: bool = True
) -> RegionPlacement:
    """Place every model of the region (see the module docstring). ``evict=False`` (demand
    incomplete): loaded replicas all stay; only free room is filled."""
    snames = [s.name for s in servers]
    mnames = [m.name for m in models]
    if len(set(snames)) != len(snames) or len(set(mnames)) != len(mnames):
        raise ValueError("region placement: a server or model is listed twice")
    p = _problem(servers, models, policy, evict)
    sol = core.solve(p)
    from tritonops.placement.explain import explain

    return explain(servers, models, policy, p, sol)


def _problem(
    servers: Sequence[ServerInput], models: Sequence[ModelInput], policy: PlacementPolicy, evict: bool
) -> core.Problem:
    sidx = {s.name: i for i, s in enumerate(servers)}
    ranks = {n: i for i, n in enumerate(sorted(m.name for m in models))}
    cap = policy.max_loads
    allowed = None
    if any(s.allowed is not None for s in servers):
        allowed = np.array([[s.allowed is None or m.name in s.allowed for s in servers] for m in models], bool)
        allowed = allowed.reshape(len(models), len(servers))
    size_on: dict[tuple[int, int], int] = {}
    for i, m in enumerate(models):
        for s, b in m.footprint_on.items():
            if s in sidx and b != m.footprint_bytes:
                size_on[(i, sidx[s])] = int(b)
    return core.Problem(
        size=np.array([m.footprint_bytes for m in models], np.int64),
        load_s=np.array([m.load_s for m in models], float),
        demand=np.array([max(0.0, m.demand) for m in models], float),
        want=np.array([replicas_wanted(m.demand, m.served_per_replica, m.min_replicas, m.max_replicas)
                       for m in models], np.int64),  # fmt: skip
        min_replicas=np.array([m.min_replicas for m in models], np.int64),
        pinned=np.array([m.pinned for m in models], bool),
        name_rank=np.array([ranks[m.name] for m in models], np.int64),
        model_key=core.stable_keys([m.name for m in models]),
        room_bytes=np.array([max(0, min(s.room_bytes, core.UNKNOWN_ROOM)) for s in servers], np.int64),
        loads_left=np.array([_cap(s.max_loads if s.max_loads is not None else cap) for s in servers], np.int64),
        server_key=core.stable_keys([s.name for s in servers]),
        loaded=[(i, sidx[s]) for i, m in enumerate(models) for s in sorted(m.loaded_on) if s in sidx],
        allowed=allowed,
        size_on=size_on,
        interval_s=policy.interval_s,
        hysteresis=policy.hysteresis,
        evict=evict,
    )


def _cap(n: int | None) -> int:
    return core.NO_CAP if n is None else max(0, int(n))
