"""Placement by demand and cost: which on-demand models a server keeps, loads and evicts.

A pure function of its inputs (no I/O, no clock), used by ``reconcile``'s place step and, on the
same code path, by the ``capacity`` simulator (:func:`place_groups`, many servers in one call).

Priority (GreedyDual-Size-Frequency with the clock term replaced by a demand window): the wait a
model saves its users per byte of memory it holds,

    priority = demand x (interval_s + load_s) / footprint_bytes

``demand`` is requests in the demand window; a request to a model that is not loaded waits about
one reconcile interval plus the model's load time. With equal load times this is GDSF's
frequency/size; a slow-loading model is worth more memory than a fast one with the same demand.

Rules, per server (group):

- pinned models are always kept (or loaded, outside the cap): the others share what is left;
- the rest are ranked by priority, a loaded model's multiplied by ``1 + hysteresis`` so two models
  of similar demand do not swap every run; ties by loaded-first, then model name (deterministic);
- greedy fill of the budget in that order (a model that does not fit is skipped, smaller ones after
  it may still fit); a model with no demand is never loaded (it is kept if it fits);
- at most ``max_loads`` loads per run (the highest priority first); the rest wait (``deferred``);
- a loaded model that lost its place is evicted only as far as the memory is needed: lowest
  priority first, so a capped run does not evict for loads it will not make.

The budget is never exceeded by what the result keeps and loads, except by pinned models alone
(reported as ``over_budget_bytes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

GIB = float(1 << 30)


class Decision(str, Enum):
    keep = "keep"  # loaded, stays loaded
    load = "load"  # not loaded, load it this run
    evict = "evict"  # loaded, unload it to make room
    wait = "wait"  # not loaded, stays out (no room, no demand)
    deferred = "deferred"  # would be loaded, but the run's cap on loads is reached


# Codes of the array interface (place_groups); index into _DECISIONS.
KEEP, LOAD, EVICT, WAIT, DEFERRED = range(5)
_DECISIONS = (Decision.keep, Decision.load, Decision.evict, Decision.wait, Decision.deferred)


@dataclass(frozen=True)
class PlacementPolicy:
    """Knobs of the policy. ``interval_s``: the reconcile interval (cron's 60 s, or the loop's)."""

    interval_s: float = 60.0
    hysteresis: float = 0.25
    max_loads: int | None = 4

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.hysteresis < 0 or (self.max_loads is not None and self.max_loads < 0):
            raise ValueError("placement policy: interval_s, hysteresis and max_loads must be >= 0")


@dataclass(frozen=True)
class Candidate:
    """One model a server may hold. ``demand``: requests in the demand window (may be fractional)."""

    model: str
    footprint_bytes: int
    load_s: float
    demand: float
    pinned: bool = False
    loaded: bool = False
    footprint_source: str = "measured"  # or "estimate" (size-based first guess, see memory.ledger)
    load_source: str = "measured"  # or "estimate"


@dataclass(frozen=True)
class Placed:
    """A decision and the figures behind it (for the plan's output)."""

    model: str
    decision: Decision
    reason: str
    demand: float
    footprint_bytes: int
    footprint_source: str
    load_s: float
    load_source: str
    priority: float  # seconds of waiting saved per GiB held, per window
    pinned: bool

    @property
    def data(self) -> dict[str, Any]:
        return {
            "model": self.model, "decision": self.decision.value, "reason": self.reason,
            "demand": self.demand, "footprint_bytes": self.footprint_bytes,
            "footprint_source": self.footprint_source, "load_s": round(self.load_s, 3),
            "load_source": self.load_source, "priority": round(self.priority, 6), "pinned": self.pinned,
        }  # fmt: skip


@dataclass(frozen=True)
class PlacementResult:
    decisions: tuple[Placed, ...]  # sorted by model name
    budget_bytes: int
    used_bytes: int  # after the run: kept + loaded
    over_budget_bytes: int  # > 0 only when pinned models alone exceed the budget

    def of(self, decision: Decision) -> list[Placed]:
        return [p for p in self.decisions if p.decision is decision]

    @property
    def data(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "used_bytes": self.used_bytes,
            "over_budget_bytes": self.over_budget_bytes,
            "decisions": [p.data for p in self.decisions],
        }


@dataclass(frozen=True)
class GroupResult:
    """The array form: ``decision`` codes (KEEP..DEFERRED) and ``priority`` per candidate, in input order."""

    decision: npt.NDArray[np.int8]
    priority: npt.NDArray[np.float64]
    used_bytes: npt.NDArray[np.int64]  # per group, after the run
    over_budget_bytes: npt.NDArray[np.int64]  # per group


def priority_of(demand: Any, footprint_bytes: Any, load_s: Any, interval_s: float) -> Any:
    """Seconds of waiting saved per GiB held: demand x (interval + load time) / footprint."""
    return np.asarray(demand, float) * (interval_s + np.asarray(load_s, float)) / (
        np.maximum(np.asarray(footprint_bytes, float), 1.0) / GIB
    )


def _segment_cumsum(values: npt.NDArray[Any], groups: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """Cumulative sum restarting at each group; ``groups`` must be sorted."""
    cs = np.cumsum(values)
    if len(values) == 0:
        return cs
    start = np.r_[True, groups[1:] != groups[:-1]]
    base = (cs - values)[start]
    return cs - np.repeat(base, np.diff(np.r_[np.flatnonzero(start), len(values)]))


def _greedy_fill(
    g: npt.NDArray[np.int64], size: npt.NDArray[np.int64], rem: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Take items in the given order (sorted by group) while they fit; skip the ones that do not."""
    taken = np.zeros(len(g), bool)
    open_ = np.ones(len(g), bool)
    rem = rem.copy()
    while open_.any():
        open_ &= size <= rem[g]  # never fits any more: rem only shrinks
        idx = np.flatnonzero(open_)
        if len(idx) == 0:
            break
        cs = _segment_cumsum(size[idx], g[idx])
        ok = cs <= rem[g[idx]]
        taken[idx[ok]] = True
        open_[idx[ok]] = False
        np.subtract.at(rem, g[idx[ok]], size[idx[ok]])
        if ok.all():
            break
        # the first item of each group that did not fit can never fit: close it, try the ones after it
        bad = idx[~ok]
        first = np.r_[True, g[bad][1:] != g[bad][:-1]]
        open_[bad[first]] = False
    return taken


def place_groups(
    group: npt.ArrayLike,
    footprint_bytes: npt.ArrayLike,
    load_s: npt.ArrayLike,
    demand: npt.ArrayLike,
    pinned: npt.ArrayLike,
    loaded: npt.ArrayLike,
    name_rank: npt.ArrayLike,
    budget_bytes: npt.ArrayLike,
    policy: PlacementPolicy,
) -> GroupResult:
    """The policy over many servers at once (arrays, one entry per candidate; ``budget_bytes`` per group).

    ``name_rank``: each candidate's rank by model name (the deterministic tie-break).
    """
    g = np.asarray(group, np.int64)
    size = np.asarray(footprint_bytes, np.int64)
    dem = np.asarray(demand, float)
    pin = np.asarray(pinned, bool)
    was = np.asarray(loaded, bool)
    budget = np.asarray(budget_bytes, np.int64)
    ngroups = len(budget)
    prio = priority_of(dem, size, load_s, policy.interval_s)
    eff = np.where(was, prio * (1.0 + policy.hysteresis), prio)
    pinned_bytes = np.bincount(g[pin], weights=size[pin], minlength=ngroups).astype(np.int64)
    rem = budget - pinned_bytes
    eligible = ~pin & ((dem > 0) | was)
    order = np.lexsort((np.asarray(name_rank), ~was, -eff, g))
    order = order[eligible[order]]
    selected = np.zeros(len(g), bool)
    selected[order] = _greedy_fill(g[order], size[order], np.maximum(rem, 0))
    code = np.full(len(g), WAIT, np.int8)
    code[pin] = np.where(was[pin], KEEP, LOAD)
    code[selected & was] = KEEP
    new = order[selected[order] & ~was[order]]  # in priority order within each group
    if policy.max_loads is not None:
        rank = _segment_cumsum(np.ones(len(new), np.int64), g[new])
        code[new[rank > policy.max_loads]] = DEFERRED
        new = new[rank <= policy.max_loads]
    code[new] = LOAD
    # Evict the loaded models that lost their place, lowest priority first, only as far as needed.
    lost = np.flatnonzero(was & ~pin & ~selected)
    lost = lost[np.lexsort((np.asarray(name_rank)[lost], eff[lost], g[lost]))]
    holding = (code == KEEP) | (code == LOAD)
    used = np.bincount(g[holding], weights=size[holding], minlength=ngroups).astype(np.int64)
    used_all = used + np.bincount(g[lost], weights=size[lost], minlength=ngroups).astype(np.int64)
    need = np.maximum(used_all - budget, 0)
    before = _segment_cumsum(size[lost], g[lost]) - size[lost]
    evict = before < need[g[lost]]
    code[lost] = np.where(evict, EVICT, KEEP)
    used = used_all - np.bincount(g[lost[evict]], weights=size[lost[evict]], minlength=ngroups).astype(np.int64)
    return GroupResult(code, prio, used, np.maximum(pinned_bytes - budget, 0))


def place(candidates: Sequence[Candidate], budget_bytes: int, policy: PlacementPolicy) -> PlacementResult:
    """Decide keep / load / evict / wait / deferred for one server's on-demand and pinned models.

    ``candidates`` are the models the server should hold if memory allowed (unwanted models are
    the caller's unload step, before this); ``budget_bytes`` what they may use together (the
    server's budget or free memory, headroom already taken off, plus what these candidates hold).
    """
    names = sorted({c.model for c in candidates})
    if len(names) != len(candidates):
        raise ValueError("placement: a model is listed twice among the candidates")
    rank = {m: i for i, m in enumerate(names)}
    r = place_groups(
        np.zeros(len(candidates), np.int64),
        [c.footprint_bytes for c in candidates],
        [c.load_s for c in candidates],
        [c.demand for c in candidates],
        [c.pinned for c in candidates],
        [c.loaded for c in candidates],
        [rank[c.model] for c in candidates],
        [budget_bytes],
        policy,
    )
    cut = _cut_line(candidates, r, policy)
    out = [
        Placed(
            c.model, _DECISIONS[int(r.decision[i])], _reason(c, int(r.decision[i]), float(r.priority[i]), cut, policy),
            c.demand, c.footprint_bytes, c.footprint_source, c.load_s, c.load_source, float(r.priority[i]), c.pinned,
        )  # fmt: skip
        for i, c in enumerate(candidates)
    ]
    return PlacementResult(
        tuple(sorted(out, key=lambda p: p.model)), int(budget_bytes), int(r.used_bytes[0]), int(r.over_budget_bytes[0])
    )


def _cut_line(candidates: Sequence[Candidate], r: GroupResult, policy: PlacementPolicy) -> float:
    """The lowest effective priority among the models that hold memory after the run (0 if none)."""
    held = [
        float(r.priority[i]) * (1.0 + policy.hysteresis if c.loaded else 1.0)
        for i, c in enumerate(candidates)
        if not c.pinned and int(r.decision[i]) in (KEEP, LOAD)
    ]
    return min(held, default=0.0)


def _reason(c: Candidate, code: int, prio: float, cut: float, policy: PlacementPolicy) -> str:
    fig = (
        f"priority {prio:.4g} s/GiB = demand {c.demand:g} x ({policy.interval_s:g} s + {c.load_s:g} s load)"
        " / footprint"
    )
    if c.pinned:
        return "pinned: always loaded" if code == LOAD else "pinned: never evicted"
    if code == KEEP:
        return f"{fig}; kept (x{1 + policy.hysteresis:g} hysteresis for a loaded model)"
    if code == LOAD:
        return f"{fig}; among the highest that fit the budget"
    if code == DEFERRED:
        return f"{fig}; would load, but the cap of {policy.max_loads} loads per run is reached"
    if code == EVICT:
        return f"{fig} x{1 + policy.hysteresis:g} hysteresis is below the cut line {cut:.4g}: evicted to make room"
    if c.demand <= 0:
        return "no demand in the window: not loaded"
    return f"{fig}; below the cut line {cut:.4g} or does not fit the room left"
