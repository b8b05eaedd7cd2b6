"""Placement: which servers hold which models, decided from demand, cost and memory. Pure functions.

- :func:`place_region` (:mod:`.region`): one placement for the whole region, model -> servers with
  the reason for each replica; ``reconcile`` plans from it and ``capacity`` replays traces through
  its solver (:mod:`.core`).
- :func:`place` / :func:`place_groups` (:mod:`.server`): the per-server policy (keep / load / evict
  for one server's candidates), used by ``reconcile`` for a region without demand.
- :func:`served_per_s` (:mod:`.served`): what one replica serves, from Triton's statistics.
"""

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
    place_region,
    replicas_wanted,
)
from tritonops.placement.served import served_per_s
from tritonops.placement.server import (
    DEFERRED,
    EVICT,
    GIB,
    KEEP,
    LOAD,
    WAIT,
    Candidate,
    Decision,
    GroupResult,
    Placed,
    PlacementPolicy,
    PlacementResult,
    place,
    place_groups,
    priority_of,
)

__all__ = [
    "DEFERRED", "EVICT", "GIB", "KEEP", "LOAD", "WAIT", "Candidate", "Decision", "Eviction", "GroupResult",
    "Missing", "ModelInput", "ModelPlacement", "Placed", "PlacementPolicy", "PlacementResult", "RegionPlacement",
    "Replica", "ReplicaDecision", "ServerInput", "ServerUse", "place", "place_groups", "place_region",
    "priority_of", "replicas_wanted", "served_per_s",
]  # fmt: skip
