"""Replay a trace against a fleet, through the region placement ``reconcile`` plans with.

Model of the fleet: ``servers`` identical servers, each with ``memory_bytes`` for on-demand models,
placed as one region: every ``interval_s`` (the cron or loop tick) the region's placement
(:func:`tritonops.placement.core.solve`, the solver behind ``placement.place_region``, which
``reconcile`` plans every server from) runs on the demand seen so far: requests per model, decayed
with a half-life of ``window_s``. Every model with demand gets one replica before any model gets a
second, on the server with the most free room (ties by rendezvous hash); at most ``max_loads`` loads
per server per run. Evictions take effect at the tick; loads one after
another per server, each taking its load time. A request is warm when its model is available at its
arrival; a cold one waits until its model next becomes available (the rest of the interval plus the
load time, or more), or is never served within the trace. Memory, not compute, is modelled: one
replica is assumed to serve its model's whole demand, so the replay places one replica per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonops.capacity.trace import Trace
from tritonops.placement import PlacementPolicy, core

PLACEMENT = (
    "region placement: all servers of the fleet as one region, placed by tritonops.placement.place_region's "
    "solver (the function reconcile plans with): one replica per model with demand, on the server with the "
    "most free room (ties by rendezvous hash)"
)


@dataclass(frozen=True)
class Fleet:
    servers: int
    memory_bytes: int  # per server, for the models placed (headroom already taken off)
    price_per_hour: float  # per server

    @property
    def cost_per_hour(self) -> float:
        return self.servers * self.price_per_hour


@dataclass(frozen=True)
class Models:
    """Per model (aligned with ``Trace.models``): footprint and load time, and where they came from."""

    footprint_bytes: npt.NDArray[np.int64]
    load_s: npt.NDArray[np.float64]
    footprint_source: tuple[str, ...]  # "measured" | "estimate" | "given"
    load_source: tuple[str, ...]


@dataclass(frozen=True)
class Replay:
    servers: int
    cost_per_hour: float
    warm_share: float
    cold_wait_p50_s: float | None  # None when there is no cold request
    cold_wait_p99_s: float | None  # None when more than 1% of cold requests are never served
    unserved_share: float  # requests whose model never became available after them, within the trace
    loads_per_hour: float
    memory_use_mean: float  # share of the fleet's memory held by loaded models, averaged over ticks
    memory_use_max: float
    models_loaded_mean: float

    @property
    def data(self) -> dict[str, Any]:
        r = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}


def _tick_counts(trace: Trace, t0: float, interval_s: float, ticks: int) -> npt.NDArray[np.float64]:
    """Requests per (interval, model): row k counts requests in [t0 + k*interval, t0 + (k+1)*interval)."""
    k = np.minimum(((trace.times_s - t0) // interval_s).astype(np.int64), ticks - 1)
    m = len(trace.models)
    return np.bincount(k * m + trace.model_idx, minlength=ticks * m).reshape(ticks, m).astype(float)


class _Region:
    """The fleet's placement state between ticks: which server holds each model (-1: none)."""

    def __init__(self, models: Models, fleet: Fleet, policy: PlacementPolicy) -> None:
        m, n = len(models.footprint_bytes), fleet.servers
        self.where = np.full(m, -1, np.int64)
        cap = core.NO_CAP if policy.max_loads is None else policy.max_loads
        self.template = core.Problem(
            size=models.footprint_bytes, load_s=models.load_s, demand=np.zeros(m), want=np.zeros(m, np.int64),
            min_replicas=np.zeros(m, np.int64), pinned=np.zeros(m, bool), name_rank=np.arange(m, dtype=np.int64),
            model_key=core.stable_keys([f"model-{i}" for i in range(m)]),
            room_bytes=np.full(n, fleet.memory_bytes, np.int64), loads_left=np.full(n, cap, np.int64),
            server_key=core.stable_keys([f"server-{j}" for j in range(n)]), loaded=[],
            interval_s=policy.interval_s, hysteresis=policy.hysteresis,
        )  # fmt: skip

    def tick(self, demand: npt.NDArray[np.float64]) -> tuple[core.Solution, list[int], list[tuple[int, int]]]:
        """Place for this tick: (solution, models evicted, (model, server) loads, highest priority first)."""
        held = np.flatnonzero(self.where >= 0)
        loaded = list(zip(held.tolist(), self.where[held].tolist(), strict=True))
        sol = core.solve(replace(self.template, demand=demand, want=(demand > 0).astype(np.int64), loaded=loaded))
        gone = sorted(m for (m, s) in sol.evicted if self.where[m] == s)
        self.where[gone] = -1
        for m, s in sol.load_order:
            self.where[m] = s
        return sol, gone, sol.load_order


def replay(
    trace: Trace,
    models: Models,
    fleet: Fleet,
    policy: PlacementPolicy,
    *,
    window_s: float = 3600.0,
) -> Replay:
    """Simulate ``fleet`` under ``policy`` for the whole trace (see the module docstring)."""
    m = len(trace.models)
    n = fleet.servers
    t0 = float(trace.times_s[0]) if trace.requests else 0.0
    interval = max(policy.interval_s, 1e-3)
    ticks = max(1, int(math.ceil((trace.span_s + 1e-9) / interval)))
    counts = _tick_counts(trace, t0, interval, ticks)
    decay = 0.5 ** (interval / window_s) if window_s > 0 else 0.0
    region = _Region(models, fleet, policy)
    demand = np.zeros(m)
    open_at = np.full(m, np.nan)  # when the current load became (or becomes) available
    win_model: list[npt.NDArray[np.int64]] = []
    win_start: list[npt.NDArray[np.float64]] = []
    win_end: list[npt.NDArray[np.float64]] = []
    loads = 0
    used_share = np.zeros(ticks)
    held = np.zeros(ticks)
    for k in range(ticks):
        now = t0 + k * interval
        if k:
            demand = demand * decay + counts[k - 1]
        sol, gone_l, new_l = region.tick(demand)
        gone = np.asarray(gone_l, np.int64)
        if len(gone):
            win_model.append(gone)
            win_start.append(open_at[gone])
            win_end.append(np.full(len(gone), now))
            open_at[gone] = np.nan
        if new_l:
            # one load at a time per server, in the order the placement chose them (highest priority first)
            busy: dict[int, float] = {}
            for mi, s in new_l:
                busy[s] = busy.get(s, 0.0) + float(models.load_s[mi])
                open_at[mi] = now + busy[s]
            loads += len(new_l)
        used_share[k] = float(sol.used_bytes.sum()) / max(1, n * fleet.memory_bytes)
        held[k] = float((region.where >= 0).sum())
    still = np.flatnonzero(region.where >= 0)
    win_model.append(still)
    win_start.append(open_at[still])
    win_end.append(np.full(len(still), np.inf))
    return _score(trace, fleet, ticks * interval, loads, used_share, held,
                  np.concatenate(win_model), np.concatenate(win_start), np.concatenate(win_end))  # fmt: skip


def _score(
    trace: Trace,
    fleet: Fleet,
    span_s: float,
    loads: int,
    used_share: npt.NDArray[np.float64],
    held: npt.NDArray[np.float64],
    wm: npt.NDArray[np.int64],
    ws: npt.NDArray[np.float64],
    we: npt.NDArray[np.float64],
) -> Replay:
    """Warm or cold for every request, from the windows during which each model was available."""
    keep = ws < we  # a load evicted before it finished never served anything
    wm, ws, we = wm[keep], ws[keep], we[keep]
    order = np.lexsort((ws, wm))
    wm, ws, we = wm[order], ws[order], we[order]
    t = trace.times_s - trace.times_s[0] if trace.requests else trace.times_s
    t0 = float(trace.times_s[0]) if trace.requests else 0.0
    ws, we = ws - t0, we - t0
    scale = span_s * 4 + 1e6  # composite key (model, time); times stay far below the scale
    wkey = wm * scale + ws
    rkey = trace.model_idx * scale + t
    if len(wm):
        i = np.searchsorted(wkey, rkey, side="right") - 1  # the last window that opened before the request
        ic = np.maximum(i, 0)
        warm = (i >= 0) & (wm[ic] == trace.model_idx) & (t < we[ic])
        nx = np.minimum(i + 1, len(wm) - 1)  # the next window of the same model, if any
        has_next = (i + 1 < len(wm)) & (wm[nx] == trace.model_idx)
        wait = np.where(has_next, ws[nx] - t, np.inf)[~warm]
    else:
        warm = np.zeros(len(t), bool)
        wait = np.full(len(t), np.inf)
    hours = max(span_s, 1.0) / 3600.0
    p50 = p99 = None
    if len(wait):
        w = np.sort(wait)  # nearest-rank percentiles: an unserved request (inf) stays inf, not NaN
        q50, q99 = (float(w[min(len(w) - 1, math.ceil(q * len(w)) - 1)]) for q in (0.5, 0.99))
        p50 = q50 if math.isfinite(q50) else None
        p99 = q99 if math.isfinite(q99) else None
    n = max(1, trace.requests)
    return Replay(
        servers=fleet.servers,
        cost_per_hour=fleet.cost_per_hour,
        warm_share=float(warm.sum()) / n,
        cold_wait_p50_s=p50,
        cold_wait_p99_s=p99,
        unserved_share=float(np.isinf(wait).sum()) / n,
        loads_per_hour=loads / hours,
        memory_use_mean=float(used_share.mean()),
        memory_use_max=float(used_share.max()),
        models_loaded_mean=float(held.mean()),
    )
