"""A region's release record: which published version of a model is live there, and what it may not be.

One small JSON object per model in the region's own bucket, ``<prefix>/tritonops-releases/<model>.json``,
read by reconcile (every run, so a canary override survives a Triton restart) and written only by
promote, rollback and the rollout controller (never by sync):

    live        the version every server of the region should serve
    previous    the version live before it: the rollback target, never pruned
    canary      {version, servers}: those servers serve ``version`` instead of ``live``
    blocked     version digest -> why: never promoted again (a digest is the version's bytes)
    watermark   the highest version published when the record was last written (on-publish mode:
                a version above it is a new publish, and publishing releases it)
    rollout     what a rollout controller is doing here (id, version, step), for status readers
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tritonops.errors import StoreError, TritonOpsError
from tritonops.fileio import sha256_bytes, utc_now
from tritonops.store.base import ObjectStore

RELEASES_DIR = "tritonops-releases"
FORMAT_VERSION = 1


class ReleaseError(TritonOpsError):
    """A promote, rollback or rollout is refused (unknown version, blocked digest, incomplete objects)."""


def record_key(model: str) -> str:
    return f"{RELEASES_DIR}/{model}.json"


@dataclass
class Canary:
    version: int
    servers: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "servers": sorted(self.servers)}


@dataclass
class ReleaseRecord:
    model: str
    live: int | None = None
    previous: int | None = None
    canary: Canary | None = None
    blocked: dict[str, str] = field(default_factory=dict)
    watermark: int = 0
    rollout: dict[str, Any] | None = None
    updated: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "live": self.live,
            "previous": self.previous,
            "canary": self.canary.to_json() if self.canary else None,
            "blocked": dict(sorted(self.blocked.items())),
            "watermark": self.watermark,
            "rollout": self.rollout,
            "updated": self.updated,
        }

    def digest(self) -> str:
        """Of what decides desired state (not ``updated``): part of reconcile's plan fingerprint."""
        d = self.to_json()
        d.pop("updated")
        d.pop("rollout")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def protected(self) -> set[int]:
        """Versions retention must keep in this region: live, the rollback target, the canary."""
        out = {v for v in (self.live, self.previous) if v is not None}
        if self.canary is not None:
            out.add(self.canary.version)
        return out

    @classmethod
    def from_json(cls, d: Any, source: str) -> ReleaseRecord:
        try:
            if not isinstance(d, dict) or d.get("format_version") != FORMAT_VERSION:
                raise ValueError("format_version: unsupported or missing")
            c = d.get("canary")
            return cls(
                model=str(d["model"]),
                live=None if d.get("live") is None else int(d["live"]),
                previous=None if d.get("previous") is None else int(d["previous"]),
                canary=Canary(int(c["version"]), [str(s) for s in c["servers"]]) if c else None,
                blocked={str(k): str(v) for k, v in (d.get("blocked") or {}).items()},
                watermark=int(d.get("watermark") or 0),
                rollout=d.get("rollout"),
                updated=str(d.get("updated", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ReleaseError(f"{source}: not a valid release record ({e})") from None


def read_record(store: ObjectStore, model: str) -> ReleaseRecord | None:
    raw = store.get(record_key(model))
    if raw is None:
        return None
    src = f"{store.url}/{record_key(model)}"
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ReleaseError(f"{src}: not valid JSON ({e})") from None
    rec = ReleaseRecord.from_json(doc, src)
    if rec.model != model:
        raise ReleaseError(f"{src}: record is for model {rec.model!r}")
    return rec


def read_records(store: ObjectStore) -> tuple[dict[str, ReleaseRecord], list[str]]:
    """Every record in the region (one LIST, one GET per record); unreadable ones are problems."""
    out: dict[str, ReleaseRecord] = {}
    problems: list[str] = []
    for o in store.list(RELEASES_DIR + "/"):
        name = o.key[len(RELEASES_DIR) + 1 :]
        if "/" in name or not name.endswith(".json"):
            continue
        model = name[: -len(".json")]
        try:
            rec = read_record(store, model)
        except (ReleaseError, StoreError) as e:
            problems.append(str(e))
            continue
        if rec is not None:
            out[model] = rec
    return out, problems


def write_record(store: ObjectStore, rec: ReleaseRecord) -> None:
    rec.updated = utc_now()
    data = (json.dumps(rec.to_json(), indent=2, sort_keys=True) + "\n").encode()
    store.put_bytes(record_key(rec.model), data, sha256_bytes(data))
