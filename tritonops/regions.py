"""Work done region by region, where one region's failure does not stop the others.

A bucket that is down in one region, or a region whose model has no previous version, must not keep
the next regions from a sync or an emergency rollback. :func:`per_region` runs each region in turn and
collects what failed; the caller reports what was done, then :meth:`PerRegion.raise_if_failed` ends
the run with one line naming every failed region (exit 1). With one region, its error is raised as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tritonops.errors import RegionsFailedError

T = TypeVar("T")


@dataclass
class PerRegion(Generic[T]):
    regions: list[str]
    done: list[tuple[str, T]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line each, naming its region

    def fail(self, region: str, error: Exception) -> str:
        """Record ``region``'s failure; returns its line: the error's own, prefixed with the region
        unless the error says it is about that region (``error.region``: its message names it)."""
        why = str(error)
        named = getattr(error, "region", None) == region or _names_region(why, region)
        self.failed.append(why if named else f"region {region}: {why}")
        return self.failed[-1]

    def raise_if_failed(self, verb: str) -> None:
        """``verb``: what the regions done had done ("synced", "rolled back")."""
        if not self.failed:
            return
        ok = [r for r, _ in self.done]
        done = f" ({', '.join(ok)} {verb})" if ok else ""
        n = f"{len(self.failed)} of {len(self.regions)} regions failed"
        raise RegionsFailedError(f"{n}{done}: " + "; ".join(self.failed))


def _names_region(why: str, region: str) -> bool:
    # Only for errors raised without ``region=`` (the store's and release.ops' messages still say it
    # only in text): once every raiser in a per-region run sets it, this goes.
    return f"region {region}" in why or f"region {region!r}" in why


def per_region(
    regions: list[str],
    fn: Callable[[str], T],
    scoped: tuple[type[Exception], ...],
    on_fail: Callable[[str, str], None] | None = None,
) -> PerRegion[T]:
    """``fn(region)`` for each region in turn. An error of a ``scoped`` type is collected (and given
    to ``on_fail`` with its line as it happens) and the next region goes on; with one region it is
    raised as is. Any other error stops at once."""
    out: PerRegion[T] = PerRegion(list(regions))
    for r in regions:
        try:
            out.done.append((r, fn(r)))
        except scoped as e:
            if len(regions) == 1:
                raise
            line = out.fail(r, e)
            if on_fail is not None:
                on_fail(r, line)
    return out
