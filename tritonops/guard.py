"""One guard against too much change at once, for sync's prune and reconcile's unloads.

Each caller keeps its own documented limit (README, "Safety limits"): sync deletes at most 25% of
the objects tritonops published in a region (``store.sync.DEFAULT_MAX_DELETE_FRACTION``, or
``--max-delete``); a reconcile plan unloads at most 50% of the models tritonops loaded on a server
once it holds at least 4 (``reconcile.plan.MAX_REMOVE_FRACTION``, ``MIN_EXISTING``), and never all
of them. ``--force`` lifts either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Breach(str, Enum):
    ALL = "all"  # every existing thing would go
    TOO_MANY = "too-many"  # more than the limit


@dataclass(frozen=True)
class ChangeGuard:
    """Removing more than ``max_fraction`` of ``existing`` things (at least one) needs --force.

    ``min_existing``: below this many the fraction is not applied. ``refuse_all``: removing every
    one of them always needs --force.
    """

    max_fraction: float
    min_existing: int = 0
    refuse_all: bool = False

    def limit(self, existing: int) -> int:
        """The most removals allowed without --force."""
        return max(1, int(existing * self.max_fraction))

    def breach(self, removed: int, existing: int, *, limit: int | None = None) -> Breach | None:
        """What is wrong with removing ``removed`` of ``existing`` (None: nothing); ``limit`` overrides the fraction."""
        if self.refuse_all and existing and removed == existing:
            return Breach.ALL
        if existing < self.min_existing:
            return None
        return Breach.TOO_MANY if removed > (self.limit(existing) if limit is None else limit) else None
