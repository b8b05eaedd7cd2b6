"""What sync asks of releases: which versions a model's published config.pbtxt points at, and which
versions retention must keep. Publishing never moves a release (explicit mode) and never undoes one."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from tritonops.config import ReleaseMode
from tritonops.release.policy import config_pointer, live_version
from tritonops.release.state import ReleaseRecord, read_record, record_key
from tritonops.repo.manifest import CONFIG_NAME, ModelManifest
from tritonops.store.base import ObjectStore


@dataclass
class PublishRelease:
    mode: ReleaseMode
    record: ReleaseRecord | None
    pointed: list[int]  # what the bucket's config points at now (explicit mode, no record only)

    @property
    def protected(self) -> set[int]:
        """Versions a prune must keep: live, the rollback target, the canary, the current pointer."""
        if self.record is not None:
            return self.record.protected()
        # on-publish without a record: the version the last publish replaced is not kept from an explicit
        # --prune (as before releases); `rollback` then says it is no longer published.
        return set(self.pointed)

    def pointer(self, final: ModelManifest) -> list[int] | None:
        """The versions the published config's version_policy must name, or None for the local
        repository's own policy (on-publish without a record, or a model new in the region)."""
        if self.record is not None:
            live = live_version(self.mode, self.record, final)
            return [live] if live is not None else []
        keep = [v for v in self.pointed if v in final.versions]
        return keep or None


def publish_release(
    store: ObjectStore,
    mode: ReleaseMode,
    model: str,
    published: bool,
    listed: Container[str] | None = None,
) -> PublishRelease:
    """One GET (the record), plus the remote config in explicit mode for a model without a record.

    ``listed``: the keys a LIST of the prefix just returned (a first sync); a record absent from
    it costs no GET."""
    absent = listed is not None and record_key(model) not in listed
    rec = None if absent else read_record(store, model)
    pointed: list[int] = []
    if rec is None and mode is ReleaseMode.explicit and published:
        raw = store.get(f"{model}/{CONFIG_NAME}")
        pointed = config_pointer(raw.decode("utf-8", "replace")) if raw else []
    return PublishRelease(mode, rec, pointed)
