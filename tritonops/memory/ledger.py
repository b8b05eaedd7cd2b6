"""The footprint ledger: measured memory per (model, version digest, device type, Triton version).

A JSON file (default ``<state_dir>/footprints.json``), rewritten atomically under an exclusive
``flock`` so concurrent tritonops processes never lose each other's records.

``predict`` returns the measured footprint when one exists for exactly that key (median of the last
samples), else a first guess: ``size_bytes * ESTIMATE_MULTIPLIER + ESTIMATE_BASE_BYTES``
(:func:`estimate_bytes`, the one estimate: reconcile's fallback when no probe answers uses it too). The
multiplier (2.0, not the 1.25 other managers use) covers weights expanded in memory, framework
workspaces and allocator slack; the base covers the per-instance process cost measured for a
python-backend stub (see README). Both are guesses, and are reported as ``source="estimate"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.errors import MemoryProbeError, TritonError
from tritonops.fileio import atomic_write_bytes, utc_now
from tritonops.memory.host_probe import served_stub_names
from tritonops.memory.probes import HOST_DEVICE, HostProbe, MemoryProbe, StubUsage, settle, usage
from tritonops.triton.client import LOADS, ControlClient, UnloadResult, UnloadTimeout, load_args

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LEDGER_NAME = "footprints.json"
ESTIMATE_MULTIPLIER = 2.0
# A python-backend stub with numpy imported costs about 37 MiB RSS before the model allocates
# anything (measured on the local stack, see README); 64 MiB leaves room for other backends' runtimes.
ESTIMATE_BASE_BYTES = 64 << 20
SAMPLES_KEPT = 5
HISTORY_KEPT = 200
UNKNOWN_DIGEST = "unknown"


@dataclass(frozen=True)
class Prediction:
    bytes: int
    source: str  # "measured" | "estimate"


@dataclass
class LoadResult:
    model: str
    version: int | None
    footprint_bytes: int
    predicted: Prediction
    seconds: float
    per_device_bytes: dict[str, int] = field(default_factory=dict)
    joined: bool = False  # True when this call waited for a load already in flight instead of loading
    measured: bool = True  # False for a reload of a model already loaded (nothing recorded)
    from_ledger: bool = False  # True when the footprint was known: loaded without measuring, nothing settled

    @property
    def error_ratio(self) -> float | None:
        """(predicted - measured) / measured; None when nothing was measured."""
        if self.footprint_bytes <= 0 or not self.measured:
            return None
        return (self.predicted.bytes - self.footprint_bytes) / self.footprint_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "footprint_bytes": self.footprint_bytes,
            "predicted_bytes": self.predicted.bytes,
            "predicted_source": self.predicted.source,
            "error_ratio": self.error_ratio,
            "seconds": round(self.seconds, 3),
            "per_device_bytes": self.per_device_bytes,
            "joined": self.joined,
            "measured": self.measured,
            "from_ledger": self.from_ledger,
        }


def _key(model: str, version: int | None, digest: str | None, device_type: str, triton_version: str) -> str:
    return "|".join([model, str(version if version is not None else "-"), digest or UNKNOWN_DIGEST,
                     device_type, triton_version])  # fmt: skip


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
        for k, empty in (("footprints", {}), ("loads", []), ("leaks", {}), ("servers", {}), ("unmeasured", {})):
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
        model: str,
        version: int | None,
        digest: str | None,
        device_type: str,
        triton_version: str,
        footprint_bytes: int,
        *,
        predicted: Prediction | None = None,
        server: str | None = None,
        per_device_bytes: dict[str, int] | None = None,
        size_bytes: int | None = None,
    ) -> None:
        """Store one measured load; also the load's predicted-vs-measured error and what the server holds."""
        key = _key(model, version, digest, device_type, triton_version)
        now = utc_now()
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

    def hold(self, server: str, model: str, version: int, key: str, footprint_bytes: int) -> None:
        """Record that ``server`` holds this model version with a footprint known from an earlier measurement."""
        with self._edit() as d:
            d["servers"].setdefault(server, {}).setdefault(model, {})[str(version)] = {
                "key": key, "footprint_bytes": int(footprint_bytes), "per_device_bytes": {},
                "loaded": utc_now(), "from_ledger": True,
            }  # fmt: skip

    def record_unmeasured(
        self, server: str, model: str, version: int, key_parts: tuple[str | None, str, str], footprint_bytes: int,
        error: str,
    ) -> None:
        """``server`` holds this model version but its footprint could not be measured: hold it at
        ``footprint_bytes`` (an estimate, see ``memory.unmeasured``), marked so, with the probe's error;
        predictions of the same key use it until a measurement replaces it."""
        digest, device_type, triton_version = key_parts
        key = _key(model, version, digest, device_type, triton_version)
        now = utc_now()
        with self._edit() as d:
            d.setdefault("unmeasured", {})[key] = {
                "model": model, "version": version, "digest": digest or UNKNOWN_DIGEST, "device_type": device_type,
                "triton_version": triton_version, "footprint_bytes": int(footprint_bytes), "error": error,
                "server": server, "time": now,
            }  # fmt: skip
            d["servers"].setdefault(server, {}).setdefault(model, {})[str(version)] = {
                "key": key, "footprint_bytes": int(footprint_bytes), "per_device_bytes": {},
                "loaded": now, "source": "estimate", "error": error,
            }  # fmt: skip

    def holding(self, server: str, model: str, version: int | None) -> dict[str, Any] | None:
        """What ``server`` is recorded to hold of this model version (footprint, and ``source``
        "estimate" where it could not be measured), or None."""
        rec = self._view()["servers"].get(server, {}).get(model, {}).get(str(version))
        return dict(rec) if rec else None

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
                key = _key(x["model"], x["version"], x["digest"], x["device_type"], x["triton_version"])
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

    def measured(
        self, model: str, version: int | None, digest: str | None, device_type: str, triton_version: str
    ) -> int | None:
        e = self._view()["footprints"].get(_key(model, version, digest, device_type, triton_version))
        return int(e["footprint_bytes"]) if e else None

    def predict(
        self,
        model: str,
        version: int | None,
        digest: str | None,
        device_type: str,
        triton_version: str,
        size_bytes: int | None = None,
    ) -> Prediction:
        """The measured footprint for this exact key, else an estimate from ``size_bytes``.

        Without a digest (the caller does not know the content), or without a version (Triton picks
        it), the latest measurement of the model that matches what is known is used.
        """
        _, data, by_model = self._parsed_now()
        e = data["footprints"].get(_key(model, version, digest, device_type, triton_version))
        if e is None and (digest is None or version is None):
            cands = [
                x for x in by_model.get(model, [])
                if x["model"] == model and x["device_type"] == device_type
                and x["triton_version"] == triton_version
                and (version is None or x["version"] == version)
                and (digest is None or x["digest"] == digest)
            ]  # fmt: skip
            e = max(cands, key=lambda x: x.get("updated", ""), default=None)
        if e is not None:
            return Prediction(int(e["footprint_bytes"]), "measured")
        # Loaded once with its probe blind: the estimate it was held at (margin included), not the first guess.
        u = [x for x in data.get("unmeasured", {}).values() if x["model"] == model and x["device_type"] == device_type
             and x["triton_version"] == triton_version and (version is None or x["version"] == version)
             and (digest is None or x["digest"] == digest)]  # fmt: skip
        if u:
            return Prediction(int(max(u, key=lambda x: str(x["time"]))["footprint_bytes"]), "estimate")
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


def estimate_bytes(size_bytes: int) -> int:
    """The first guess for a model never measured: on-disk size x multiplier + per-instance base."""
    return int(size_bytes * ESTIMATE_MULTIPLIER) + ESTIMATE_BASE_BYTES


# -- measured loads ----------------------------------------------------------------------------------

# Device locks are not a second registry of loads in flight (that is ``triton.client.LOADS``): they
# keep a measurement on one device apart from every other load there, so one's memory delta is not
# the other's. Loads of models whose footprint is known take the lock shared: they measure nothing.
class DeviceLock:
    """A readers-writer lock that prefers writers: a measurement waits only for the loads in flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire(self, shared: bool) -> None:
        with self._cond:
            if shared:
                while self._writer or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
                return
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True

    def release(self, shared: bool) -> None:
        with self._cond:
            if shared:
                self._readers -= 1
            else:
                self._writer = False
            self._cond.notify_all()


_device_locks_guard = threading.Lock()
_device_locks: dict[str, DeviceLock] = {}


def _device_lock(name: str) -> DeviceLock:
    with _device_locks_guard:
        return _device_locks.setdefault(name, DeviceLock())


@contextlib.contextmanager
def device_locks(server: str, devices: list[str], *, shared: bool = False) -> Iterator[None]:
    """Hold one lock per device of ``server`` (sorted, so two callers never deadlock); ``shared`` for a
    load that measures nothing, exclusive for a measurement."""
    # GPU and MIG uuids are unique machine-wide: two Tritons sharing a GPU share its lock too.
    names = {d if d.startswith(("GPU-", "MIG-")) else f"{server}/{d}" for d in devices}
    locks = [_device_lock(n) for n in sorted(names)]
    for lk in locks:
        lk.acquire(shared)
    try:
        yield
    finally:
        for lk in reversed(locks):
            lk.release(shared)


def measured_load(
    client: ControlClient,
    probe: MemoryProbe,
    ledger: FootprintLedger,
    model: str,
    *,
    version: int | None = None,
    digest: str | None = None,
    size_bytes: int | None = None,
    config: str | None = None,
    files: dict[str, bytes] | None = None,
    loaded: list[int] | None = None,
) -> LoadResult:
    """Load ``model`` and measure what it costs: usage after it settles minus usage before, per device.

    One load at a time per device of the server (loads on the same GPU would pollute each other's
    measurement and can spike it into OOM); a load of the same model already in flight is joined,
    never issued twice (see ``ControlClient.load``). Records the footprint and the prediction error.
    ``loaded``: the versions of ``model`` the caller knows are loaded (reconcile's plan read them a
    moment ago); None asks Triton, which answers slowly while other models load.
    """
    def load() -> LoadResult:
        return _measured_load(
            client, probe, ledger, model, version, digest, size_bytes, config, files, loaded
        )

    # A measured load joins an equal measured load in flight; a plain one in flight is waited for.
    res, joined = LOADS.run(
        (client.key, model), load_args(config, files), load, accept=lambda r: isinstance(r, LoadResult)
    )
    if joined:
        log.info("server %s: measured load of model %r was in flight; joined it", client.name, model)
        return dataclasses.replace(res, joined=True)
    return res


def _ready_version(client: ControlClient, model: str, version: int | None) -> int:
    """The version a load made READY (``version`` itself when given); TritonError when it is not READY."""
    loaded = client.loaded_versions(model)
    if not loaded:
        states = ", ".join(f"v{m.version}={m.state} {m.reason}".strip() for m in client.model_states(model))
        raise TritonError(f"server {client.url}: model {model!r} not READY after load ({states or 'not listed'})")
    if version is None:
        return max(loaded)
    if version not in loaded:
        raise TritonError(f"server {client.url}: model {model!r} version {version} not READY (ready: {loaded})")
    return version


def _known_load(
    client: ControlClient,
    ledger: FootprintLedger,
    model: str,
    version: int,
    digest: str,
    device_type: str,
    triton_version: str,
    known_bytes: int,
    config: str | None,
    files: dict[str, bytes] | None,
    devices: list[str],
    t0: float,
) -> LoadResult:
    """A load whose footprint the ledger knows for this exact key: nothing to measure, so no settling and
    no exclusive device lock (it only waits while a measurement is in flight on the same devices)."""
    with device_locks(client.key, devices, shared=True):
        client.load(model, config=config, files=files)
    _ready_version(client, model, version)
    ledger.hold(client.name, model, version, _key(model, version, digest, device_type, triton_version), known_bytes)
    log.info("server %s: model %r v%s loaded; footprint %d bytes known from the ledger",
             client.name, model, version, known_bytes)  # fmt: skip
    pred = Prediction(known_bytes, "measured")
    return LoadResult(model, version, known_bytes, pred, time.monotonic() - t0, {}, measured=False, from_ledger=True)


def python_backend(config: str | None) -> bool:
    """Whether a load-time config (JSON) runs the model on the python backend (in stub processes)."""
    if not config:
        return False
    try:
        c = json.loads(config)
    except ValueError:
        return False
    return isinstance(c, dict) and c.get("backend") == "python"


def _stub_load(
    client: ControlClient,
    probe: HostProbe,
    ledger: FootprintLedger,
    model: str,
    version: int | None,
    digest: str | None,
    size_bytes: int | None,
    config: str | None,
    files: dict[str, bytes] | None,
    devices: list[str],
    keys: tuple[str, str, float],
) -> LoadResult:
    """A python-backend model on the host probe, loaded fresh, is measured from its own stub processes
    rather than from a before/after delta: no settle before, and it loads beside other loads (the
    shared device lock only keeps it out of another load's before/after measurement)."""
    device_type, triton_version, t0 = keys
    predicted = ledger.predict(model, version, digest, device_type, triton_version, size_bytes)
    earlier = probe.stub_pids()  # the stubs this load starts are the others
    with device_locks(client.key, devices, shared=True):
        client.load(model, config=config, files=files)
    version = _ready_version(client, model, version)
    about = f"server {client.url} model {model!r}"
    names = served_stub_names(client, model, version)  # the instance names Triton gave its stubs
    footprint = settle(StubUsage(probe, model, names, earlier), about=about).reading[HOST_DEVICE]
    per_device = {HOST_DEVICE: footprint}
    ledger.record(
        model, version, digest, device_type, triton_version, footprint,
        predicted=predicted, server=client.name, per_device_bytes=per_device, size_bytes=size_bytes,
    )  # fmt: skip
    log.info("server %s: model %r v%s footprint %d bytes (its stub processes), predicted %d (%s)",
             client.name, model, version, footprint, predicted.bytes, predicted.source)  # fmt: skip
    return LoadResult(model, version, footprint, predicted, time.monotonic() - t0, per_device)


def _measured_load(
    client: ControlClient,
    probe: MemoryProbe,
    ledger: FootprintLedger,
    model: str,
    version: int | None,
    digest: str | None,
    size_bytes: int | None,
    config: str | None,
    files: dict[str, bytes] | None,
    loaded: list[int] | None = None,
) -> LoadResult:
    t0 = time.monotonic()
    triton_version = client.triton_version()
    device_type = probe.device_type()
    devices = sorted(probe.usage())
    if digest and version is not None:
        known = ledger.measured(model, version, digest, device_type, triton_version)
        if known is not None:
            return _known_load(client, ledger, model, version, digest, device_type, triton_version, known,
                               config, files, devices, t0)  # fmt: skip
    if loaded is None:
        loaded = client.loaded_versions(model)
    if isinstance(probe, HostProbe) and python_backend(config) and not loaded:
        keys = (device_type, triton_version, t0)
        return _stub_load(client, probe, ledger, model, version, digest, size_bytes, config, files, devices, keys)
    with device_locks(client.key, devices):
        predicted = ledger.predict(model, version, digest, device_type, triton_version, size_bytes)
        # A reload swaps the old instance for the new one: the difference says nothing about its size.
        already = loaded
        before = settle(probe, about=f"server {client.url}").reading
        client.load(model, config=config, files=files)
        after = settle(probe, about=f"server {client.url}").reading
    version = _ready_version(client, model, version)
    per_device = {d: after.get(d, 0) - before.get(d, 0) for d in sorted(set(before) | set(after))}
    footprint = max(0, sum(per_device.values()))
    # A version loaded beside the ones already serving (an availability-preserving switch) is new:
    # the delta is its footprint. Only a reload of a version already loaded measures nothing.
    if already and version in already:
        log.warning(
            "server %s: model %r was already loaded (v%s): reloaded, footprint not measured",
            client.name, model, already,
        )  # fmt: skip
        return LoadResult(model, version, 0, predicted, time.monotonic() - t0, {}, measured=False)
    ledger.record(
        model, version, digest, device_type, triton_version, footprint,
        predicted=predicted, server=client.name, per_device_bytes=per_device, size_bytes=size_bytes,
    )  # fmt: skip
    result = LoadResult(model, version, footprint, predicted, time.monotonic() - t0, per_device)
    log.info(
        "server %s: model %r v%s footprint %d bytes, predicted %d (%s), error %s",
        client.name, model, version, footprint, predicted.bytes, predicted.source,
        f"{result.error_ratio:+.1%}" if result.error_ratio is not None else "n/a",
    )  # fmt: skip
    return result


@dataclass
class MeasuredUnload(UnloadResult):
    """An unload and the memory it gave back, per probe device."""

    before_bytes: dict[str, int] = field(default_factory=dict)
    after_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def released_bytes(self) -> int:
        return sum(self.before_bytes.get(d, 0) - self.after_bytes.get(d, 0) for d in self.before_bytes)


def unload_and_wait(
    client: ControlClient,
    probe: MemoryProbe,
    model: str,
    *,
    unload_dependents: bool = False,
    timeout_s: float = 120.0,
    expect_release_bytes: int | None = None,
) -> MeasuredUnload:
    """Unload ``model``; return when the index no longer lists it AND its memory is back (usage
    settled, and dropped by at least 90% of ``expect_release_bytes`` when known). Raises
    ``UnloadTimeout`` after ``timeout_s`` otherwise, saying which of the two did not happen."""
    t0 = time.monotonic()
    about = f"server {client.url}"
    before = usage(probe, about)
    client.unload(model, unload_dependents=unload_dependents)
    client.wait_unloaded(model, t0 + timeout_s, t0)
    need = 0.9 * expect_release_bytes if expect_release_bytes else None

    def back(now: dict[str, int]) -> bool:
        return need is None or sum(before.get(d, 0) - now.get(d, 0) for d in before) >= need

    left = max(0.0, t0 + timeout_s - time.monotonic())
    after = settle(probe, timeout_s=left, until=back, about=about)
    result = MeasuredUnload(model, time.monotonic() - t0, before, after.reading)
    if not after.settled:
        if need is not None and result.released_bytes < need:
            what = f"released {result.released_bytes} of {expect_release_bytes} bytes"
        else:
            what = "memory still falling"
        raise UnloadTimeout(
            f"{about}: model {model!r} unloaded but memory not back after {timeout_s:g}s ({what})",
            still_loaded=False,
            result=result,
        )
    return result


def measured_unload(
    client: ControlClient,
    probe: MemoryProbe,
    ledger: FootprintLedger,
    model: str,
    *,
    unload_dependents: bool = False,
    timeout_s: float = 120.0,
) -> MeasuredUnload:
    """Unload ``model`` and wait until the index and the memory say it is gone.

    Memory the measured load added that did not come back is recorded as leaked for the server.
    """
    # Only what the server's index shows loaded now: records of a restarted server are stale.
    ready = set(client.loaded_versions(model))
    held = ledger.data()["servers"].get(client.name, {}).get(model, {})
    expect = sum(int(r["footprint_bytes"]) for v, r in held.items() if int(v) in ready) or None
    try:
        res = unload_and_wait(
            client, probe, model, unload_dependents=unload_dependents, timeout_s=timeout_s,
            expect_release_bytes=expect,
        )  # fmt: skip
    except UnloadTimeout as e:
        if not e.still_loaded and expect and isinstance(e.result, MeasuredUnload):
            leaked = max(0, expect - e.result.released_bytes)
            ledger.record_leak(client.name, model, leaked)
            ledger.forget_load(client.name, model)
        raise
    ledger.forget_load(client.name, model)
    return res
