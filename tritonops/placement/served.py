"""What one replica of a model serves, measured from Triton's statistics.

Triton's statistics give, per model version, ``inference_count`` (requests) and the time spent
computing them (``inference_stats.compute_input/compute_infer/compute_output``: count and ns, per
execution, so batching is counted once per batch). Requests per second of compute time is what one
replica (one instance) could serve busy all the time; placement plans for :data:`BUSY_SHARE` of it,
so a replica is not run into its queue. A model with fewer than :data:`MIN_REQUESTS` requests counted
has no measurement (one replica is assumed to serve its demand, unless ``models.<m>.served_rps`` says).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

BUSY_SHARE = 0.75
MIN_REQUESTS = 100
_PHASES = ("compute_input", "compute_infer", "compute_output")


def _int(v: Any) -> int:
    try:
        return int(v)  # the gRPC JSON writes uint64 as strings
    except (TypeError, ValueError):
        return 0


def served_per_s(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Model -> requests per second one replica serves (at BUSY_SHARE of its measured compute rate),
    from Triton statistics rows (of one or many servers: counts and times add up)."""
    requests: dict[str, int] = {}
    busy_ns: dict[str, int] = {}
    for r in rows:
        name = str(r.get("name", ""))
        stats = r.get("inference_stats") or {}
        ns = sum(_int((stats.get(k) or {}).get("ns")) for k in _PHASES)
        requests[name] = requests.get(name, 0) + _int(r.get("inference_count"))
        busy_ns[name] = busy_ns.get(name, 0) + ns
    return {m: BUSY_SHARE * n / (busy_ns[m] / 1e9) for m, n in sorted(requests.items())
            if m and n >= MIN_REQUESTS and busy_ns[m] > 0}  # fmt: skip
