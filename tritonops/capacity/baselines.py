"""Request-level caches to compare the policy with: LRU, LFU and Belady's offline optimum.

The planner gives each cache the fleet's pooled memory (``servers=1``, ``capacity_bytes`` = servers x
memory: the region placement spreads models over every server); ``servers`` > 1 splits the trace
(model i on server i mod servers) over caches of ``capacity_bytes`` each. A cache loads a model the
instant it is requested (no interval, no load time): a flattering setting, which is why Belady's hit
ratio is an upper bound for any online policy with the same memory. Sizes count: a miss evicts until the model fits; a
model larger than a server's memory is never cached. Belady may also
decline to cache a model whose next request comes after every cached one's (bypass).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

BASELINES = ("lru", "lfu", "belady")


def lru_hits(idx: npt.NDArray[np.int64], size: npt.NDArray[np.int64], capacity_bytes: int) -> int:
    cache: OrderedDict[int, None] = OrderedDict()
    sz = size.tolist()
    free = capacity_bytes
    hits = 0
    for m in idx.tolist():
        if m in cache:
            cache.move_to_end(m)
            hits += 1
            continue
        if sz[m] > capacity_bytes:
            continue
        while free < sz[m]:
            old, _ = cache.popitem(last=False)
            free += sz[old]
        cache[m] = None
        free -= sz[m]
    return hits


def lfu_hits(idx: npt.NDArray[np.int64], size: npt.NDArray[np.int64], capacity_bytes: int) -> int:
    """Perfect LFU: counts over the whole history; evicts the cached model with the fewest (then oldest)."""
    sz = size.tolist()
    freq = [0] * len(sz)
    cached = [False] * len(sz)
    heap: list[tuple[int, int, int]] = []  # (freq, last use, model); stale entries skipped
    free = capacity_bytes
    hits = 0
    for i, m in enumerate(idx.tolist()):
        freq[m] += 1
        if cached[m]:
            hits += 1
            heapq.heappush(heap, (freq[m], i, m))
            continue
        if sz[m] > capacity_bytes:
            continue
        while free < sz[m]:
            f, _, old = heapq.heappop(heap)
            if cached[old] and f == freq[old]:
                cached[old] = False
                free += sz[old]
        cached[m] = True
        free -= sz[m]
        heapq.heappush(heap, (freq[m], i, m))
    return hits


def next_use(idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each request, the position of the next request for the same model (len(idx) if none)."""
    n = len(idx)
    order = np.lexsort((np.arange(n), idx))
    nxt = np.full(n, n, np.int64)
    same = idx[order][1:] == idx[order][:-1]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def belady_hits(idx: npt.NDArray[np.int64], size: npt.NDArray[np.int64], capacity_bytes: int) -> int:
    sz = size.tolist()
    nxt = next_use(idx).tolist()
    when = [-1] * len(sz)  # cached model -> its next use; -1 when not cached
    heap: list[tuple[int, int]] = []  # (-next use, model); stale entries skipped
    free = capacity_bytes
    hits = 0
    for i, m in enumerate(idx.tolist()):
        if when[m] >= 0:
            hits += 1
            when[m] = nxt[i]
            heapq.heappush(heap, (-nxt[i], m))
            continue
        if sz[m] > capacity_bytes:
            continue
        while free < sz[m]:
            neg, old = heap[0]
            if when[old] != -neg:
                heapq.heappop(heap)
                continue
            if -neg <= nxt[i]:
                break  # every cached model is needed before this one: do not cache it
            heapq.heappop(heap)
            when[old] = -1
            free += sz[old]
        if free >= sz[m]:
            when[m] = nxt[i]
            free -= sz[m]
            heapq.heappush(heap, (-nxt[i], m))
    return hits


def hit_ratio(
    name: str, idx: npt.NDArray[np.int64], size: npt.NDArray[np.int64], capacity_bytes: int, servers: int = 1
) -> float:
    """Share of requests hit by cache ``name`` on ``servers`` servers; model i lives on server i mod servers."""
    fn = {"lru": lru_hits, "lfu": lfu_hits, "belady": belady_hits}[name]
    shard = idx % servers
    hits = sum(fn(idx[shard == k], size, capacity_bytes) for k in range(servers))
    return hits / max(1, len(idx))
