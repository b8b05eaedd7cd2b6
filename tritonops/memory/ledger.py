"""The footprint ledger: measured memory per (model, version digest, device type, Triton version).

A JSON file (default ``<state_dir>/footprints.json``), rewritten atomically under an exclusive
``flock`` so concurrent tritonops processes never lose each other's records.

Every footprint is keyed by one :class:`FootprintKey` (model, version, digest, device type, Triton
version). ``predict`` returns the measured footprint when one exists for exactly that key (median of
the last samples), else a first guess: ``size_bytes * ESTIMATE_MULTIPLIER + ESTIMATE_BASE_BYTES``
(:func:`tritonops.memory.estimate.estimate_bytes`, the one estimate: reconcile's fallback when no
probe answers uses it too), reported as ``source="estimate"``.

Loads that measure what they cost, and the device locks that keep measurements apart, are in
:mod:`tritonops.memory.loads`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import statistics
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonops.errors import MemoryProbeError
from tritonops.fileio import atomic_write_bytes, utc_now
from tritonops.memory.estimate import ESTIMATE_BASE_BYTES, ESTIMATE_MULTIPLIER, estimate_bytes

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LEDGER_NAME = "footprints.json"
SAMPLES_KEPT = 5
HISTORY_KEPT = 200
UNKNOWN_DIGEST = "unknown"


@dataclass(frozen=True)
class Prediction:
    bytes: int
    source: str  # "measured" | "estimate"


@dataclass(frozen=True)
class FootprintKey:
    """What one footprint is measured for. A field None is not known to the reader (``predict`` then
    takes the latest measurement that matches what is known): the version when Triton picks it, the
    digest when the content is not known, the device type and Triton version for a reader that
    plans for no fleet in particular (the capacity planner). A measurement knows them all."""

    model: str
    version: int | None
    digest: str | None
    device_type: str | None
    triton_version: str | None

    @property
    def text(self) -> str:
        """The key in the ledger's file."""
        version = str(self.version if self.version is not None else "-")
        return "|".join([self.model, version, self.digest or UNKNOWN_DIGEST, self.device_type or "*",
                         self.triton_version or "*"])  # fmt: skip

    @property
    def partial(self) -> bool:
        return None in (self.version, self.digest, self.device_type, self.triton_version)

    def matches(self, entry: dict[str, Any]) -> bool:
        """Whether a ledger entry was measured for what this key knows."""
        return (
            entry["model"] == self.model
            and (self.device_type is None or entry["device_type"] == self.device_type)
            and (self.triton_version is None or entry["triton_version"] == self.triton_version)
            and (self.version is None or entry["version"] == self.version)
            and (self.digest is None or entry["digest"] == self.digest)
        )  # fmt: skip


class FootprintLedger:
    """Durable measured footprints, load history (predicted vs measured), leaks and what each server holds."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._tlock = threading.Lock()
        # (file identity, contents, footprint entries by model): see _view
        self._parsed: tuple[tuple[int, int, int], dict[str, Any], dict[str, list[dict[str, Any]]]] | None = None
        # Called with (key, sample) after each measurement is stored; returns the sample's name where it
        # was shared (``memory.fleet`` puts it in the region's bucket), so a later import skips it.
        self.on_record: Callable[[str, dict[str, Any]], str | None] | None = None

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> FootprintLedger:
        return cls(Path(state_dir) / LEDGER_NAME)

    # -- storage ---------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {
                "format_version": FORMAT_VERSION,
                "footprints": {},
                "loads": [],
                "leaks": {},
                "servers": {},
            }
        except ValueError as e:
            raise MemoryProbeError(f"{self.path}: footprint ledger is not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise MemoryProbeError(f"{self.path}: format_version: unsupported {data.get('format_version')!r}")
        for k, empty in (("footprints", {}), ("loads", []), ("leaks", {}), ("servers", {})):
            data.setdefault(k, empty)
        return data

    def _view(self) -> dict[str, Any]:
        """The ledger to read, never to change: parsed again only when the file changed. A reconcile asks
        for a prediction per model and per model loaded on each server (11,000 for 1,000 models on 10
        servers), and parsing a 3 MB ledger each time took 16 ms. Every write replaces the file (a new
        inode), another process's writes included, so its identity tells when to parse again."""
        return self._parsed_now()[1]

    def _parsed_now(self) -> tuple[tuple[int, int, int], dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """(file identity, the view, its footprint entries by model: a prediction without a version or a
        digest picks among the model's entries, not the whole ledger's)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0), self._read(), {}
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._parsed
        if cached is not None and cached[0] == ident:
            return cached
        data = self._read()  # read after the stat: at least as new as ``ident``
        by_model: dict[str, list[dict[str, Any]]] = {}
        for e in data["footprints"].values():
            by_model.setdefault(str(e.get("model")), []).append(e)
        self._parsed = (ident, data, by_model)
        return self._parsed

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._tlock, open(self._lock_path, "a+") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                data = self._read()
                yield data
                atomic_write_bytes(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    def data(self) -> dict[str, Any]:
        return self._read()

    # -- footprints ------------------------------------------------------------------------------

    def record(
        self,
        fkey: FootprintKey,
        footprint_bytes: int,
        *,
        predicted: Prediction | None = None,
        server: str | None = None,
        per_device_bytes: dict[str, int] | None = None,
        size_bytes: int | None = None,
    ) -> None:
        """Store one measured load; also the load's predicted-vs-measured error and what the server holds."""
        if fkey.device_type is None or fkey.triton_version is None:
            raise ValueError(f"model {fkey.model!r}: a measurement needs its device type and Triton version")
        key, now = fkey.text, utc_now()
        model, version, digest = fkey.model, fkey.version, fkey.digest
        device_type, triton_version = fkey.device_type, fkey.triton_version
        with self._edit() as d:
            e = d["footprints"].setdefault(
                key,
                {"model": model, "version": version, "digest": digest or UNKNOWN_DIGEST,
                 "device_type": device_type, "triton_version": triton_version, "samples": []},
            )  # fmt: skip
            e["samples"] = (e["samples"] + [int(footprint_bytes)])[-SAMPLES_KEPT:]
            e["footprint_bytes"] = int(statistics.median(e["samples"]))
            e["updated"] = now
            if size_bytes is not None:
                e["size_bytes"] = int(size_bytes)
            row = {
                "time": now, "model": model, "version": version, "server": server,
                "measured_bytes": int(footprint_bytes),
                "predicted_bytes": predicted.bytes if predicted else None,
                "predicted_source": predicted.source if predicted else None,
                "error_ratio": (predicted.bytes - footprint_bytes) / footprint_bytes
                if predicted and footprint_bytes > 0 else None,
            }  # fmt: skip
            d["loads"] = (d["loads"] + [row])[-HISTORY_KEPT:]
            if server is not None and version is not None:
                d["servers"].setdefault(server, {}).setdefault(model, {})[str(version)] = {
                    "key": key, "footprint_bytes": int(footprint_bytes),
                    "per_device_bytes": per_device_bytes or {}, "loaded": now,
                }  # fmt: skip
        if self.on_record is not None:
            sample = {
                "model": model, "version": version, "digest": digest or UNKNOWN_DIGEST,
                "device_type": device_type, "triton_version": triton_version,
                "footprint_bytes": int(footprint_bytes), "size_bytes": size_bytes, "time": now,
                "server": server,
            }  # fmt: skip
            try:
                name = self.on_record(key, sample)
            except Exception as e:  # noqa: BLE001 - sharing is best effort; the local record stands
                log.warning("footprint of model %r not shared with the fleet: %s", model, e)
                name = None
            if name:
                self.mark_imported([name])

    def hold(self, server: str, fkey: FootprintKey, footprint_bytes: int) -> None:
        """Record that ``server`` holds this model version with a footprint known from an earlier measurement."""
        with self._edit() as d:
            d["servers"].setdefault(server, {}).setdefault(fkey.model, {})[str(fkey.version)] = {
                "key": fkey.text, "footprint_bytes": int(footprint_bytes), "per_device_bytes": {},
                "loaded": utc_now(), "from_ledger": True,
            }  # fmt: skip

    # -- samples shared by the fleet (see ``memory.fleet``) --------------------------------------

    # The names of imported samples live beside the ledger (one a line, appended), not in it: the ledger
    # is read on every prediction, and a fleet's list of names only grows.
    @property
    def _imported_path(self) -> Path:
        return self.path.with_name(self.path.name + ".imported")

    def imported(self) -> set[str]:
        try:
            return set(self._imported_path.read_text(encoding="utf-8").split())
        except FileNotFoundError:
            return set()

    def _append_imported(self, names: list[str]) -> None:
        if names:
            with open(self._imported_path, "a", encoding="utf-8") as f:
                f.write("".join(n + "\n" for n in names))

    def mark_imported(self, names: list[str]) -> None:
        with self._edit():
            self._append_imported(sorted(set(names) - self.imported()))

    def merge_samples(self, samples: list[tuple[str, dict[str, Any]]]) -> int:
        """Add samples measured elsewhere (name, sample); each name once. Returns how many were new."""
        new: list[str] = []
        with self._edit() as d:
            seen = self.imported()
            for name, x in samples:
                if name in seen:
                    continue
                seen.add(name)
                new.append(name)
                key = FootprintKey(x["model"], x["version"], x["digest"], x["device_type"], x["triton_version"]).text
                e = d["footprints"].setdefault(
                    key,
                    {"model": x["model"], "version": x["version"], "digest": x["digest"],
                     "device_type": x["device_type"], "triton_version": x["triton_version"], "samples": []},
                )  # fmt: skip
                e["samples"] = (e["samples"] + [int(x["footprint_bytes"])])[-SAMPLES_KEPT:]
                e["footprint_bytes"] = int(statistics.median(e["samples"]))
                e["updated"] = max(str(e.get("updated", "")), str(x.get("time", "")))
                if x.get("size_bytes") is not None:
                    e["size_bytes"] = int(x["size_bytes"])
            self._append_imported(new)
        return len(new)

    def measured(self, fkey: FootprintKey) -> int | None:
        """The footprint measured for exactly this key (None if never)."""
        e = self._view()["footprints"].get(fkey.text)
        return int(e["footprint_bytes"]) if e else None

    def predict(self, fkey: FootprintKey, size_bytes: int | None = None) -> Prediction:
        """The measured footprint for this exact key, else an estimate from ``size_bytes``.

        Without a digest (the caller does not know the content), or without a version (Triton picks
        it), the latest measurement of the model that matches what is known is used.
        """
        _, data, by_model = self._parsed_now()
        e = data["footprints"].get(fkey.text)
        if e is None and fkey.partial:
            cands = [x for x in by_model.get(fkey.model, []) if fkey.matches(x)]
            e = max(cands, key=lambda x: x.get("updated", ""), default=None)
        if e is not None:
            return Prediction(int(e["footprint_bytes"]), "measured")
        return Prediction(estimate_bytes(size_bytes or 0), "estimate")

    # -- servers and leaks -----------------------------------------------------------------------

    def server_footprint(self, server: str, model: str, version: int | None) -> int | None:
        """The footprint measured when ``server`` last loaded this model version (None if never)."""
        rec = self._view()["servers"].get(server, {}).get(model, {}).get(str(version))
        return int(rec["footprint_bytes"]) if rec else None

    def forget_load(self, server: str, model: str) -> dict[str, Any]:
        """Drop what ``server`` holds of ``model`` (after an unload); returns the dropped records."""
        with self._edit() as d:
            return dict(d["servers"].get(server, {}).pop(model, {}) or {})

    def reconcile_holdings(
        self, server: str, ready: dict[str, set[int]], as_of: str, only: set[str] | None = None
    ) -> dict[str, list[int]]:
        """Drop what ``server`` is recorded to hold but its index, read at ``as_of``, does not show READY
        (a restarted Triton holds nothing; a version switched away from is gone). Records written at or
        after ``as_of`` are kept: the index may predate them. ``only``: the models ``ready`` speaks for
        (a reading of some models' versions, not the whole index). Returns model -> versions dropped."""

        def stale(d: dict[str, Any]) -> dict[str, list[str]]:
            held = {m: vs for m, vs in d["servers"].get(server, {}).items() if only is None or m in only}
            out = {m: [v for v, rec in sorted(vs.items()) if int(v) not in ready.get(m, set())
                       and str(rec.get("loaded", "")) < as_of] for m, vs in held.items()}  # fmt: skip
            return {m: vs for m, vs in out.items() if vs}

        if not stale(self._view()):
            return {}  # the common case: no write, no lock
        with self._edit() as d:
            drop = stale(d)
            held = d["servers"].get(server, {})
            for m, vs in drop.items():
                for v in vs:
                    held[m].pop(v, None)
                if not held[m]:
                    del held[m]
        log.info("server %s: ledger holdings no longer loaded, dropped: %s", server, drop)
        return {m: [int(v) for v in vs] for m, vs in drop.items()}

    def record_leak(self, server: str, model: str, leaked_bytes: int) -> None:
        with self._edit() as d:
            s = d["leaks"].setdefault(server, {"leaked_bytes": 0, "events": []})
            s["leaked_bytes"] = int(s["leaked_bytes"]) + int(leaked_bytes)
            s["events"] = (s["events"] + [{"time": utc_now(), "model": model, "bytes": int(leaked_bytes)}])[
                -HISTORY_KEPT:
            ]

    def leaked_bytes(self, server: str) -> int:
        return int(self._view()["leaks"].get(server, {}).get("leaked_bytes", 0))

    def load_history(self, model: str | None = None) -> list[dict[str, Any]]:
        rows = self._read()["loads"]
        return [r for r in rows if model is None or r["model"] == model]


__all__ = [
    "ESTIMATE_BASE_BYTES",
    "ESTIMATE_MULTIPLIER",
    "FootprintKey",
    "FootprintLedger",
    "Prediction",
    "estimate_bytes",
]
