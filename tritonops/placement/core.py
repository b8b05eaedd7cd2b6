"""The region placement's solver, on arrays: which servers hold which models after this run.

Pure (no I/O, no clock), deterministic, and cheap enough to run once per simulated tick of the
capacity planner (1,000 models and 200 servers in a few milliseconds when little changes).
:func:`tritonops.placement.region.place_region` is the typed front door; the capacity simulator
calls :func:`solve` directly with the same arrays it keeps from tick to tick.

The algorithm, in one pass over *replica slots* in priority order:

1. pinned models first, on every allowed server (outside the load cap; on-demand replicas on that
   server are evicted for them, lowest priority first; one that cannot fit is ``unfit``);
2. slots: replica k of model m for k = 1..want[m], ordered by tier (every model's first replica,
   then the replicas a ``min`` rule asks for, then the replicas demand asks for), then by priority
   (demand / k x (interval + load time) / footprint, times 1 + hysteresis when the model already
   has k replicas), then loaded first, then name;
3. a slot whose model is loaded on a server it does not hold yet keeps that replica (no move);
   otherwise it is a load: on the server with the most free room among those allowed that do not
   hold the model and still have loads left this run (spread, so that later replicas find distinct
   servers), ties going to the highest rendezvous-hash rank for the model (deterministic, and
   independent of the other models). With no room anywhere, the lowest-priority replica not yet claimed by a slot is
   evicted to make it (only as far as a load needs it, so a capped run evicts nothing for loads it
   does not make); every such replica ranks below the slot, since slots are taken in order;
4. loaded replicas no slot claimed and no load needed the memory of stay (``surplus``).

Memory is one number per server (its lowest device's room); the sum of what a server keeps and
loads never exceeds its room, except by pinned models alone (reported as unfit instead).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

GIB = float(1 << 30)
NO_CAP = 1 << 30  # loads_left for a server without a cap on loads per run
UNKNOWN_ROOM = 1 << 60  # room_bytes of a server whose memory is unknown (no budget, no probe): all fits
NOT_ALLOWED = -2  # Solution.evicted cause: loaded on a server no longer allowed to hold it
PINNED = -1  # Solution.evicted cause: made room for a pinned model
OVER_BUDGET = -3  # Solution.evicted cause: what is loaded exceeds the server's room

# How a replica is held after the run (Solution.replicas) and what happened to the others.
PIN_KEEP, PIN_LOAD, KEEP, LOAD, SURPLUS = range(5)
TIER_FIRST, TIER_MIN, TIER_DEMAND = range(3)


def stable_key(name: str) -> int:
    """A 64-bit key of a name that is the same on every run and host (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def stable_keys(names: Sequence[str]) -> npt.NDArray[np.uint64]:
    return np.fromiter((stable_key(n) for n in names), np.uint64, len(names))


def rendezvous(model_key: int, server_keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Rendezvous (highest random weight) scores of one model on every server: splitmix64 of the pair."""
    z = server_keys ^ np.uint64(model_key)  # arrays wrap around silently (only scalars warn)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(z ^ (z >> np.uint64(31)))


@dataclass(frozen=True)
class Problem:
    """One run's inputs as arrays. Models are indexed 0..M-1, servers 0..S-1.

    ``demand``: requests in the window; ``want``: replicas wanted (0 for a model without demand and
    without a ``min`` rule); ``min_replicas``: what a rule asks for regardless of demand;
    ``room_bytes``: what placed models may use together on each server (pinned included);
    ``loads_left``: loads this run may still start there (NO_CAP: no cap); ``loaded``: (model, server)
    pairs held now; ``allowed``: M x S, or None for every model everywhere; ``size_on``: per
    (model, server) footprints that differ from ``size`` (a canary version)."""

    size: npt.NDArray[np.int64]
    load_s: npt.NDArray[np.float64]
    demand: npt.NDArray[np.float64]
    want: npt.NDArray[np.int64]
    min_replicas: npt.NDArray[np.int64]
    pinned: npt.NDArray[np.bool_]
    name_rank: npt.NDArray[np.int64]
    model_key: npt.NDArray[np.uint64]
    room_bytes: npt.NDArray[np.int64]
    loads_left: npt.NDArray[np.int64]
    server_key: npt.NDArray[np.uint64]
    loaded: Sequence[tuple[int, int]]
    allowed: npt.NDArray[np.bool_] | None = None
    size_on: Mapping[tuple[int, int], int] = field(default_factory=dict)
    interval_s: float = 60.0
    hysteresis: float = 0.25
    evict: bool = True  # False: demand is incomplete, keep every loaded replica, fill free room only


@dataclass
class Solution:
    replicas: dict[tuple[int, int], int]  # (model, server) -> PIN_KEEP .. SURPLUS
    evicted: dict[tuple[int, int], int]  # (model, server) -> index of the slot's model it made room for (-1: pinned)
    unplaced: dict[int, list[tuple[int, str]]]  # model -> [(replica number, "room" | "cap" | "servers")]
    unfit: list[tuple[int, int]]  # pinned (model, server) pairs that do not fit
    priority: npt.NDArray[np.float64]  # per model, its first replica's (without hysteresis)
    used_bytes: npt.NDArray[np.int64]  # per server, after the run
    slot_order: list[tuple[int, int]] = field(default_factory=list)  # (model, replica number), placed or not
    load_order: list[tuple[int, int]] = field(default_factory=list)  # (model, server) loads, highest priority first


def priorities(p: Problem) -> npt.NDArray[np.float64]:
    """Seconds of waiting saved per GiB held, per window: demand x (interval + load time) / footprint."""
    return p.demand * (p.interval_s + p.load_s) / (np.maximum(p.size.astype(float), 1.0) / GIB)


def _slots(p: Problem, prio: npt.NDArray[np.float64], held: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Every (model, replica number) wanted, in the order they claim memory (see the module docstring)."""
    want = np.where(p.pinned, 0, p.want)
    total = int(want.sum())
    if total == 0:
        return []
    m = np.repeat(np.arange(len(want)), want)
    k = np.arange(total) - np.repeat(np.cumsum(want) - want, want) + 1
    tier = np.where(k == 1, TIER_FIRST, np.where(k <= p.min_replicas[m], TIER_MIN, TIER_DEMAND))
    had = held[m] >= k
    eff = prio[m] / k * np.where(had, 1.0 + p.hysteresis, 1.0)
    order = np.lexsort((k, p.name_rank[m], ~had, -eff, tier))
    return list(zip(m[order].tolist(), k[order].tolist(), strict=True))


class _State:
    """Memory and loads left per server, what each model holds, and the replicas not yet claimed."""

    def __init__(self, p: Problem) -> None:
        self.p = p
        self.free = p.room_bytes.astype(np.int64).copy()
        self.loads_left = p.loads_left.astype(np.int64).copy()
        self.on: dict[int, set[int]] = {}  # model -> servers holding it after the run
        self.sol = Solution({}, {}, {}, [], np.zeros(len(p.size)), np.zeros(len(p.room_bytes), np.int64))
        self.pending: dict[tuple[int, int], None] = {}  # loaded, not claimed yet: eviction candidates
        self.victims: list[tuple[int, int, int]] = []  # heap of (victim rank, model, server)
        self.evictable = np.zeros(len(p.room_bytes), np.int64)  # bytes of pending on-demand replicas
        self.sizes: list[int] = p.size.tolist()  # python ints: indexed once per replica, many times a run
        self.pinned: list[bool] = p.pinned.tolist()
        self._reach: int | None = None  # cache of reach()

    def reach(self) -> int:
        """The largest replica a load could still place anywhere: free plus evictable bytes on a
        server with loads left (-1: no loads left anywhere)."""
        if self._reach is None:
            room = self.free + self.evictable if self.p.evict else self.free
            ok = self.loads_left > 0
            self._reach = int(room[ok].max()) if ok.any() else -1
        return self._reach

    def add_pending(self, m: int, s: int) -> None:
        self.pending[(m, s)] = None
        if not self.pinned[m]:
            self.evictable[s] += self.size(m, s)

    def size(self, m: int, s: int) -> int:
        return self.p.size_on.get((m, s), self.sizes[m]) if self.p.size_on else self.sizes[m]

    def allowed(self, m: int, s: int) -> bool:
        return self.p.allowed is None or bool(self.p.allowed[m, s])

    def _unpend(self, m: int, s: int) -> None:
        del self.pending[(m, s)]
        if not self.pinned[m]:
            self.evictable[s] -= self.size(m, s)
        self._reach = None

    def hold(self, m: int, s: int, how: int) -> None:
        self.on.setdefault(m, set()).add(s)
        self.sol.replicas[(m, s)] = how
        if (m, s) in self.pending:
            self._unpend(m, s)
        self._reach = None

    def evict(self, m: int, s: int, cause: int) -> None:
        self._unpend(m, s)
        self.free[s] += self.size(m, s)
        self.sol.evicted[(m, s)] = cause


def _start(p: Problem, st: _State) -> dict[int, list[int]]:
    """Loaded replicas: memory taken, and each model's loaded servers in the order slots claim them."""
    by_model: dict[int, list[int]] = {}
    for m, s in sorted(set(p.loaded)):
        st.free[s] -= st.size(m, s)
        st.add_pending(m, s)
        if not st.allowed(m, s):
            st.evict(m, s, NOT_ALLOWED)
        elif not st.pinned[m]:
            by_model.setdefault(m, []).append(s)
    for m, servers in by_model.items():
        if len(servers) > 1:
            score = rendezvous(int(p.model_key[m]), p.server_key[servers])
            by_model[m] = [servers[i] for i in np.argsort(score, kind="stable")[::-1]]
    return by_model


def _rank_victims(p: Problem, st: _State, slots: list[tuple[int, int]], by_model: dict[int, list[int]],
                  prio: npt.NDArray[np.float64]) -> None:  # fmt: skip
    """Every pending replica's eviction rank: the ones no slot will claim first (lowest priority
    first), then the claimable ones from the last slot backwards."""
    claim_at: dict[tuple[int, int], int] = {}
    for pos, (m, k) in enumerate(slots):
        servers = by_model.get(m, ())
        if k <= len(servers):
            claim_at[(m, servers[k - 1])] = pos
    n = len(slots)
    surplus = sorted(
        (prio[m], int(p.name_rank[m]), int(p.server_key[s]), m, s)
        for (m, s) in st.pending if (m, s) not in claim_at and not st.pinned[m]
    )
    ranked = [(i, m, s) for i, (_, _, _, m, s) in enumerate(surplus)]
    ranked += [(len(surplus) + n - pos, m, s) for (m, s), pos in claim_at.items()]
    st.victims = ranked
    heapq.heapify(st.victims)


def _make_room(st: _State, m: int, size: int, ok: list[int], force: bool = False) -> int | None:
    """Evict the lowest-ranked pending replicas until one server in ``ok`` has room for ``size``
    (nothing when that cannot be reached, except for OVER_BUDGET: as much as there is)."""
    if not st.p.evict and not force:
        return None
    okset = set(ok)
    freed: dict[int, list[tuple[int, int, int]]] = {}
    skipped: list[tuple[int, int, int]] = []
    found = None
    while st.victims:
        v = heapq.heappop(st.victims)
        _, vm, vs = v
        if (vm, vs) not in st.pending:
            continue  # claimed or evicted since
        skipped.append(v)
        if vs not in okset:
            continue
        freed.setdefault(vs, []).append(v)
        if st.free[vs] + sum(st.size(x, vs) for _, x, _ in freed[vs]) >= size:
            found = vs
            break
    if found is None and m == OVER_BUDGET and len(ok) == 1:
        found = ok[0]
    for v in skipped:
        if found is not None and v in freed.get(found, ()):
            st.evict(v[1], v[2], m)
        else:
            heapq.heappush(st.victims, v)
    return found


def _place_pinned(p: Problem, st: _State) -> None:
    """Pinned models on every server allowed to hold them; on-demand replicas there make room."""
    pinned = np.flatnonzero(p.pinned)
    for m in pinned[np.argsort(p.name_rank[pinned])].tolist():
        for s in range(len(p.room_bytes)):
            if not st.allowed(m, s):
                continue
            if (m, s) in st.pending:
                st.hold(m, s, PIN_KEEP)
                continue
            need = st.size(m, s)
            if st.free[s] < need and _make_room(st, PINNED, need, [s], force=True) is None:
                st.sol.unfit.append((m, s))
                continue
            st.free[s] -= need
            st.hold(m, s, PIN_LOAD)


def _new_replica(p: Problem, st: _State, m: int) -> tuple[int | None, str]:
    """A server for a new replica of ``m`` (rendezvous order among those with room), or why none."""
    held = st.on.get(m, set())
    cand = [s for s in range(len(p.room_bytes)) if s not in held and st.allowed(m, s)]
    if not cand:
        return None, "servers"
    ok = [s for s in cand if st.loads_left[s] > 0]
    if not ok:
        return None, "cap"
    score = rendezvous(int(p.model_key[m]), p.server_key[ok])
    ranked = [ok[i] for i in np.argsort(score, kind="stable")[::-1]]
    fits = [s for s in ranked if st.free[s] >= st.size(m, s)]
    if fits:  # the emptiest server (spread: replicas of later models need distinct servers), then by rank
        return max(fits, key=lambda s: int(st.free[s])), ""
    s = _make_room(st, m, min(st.size(m, x) for x in ranked), ranked)
    if s is not None and st.free[s] >= st.size(m, s):
        return s, ""
    return None, "room"


def _over_budget(st: _State) -> None:
    """A server holding more than its room (budget lowered, estimates replaced by measurements):
    its lowest-ranked on-demand replicas go until it fits (pinned ones are never evicted)."""
    for s in np.flatnonzero(st.free < 0).tolist():
        _make_room(st, OVER_BUDGET, 0, [s], force=True)


def _quick_miss(p: Problem, st: _State, m: int) -> str:
    """Why no server can take a new replica of ``m``, decided without looking at each server ("" if
    one may): nothing anywhere has loads left, or no server could free enough for it."""
    reach = st.reach()
    if reach < 0:
        return "cap"
    if p.size_on and any(key[0] == m for key in p.size_on):
        return ""
    return "room" if int(p.size[m]) > reach else ""


def solve(p: Problem) -> Solution:
    """Place every model of the region on its servers for this run (see the module docstring)."""
    st = _State(p)
    prio = priorities(p)
    st.sol.priority = prio
    by_model = _start(p, st)
    held = np.zeros(len(p.size), np.int64)
    for m, servers in by_model.items():
        held[m] = len(servers)
    slots = _slots(p, prio, held)
    st.sol.slot_order = slots
    _rank_victims(p, st, slots, by_model, prio)
    _over_budget(st)
    _place_pinned(p, st)
    pending = st.pending
    may = [len(p.room_bytes)] * len(p.size) if p.allowed is None else p.allowed.sum(axis=1).tolist()
    for m, k in slots:
        claim = next((s for s in by_model[m] if (m, s) in pending), None) if m in by_model else None
        if claim is not None:
            st.hold(m, claim, KEEP)
            continue
        why = "servers" if len(st.on.get(m, ())) >= may[m] else _quick_miss(p, st, m)
        s = None
        if not why:
            s, why = _new_replica(p, st, m)
        if s is None:
            st.sol.unplaced.setdefault(m, []).append((k, why))
            continue
        st.free[s] -= st.size(m, s)
        st.loads_left[s] -= 1
        st.hold(m, s, LOAD)  # resets the reach cache
        st.sol.load_order.append((m, s))
    for m, s in list(st.pending):
        st.hold(m, s, SURPLUS)
    st.sol.used_bytes = p.room_bytes - st.free
    return st.sol
