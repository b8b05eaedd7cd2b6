"""The first guesses, for a model never measured: its memory footprint from its size on disk, and
its load time from its footprint. Both are reported as ``source="estimate"`` wherever they are used
(the ledger's ``predict``, reconcile's plan, the capacity planner).

The multiplier (2.0, not the 1.25 other managers use) covers weights expanded in memory, framework
workspaces and allocator slack; the base covers the per-instance process cost measured for a
python-backend stub (see README).
"""

from __future__ import annotations

ESTIMATE_MULTIPLIER = 2.0
# A python-backend stub with numpy imported costs about 37 MiB RSS before the model allocates
# anything (measured on the local stack, see README); 64 MiB leaves room for other backends' runtimes.
ESTIMATE_BASE_BYTES = 64 << 20

LOAD_BASE_S = 2.0
LOAD_BYTES_PER_S = 500e6  # a download plus initialisation rate; a guess until loads are timed in the ledger


def estimate_bytes(size_bytes: int) -> int:
    """The first guess for a model never measured: on-disk size x multiplier + per-instance base."""
    return int(size_bytes * ESTIMATE_MULTIPLIER) + ESTIMATE_BASE_BYTES


def estimate_load_s(footprint_bytes: float) -> float:
    """Seconds to load a model of this footprint (the ledger does not time loads yet)."""
    return LOAD_BASE_S + footprint_bytes / LOAD_BYTES_PER_S
