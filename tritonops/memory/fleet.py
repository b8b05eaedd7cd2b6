"""Footprints measured once per fleet: the ledger's measurements travel through the region's bucket.

Each measurement is its own object at the root of the region's repository prefix,
``tritonops-footprint.<key hash>.<sample hash>.json`` (Triton takes only folders for models, and
``sync`` only keys under a model folder, so neither sees them). Objects are written once and never
rewritten, so two reconcilers measuring at the same time cannot lose each other's records: the merge
is a union. ``pull`` lists the prefix once and reads only the objects this ledger has not imported.
Every read and write goes through the ``ObjectStore``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tritonops.errors import StoreError
from tritonops.fileio import sha256_bytes
from tritonops.memory.ledger import FootprintLedger
from tritonops.store.base import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "tritonops-footprint."
_FIELDS = {"model": str, "digest": str, "device_type": str, "triton_version": str, "footprint_bytes": int}


def object_name(key: str, sample: dict[str, Any]) -> str:
    body = json.dumps(sample, sort_keys=True).encode()
    k = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{PREFIX}{k}.{hashlib.sha256(body).hexdigest()[:16]}.json"


def _valid(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and all(isinstance(doc.get(f), t) for f, t in _FIELDS.items())
        and (doc.get("version") is None or isinstance(doc.get("version"), int))
        and doc["footprint_bytes"] >= 0
    )


class FleetFootprints:
    """Shares a ledger's measurements with every reconciler of a region through its bucket."""

    def __init__(self, store: ObjectStore, workers: int = 16) -> None:
        self.store = store
        self.workers = workers

    def push(self, key: str, sample: dict[str, Any]) -> str:
        """Write one measurement; returns its object name."""
        body = json.dumps(sample, sort_keys=True).encode()
        name = object_name(key, sample)
        self.store.put_bytes(name, body, sha256_bytes(body))
        return name

    def pull(self, ledger: FootprintLedger) -> int:
        """Import every measurement of the fleet this ledger has not seen; returns how many were new."""
        seen = ledger.imported()
        names = [o.key for o in self.store.list(PREFIX) if o.key not in seen]
        if not names:
            return 0

        def get(name: str) -> tuple[str, Any]:
            raw = self.store.get(name)
            try:
                return name, json.loads(raw) if raw is not None else None
            except ValueError:
                return name, None

        with ThreadPoolExecutor(min(self.workers, len(names)), thread_name_prefix="fleet-pull") as pool:
            docs = list(pool.map(get, names))
        good = [(n, d) for n, d in docs if _valid(d)]
        for n, _ in (x for x in docs if not _valid(x[1])):
            log.warning("%s/%s: not a footprint record; ignored", self.store.url, n)
        added = ledger.merge_samples(good)
        bad = [n for n, d in docs if not _valid(d)]
        if bad:
            ledger.mark_imported(bad)
        return added

    def attach(self, ledger: FootprintLedger) -> int:
        """Pull what the fleet measured, then share every new measurement of ``ledger``. A store that
        cannot be read leaves the ledger local (logged): footprints are measured again, nothing breaks."""
        ledger.on_record = self.push
        try:
            return self.pull(ledger)
        except StoreError as e:
            log.warning("footprints of the fleet not read (%s): measuring locally", e)
            return 0
