"""Measured loads and unloads: load a model and record what it costs in memory, unload it and wait
until its memory is back; and the device locks that keep one measurement apart from other loads.

The footprints themselves live in the ledger (:mod:`tritonops.memory.ledger`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tritonops.errors import TritonError
from tritonops.memory.ledger import FootprintKey, FootprintLedger, Prediction
from tritonops.memory.probes import HOST_DEVICE, HostProbe, MemoryProbe, StubUsage, settle, usage
from tritonops.triton.client import LOADS, ControlClient, UnloadResult, UnloadTimeout, load_args

# The ledger's logger: these lines were always the ledger's, and operators filter on it.
log = logging.getLogger("tritonops.memory.ledger")


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
    req = _Load(model, version, digest, size_bytes, config, files)

    def load() -> LoadResult:
        return _measured_load(client, probe, ledger, req, loaded)

    # A measured load joins an equal measured load in flight; a plain one in flight is waited for.
    res, joined = LOADS.run(
        (client.key, model), load_args(config, files), load, accept=lambda r: isinstance(r, LoadResult)
    )
    if joined:
        log.info("server %s: measured load of model %r was in flight; joined it", client.name, model)
        return dataclasses.replace(res, joined=True)
    return res


@dataclass(frozen=True)
class _Load:
    """What one measured load was asked to load, and what the caller knows of it."""

    model: str
    version: int | None
    digest: str | None
    size_bytes: int | None
    config: str | None
    files: dict[str, bytes] | None


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


def python_backend(config: str | None) -> bool:
    """Whether a load-time config (JSON) runs the model on the python backend (in stub processes)."""
    if not config:
        return False
    try:
        c = json.loads(config)
    except ValueError:
        return False
    return isinstance(c, dict) and c.get("backend") == "python"


def _measured_load(
    client: ControlClient, probe: MemoryProbe, ledger: FootprintLedger, req: _Load, loaded: list[int] | None
) -> LoadResult:
    t0 = time.monotonic()
    triton_version = client.triton_version()
    fkey = FootprintKey(req.model, req.version, req.digest, probe.device_type(), triton_version)
    devices = sorted(probe.usage())
    if req.digest and req.version is not None:
        known = ledger.measured(fkey)
        if known is not None:
            return _known_load(client, ledger, req, fkey, known, devices, t0)
    if loaded is None:
        loaded = client.loaded_versions(req.model)
    stub = isinstance(probe, HostProbe) and python_backend(req.config) and not loaded
    if isinstance(probe, HostProbe) and stub:
        predicted, version, per_device = _stub_measure(client, probe, ledger, req, fkey, devices)
    else:
        predicted, version, per_device = _delta_measure(client, probe, ledger, req, fkey, devices)
        # A version loaded beside the ones already serving (an availability-preserving switch) is new:
        # the delta is its footprint. Only a reload of a version already loaded measures nothing.
        if loaded and version in loaded:
            log.warning(
                "server %s: model %r was already loaded (v%s): reloaded, footprint not measured",
                client.name, req.model, loaded,
            )  # fmt: skip
            return LoadResult(req.model, version, 0, predicted, time.monotonic() - t0, {}, measured=False)
    footprint = per_device[HOST_DEVICE] if stub else max(0, sum(per_device.values()))
    ledger.record(
        dataclasses.replace(fkey, version=version), footprint,
        predicted=predicted, server=client.name, per_device_bytes=per_device, size_bytes=req.size_bytes,
    )  # fmt: skip
    result = LoadResult(req.model, version, footprint, predicted, time.monotonic() - t0, per_device)
    if stub:
        log.info("server %s: model %r v%s footprint %d bytes (its stub processes), predicted %d (%s)",
                 client.name, req.model, version, footprint, predicted.bytes, predicted.source)  # fmt: skip
        return result
    log.info(
        "server %s: model %r v%s footprint %d bytes, predicted %d (%s), error %s",
        client.name, req.model, version, footprint, predicted.bytes, predicted.source,
        f"{result.error_ratio:+.1%}" if result.error_ratio is not None else "n/a",
    )  # fmt: skip
    return result


def _known_load(
    client: ControlClient,
    ledger: FootprintLedger,
    req: _Load,
    fkey: FootprintKey,
    known_bytes: int,
    devices: list[str],
    t0: float,
) -> LoadResult:
    """A load whose footprint the ledger knows for this exact key: nothing to measure, so no settling and
    no exclusive device lock (it only waits while a measurement is in flight on the same devices)."""
    with device_locks(client.key, devices, shared=True):
        client.load(req.model, config=req.config, files=req.files)
    _ready_version(client, req.model, req.version)
    ledger.hold(client.name, fkey, known_bytes)
    log.info("server %s: model %r v%s loaded; footprint %d bytes known from the ledger",
             client.name, req.model, req.version, known_bytes)  # fmt: skip
    pred = Prediction(known_bytes, "measured")
    return LoadResult(
        req.model, req.version, known_bytes, pred, time.monotonic() - t0, {}, measured=False, from_ledger=True
    )


def _stub_measure(
    client: ControlClient, probe: HostProbe,
    ledger: FootprintLedger, req: _Load, fkey: FootprintKey, devices: list[str],
) -> tuple[Prediction, int, dict[str, int]]:
    """A python-backend model on the host probe, loaded fresh, is measured from its own stub processes
    rather than from a before/after delta: no settle before, and it loads beside other loads (the
    shared device lock only keeps it out of another load's before/after measurement)."""
    predicted = ledger.predict(fkey, req.size_bytes)
    with device_locks(client.key, devices, shared=True):
        client.load(req.model, config=req.config, files=req.files)
    version = _ready_version(client, req.model, req.version)
    about = f"server {client.url} model {req.model!r}"
    return predicted, version, {HOST_DEVICE: settle(StubUsage(probe, req.model), about=about).reading[HOST_DEVICE]}


def _delta_measure(
    client: ControlClient, probe: MemoryProbe,
    ledger: FootprintLedger, req: _Load, fkey: FootprintKey, devices: list[str],
) -> tuple[Prediction, int, dict[str, int]]:
    """Usage after the load settles minus usage before, per device, with every device of the server
    held exclusively (a reload swaps the old instance for the new one: the caller discards that)."""
    with device_locks(client.key, devices):
        predicted = ledger.predict(fkey, req.size_bytes)
        before = settle(probe, about=f"server {client.url}").reading
        client.load(req.model, config=req.config, files=req.files)
        after = settle(probe, about=f"server {client.url}").reading
    version = _ready_version(client, req.model, req.version)
    return predicted, version, {d: after.get(d, 0) - before.get(d, 0) for d in sorted(set(before) | set(after))}


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
