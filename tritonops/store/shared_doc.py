"""JSON documents that controllers on several hosts share: one object in a bucket, written only with
conditional writes, so a controller never overwrites a version it did not read (docs/multi-host.md).

The rollout controller keeps its state here, in the bucket of the rollout's home region (the first
region of its first step), so a rollout started on one host is advanced from another after the first
host and its state dir are gone. The lease per model keeps two controllers from writing at once; the
ETag condition catches what a lease cannot (a holder paused past its expiry, then writing).
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from tritonops.errors import StoreError
from tritonops.store.base import ConditionalStore, PreconditionFailed

if TYPE_CHECKING:
    from tritonops.config import Config

ROLLOUTS_DIR = "tritonops-rollouts"

# (store url, key) -> the ETag last read or written by this process: what the next save must name.
_ETAGS: dict[tuple[str, str], str] = {}
_LOCK = threading.Lock()


def rollout_key(model: str) -> str:
    return f"{ROLLOUTS_DIR}/{model}.json"


class SharedDoc:
    """One document; ``load`` remembers its ETag, ``save`` replaces only that version (or creates it)."""

    def __init__(self, store: ConditionalStore, key: str) -> None:
        self.store, self.key = store, key

    @property
    def where(self) -> str:
        return f"{self.store.url}/{self.key}"

    def load(self) -> dict[str, Any] | None:
        v = self.store.get_versioned(self.key)
        with _LOCK:
            if v is None:
                _ETAGS.pop((self.store.url, self.key), None)
                return None
            _ETAGS[(self.store.url, self.key)] = v.etag
        try:
            doc = json.loads(v.data)
        except ValueError as e:
            raise StoreError(f"{self.where}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise StoreError(f"{self.where}: not a JSON object")
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        k = (self.store.url, self.key)
        with _LOCK:
            etag = _ETAGS.get(k)
        try:
            new = self.store.put_if_match(self.key, data, etag) if etag else self.store.put_if_absent(self.key, data)
        except PreconditionFailed:
            raise StoreError(
                f"{self.where}: changed by another controller since this one read it; nothing written "
                "(run the command again: it reads the new state)"
            ) from None
        with _LOCK:
            _ETAGS[k] = new


def shared_doc(cfg: Config, region: str, key: str) -> SharedDoc | None:
    """The document in ``region``'s bucket; None where the store holds no lease (``lease.enabled`` off,
    or ``lease.on_unsupported: local``): the state dir then stays the only copy, as on one host."""
    from tritonops.store.lease import conditional_store

    store = conditional_store(cfg, region)
    return None if store is None else SharedDoc(store, key)


def list_docs(cfg: Config, region: str, prefix: str) -> list[str]:
    """Keys of the shared documents under ``prefix`` in ``region``'s bucket (none without leases)."""
    from tritonops.store import open_store

    if not cfg.lease.enabled:
        return []
    store = open_store(cfg.region(region), region, max_workers=2)
    try:
        return [o.key for o in store.list(prefix)]
    finally:
        store.close()


def shared_names(cfg: Config, region: str) -> list[str]:
    """Models with a rollout state document in ``region``'s bucket."""
    keys = list_docs(cfg, region, ROLLOUTS_DIR + "/")
    return sorted(k[len(ROLLOUTS_DIR) + 1 : -len(".json")] for k in keys if k.endswith(".json") and k.count("/") == 1)
