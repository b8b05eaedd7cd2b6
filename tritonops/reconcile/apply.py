"""Apply a plan: the servers at the same time; on each, unloads and evictions first (to free memory),
one at a time, then reloads and loads, several at a time where their footprints are known.

Each load passes a health gate (the version READY in the index, then a warmup inference generated
from the config's inputs). A failed gate keeps or restores the previous version, records the
failure in the quarantine and carries on. A load that passes its gate but whose footprint could not
be measured is not a failure: it stays loaded, held at its estimate (``footprint_source`` "estimate",
with the probe's error as a warning), and the loads after it are placed against that estimate.
A server that stops answering has its remaining actions skipped and reported; the other servers
proceed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

from tritonops.errors import TritonOpsError
from tritonops.reconcile.plan import AVAILABILITY, Action, Plan
from tritonops.reconcile.ports import ServerControl, Unmeasured
from tritonops.reconcile.records import Owned, Quarantine
from tritonops.reconcile.state import DesiredState
from tritonops.repo.model_config import config_dict, override_json
from tritonops.strenum import StrEnum

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    ok = "ok"
    failed = "failed"
    skipped = "skipped"  # its server stopped answering earlier in the run
    deferred = "deferred"  # no longer fits once measurements replaced estimates (drift, not failure)


@dataclass
class ActionResult:
    action: Action
    result: Outcome
    duration_s: float = 0.0
    error: str = ""
    quarantined: bool = False
    restored: list[int] = field(default_factory=list)
    prediction_error_bytes: int | None = None
    measured: bool = False  # the load measured a footprint (False when the ledger knew it)
    # A load that serves but could not be measured: held at this estimate, the probe's error a warning.
    estimate_bytes: int | None = None
    measure_error: str = ""
    # A first load's failed warmup, tried again once the server's other loads are done (a model may call
    # models this run loads after it), with the config to build the request from.
    warmup_error: str = ""
    warmup_config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def footprint_source(self) -> str:
        """The footprint's source: "measured" (by this load), "estimate" (its probe could not), else ""."""
        return "estimate" if self.estimate_bytes is not None else "measured" if self.measured else ""

    def to_json(self) -> dict[str, Any]:
        a = self.action
        return {
            "kind": a.kind,
            "server": a.server,
            "model": a.model,
            "version": a.version,
            "strategy": a.strategy,
            "result": self.result.value,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "quarantined": self.quarantined,
            "restored_versions": self.restored,
            "prediction_error_bytes": self.prediction_error_bytes,
            "measured": self.measured,
            "footprint_source": self.footprint_source,
            "estimate_bytes": self.estimate_bytes,
            "measure_error": self.measure_error,
        }


# An estimate (disk size x 2 + 64 MiB) can miss by a CUDA context per process, hundreds of MiB: with
# room for 4x every load left, unknown loads go in parallel before the first measurement is in.
ESTIMATE_SLACK = 4


class _GateError(TritonOpsError):
    pass


def _ready_versions(ctl: ServerControl, model: str) -> list[int]:
    return sorted(ctl.ready_versions(model))


def _gate(
    ctl: ServerControl, model: str, version: int, config: dict[str, Any], later: ActionResult | None = None
) -> None:
    """READY, then one warmup inference. ``later``: a failed warmup is noted on it, to be tried again
    after the server's other loads (``_LoadScheduler``), rather than raised."""
    if version not in ctl.ready_versions(model):
        # Only a failed gate reads the index (a repository listing) for Triton's reason.
        rows = [r for r in ctl.index() if r.name == model and r.version == version]
        why = rows[0].reason if rows else "not in the repository index"
        raise _GateError(
            f"server {ctl.name!r}: model {model!r} version {version} not READY after load: {why}"
        )
    try:
        ctl.warmup(model, version, config)
    except TritonOpsError as e:
        if later is None:
            raise
        later.warmup_error, later.warmup_config = str(e), config
        log.info("server %s: model %r warmup failed; tried again after the other loads: %s", ctl.name, model, e)


def apply_plan(
    plan: Plan,
    desired: DesiredState,
    controls: Mapping[str, ServerControl],
    quarantine: Quarantine,
    owned: Owned,
    before_unload: Callable[[list[tuple[str, str]]], None] | None = None,
) -> list[ActionResult]:
    """Apply every server's actions, the servers at the same time; results in the plan's order.

    ``before_unload(leaving)``: called once, before any unload or eviction, with the (server, model)
    pairs about to go (the routes drop them first); if it fails, those actions are skipped."""
    lock = threading.Lock()
    q = cast(Quarantine, _Serialised(quarantine, lock))
    o = cast(Owned, _Serialised(owned, lock))
    by_server: dict[str, list[Action]] = {}
    held = _before_unload(plan, before_unload)
    done: list[ActionResult] = []
    for a in plan.actions:  # already sorted: per server, unloads/evictions, then reloads, then loads
        if held and _leaves(a):
            done.append(ActionResult(a, Outcome.skipped, error=held))
        else:
            by_server.setdefault(a.server, []).append(a)
    if not by_server:
        return done
    with ThreadPoolExecutor(len(by_server), thread_name_prefix="apply") as pool:
        futs = [
            pool.submit(_apply_server, acts, desired, controls[s], q, o, (i, len(by_server)))
            for i, (s, acts) in enumerate(by_server.items())
        ]
        done += [r for f in futs for r in f.result()]
    order = {id(a): i for i, a in enumerate(plan.actions)}
    return sorted(done, key=lambda r: order[id(r.action)])


def _leaves(a: Action) -> bool:
    """The action takes the model off its server for a while: an unload, an eviction, or a reload that
    frees the old copy before loading the new one (not the availability strategy)."""
    if a.kind in ("unload", "evict"):
        return True
    return a.kind == "reload" and a.strategy != AVAILABILITY and a.version not in a.from_versions


def _before_unload(plan: Plan, hook: Callable[[list[tuple[str, str]]], None] | None) -> str:
    """Run the hook for the plan's unloads and evictions; '' when they may go ahead, else why not."""
    leaving = sorted({(a.server, a.model) for a in plan.actions if _leaves(a)})
    if hook is None or not leaving:
        return ""
    try:
        hook(leaving)
    except TritonOpsError as e:
        log.warning("unloads skipped: %s", e)
        return f"not unloaded: the routes could not drop it first: {e}"
    return ""


class _Serialised:
    """Quarantine and Owned are read-modify-write files: the apply threads take turns with them."""

    def __init__(self, inner: Any, lock: threading.Lock) -> None:
        self._inner = inner
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            with self._lock:
                return attr(*args, **kw)

        return call


def _run_action(
    a: Action, desired: DesiredState, ctl: ServerControl, quarantine: Quarantine, owned: Owned
) -> ActionResult:
    t0 = time.monotonic()
    r = ActionResult(a, Outcome.ok)
    try:
        if a.kind in ("unload", "evict"):
            ctl.unload(a.model)
            owned.update(set(), {a.model})
        else:
            _load(a, desired, ctl, r, quarantine)
            if r.result is Outcome.ok:  # a failed load creates nothing tritonops may later unload
                owned.update({a.model}, set())
    except TritonOpsError as e:
        r.result, r.error = Outcome.failed, str(e)
    r.duration_s = time.monotonic() - t0
    if r.result is Outcome.failed:
        log.warning("%s", r.error)
    return r


def _down(ctl: ServerControl) -> str:
    """After a failure: why the server is down ('' when it still answers)."""
    try:
        ctl.index()
    except TritonOpsError as e:
        return f"server {ctl.name!r} stopped answering during apply: {e}"
    return ""


def _apply_server(
    actions: list[Action],
    desired: DesiredState,
    ctl: ServerControl,
    quarantine: Quarantine,
    owned: Owned,
    turn: tuple[int, int] = (0, 1),
) -> list[ActionResult]:
    """Unloads and evictions one at a time (each waits until its memory is back), then the loads."""
    results: list[ActionResult] = []
    down = ""
    for a in (a for a in actions if a.kind in ("unload", "evict")):
        if down:
            results.append(ActionResult(a, Outcome.skipped, error=down))
            continue
        r = _run_action(a, desired, ctl, quarantine, owned)
        results.append(r)
        if r.result is Outcome.failed:
            down = _down(ctl)
    loads = [a for a in actions if a.kind in ("reload", "load")]
    if down:
        return results + [ActionResult(a, Outcome.skipped, error=down) for a in loads]
    return results + _LoadScheduler(loads, desired, ctl, quarantine, owned, turn).run()


class _LoadScheduler:
    """Loads and reloads of one server, in the plan's order, several at a time where nothing is measured.

    A load whose footprint is known, or is measured from its own processes (a python stub on the host
    probe), runs beside others, up to the server's load threads, and only if its footprint fits in what
    the plan left free given the loads in flight. A load measured by a before/after delta runs alone.
    After each measured load the free memory is corrected by the measurement's error against the
    plan's assumption, and the rest of the loads are placed again against it (estimates scaled by
    this run's error): one that no longer fits is deferred to the next run, never forced in; one whose
    measurement overshot is unloaded again.
    """

    def __init__(
        self,
        loads: list[Action],
        desired: DesiredState,
        ctl: ServerControl,
        quarantine: Quarantine,
        owned: Owned,
        turn: tuple[int, int] = (0, 1),
    ) -> None:
        self.pending = sorted(loads, key=lambda a: (a.seq, a.model))
        self.desired, self.ctl, self.quarantine, self.owned = desired, ctl, quarantine, owned
        # As many actions at once as Triton has load threads (the control client never sends more load
        # calls than that). Twice as many, to overlap gates with loads, measured no faster on a busy
        # server and slowed its statistics and config answers.
        self.threads = max(1, int(getattr(ctl, "load_threads", 1)))
        first = self.pending[0] if self.pending else None
        # Free memory before the first load, as the plan simulated it (None: the plan knew no memory).
        self.free: int | None = None
        if first is not None and first.memory_free_after:
            self.free = min(v for _, v in first.memory_free_after) + first.predicted_bytes
        self.results: list[ActionResult] = []
        self.down = ""
        # Measured / estimated over this run's measurements: the same estimate is as wrong for the
        # models still to measure, so their room is reserved scaled by it (never scaled down).
        self.estimated = self.measured = 0
        self._stagger(*turn)

    def _stagger(self, server: int, servers: int) -> None:
        """Server ``server`` of ``servers`` starts its loads ``server/servers`` of the way down the list,
        so servers of a region measure different models first and later load from each other's
        measurements (the ledger is shared) rather than all measuring the same ones at once. Only when
        memory is ample: otherwise the plan's order is the priority order a tight budget keeps."""
        if servers < 2 or len(self.pending) < 2 or not self._ample({}):
            return
        k = server * len(self.pending) // servers
        self.pending = self.pending[k:] + self.pending[:k]

    def _reserve(self, a: Action, known: bool) -> int:
        """What ``a`` holds while in flight: both copies for a reload that keeps the old one serving;
        an estimate corrected by how wrong this run's estimates turned out."""
        dm = self.desired.models.get(a.model)
        need = a.predicted_bytes
        if a.kind == "reload" and a.strategy == AVAILABILITY and a.version not in a.from_versions and dm:
            need = max(a.predicted_bytes, dm.footprint_bytes)
        if not known and self.estimated > 0 and self.measured > self.estimated and need > 0:
            need = need * self.measured // self.estimated
        return need

    def _mode(self, a: Action) -> str:
        """``known``, ``own-process`` or ``alone`` (see ``ServerControl.load_mode``)."""
        if a.kind == "reload" and a.version in a.from_versions:
            return "known"  # only drops versions: nothing is measured
        assert a.version is not None
        dm = self.desired.models.get(a.model)
        try:
            backend = str(config_dict(dm.config_text, a.model).get("backend", "")) if dm else ""
            mode = self.ctl.load_mode(a.model, a.version, a.digest, backend)
        except TritonOpsError:
            return "alone"  # cannot tell: measure, alone
        # A model already loaded runs its old stubs beside the new ones: only a delta can tell them apart.
        return "alone" if mode == "own-process" and a.kind == "reload" else mode

    def _ample(self, in_flight: dict[Future[ActionResult], tuple[Action, int, str]]) -> bool:
        """Whether the memory left free holds every pending load at ``ESTIMATE_SLACK`` times what it
        reserves: then no estimate, however wrong within that, can put the server over its budget."""
        if self.free is None:
            return True  # the plan knew no memory: nothing to protect
        pending = sum(self._reserve(a, False) for a in self.pending)
        return self.free >= ESTIMATE_SLACK * (pending + sum(need for _, need, _ in in_flight.values()))

    def run(self) -> list[ActionResult]:
        in_flight: dict[Future[ActionResult], tuple[Action, int, str]] = {}
        with ThreadPoolExecutor(self.threads, thread_name_prefix=f"load-{self.ctl.name}") as pool:
            while self.pending or in_flight:
                self._start(pool, in_flight)
                if not in_flight:
                    continue
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for f in finished:
                    self._finish(f.result(), *in_flight.pop(f))
        for r in self.results:
            if r.warmup_error:
                self._warm_again(r)
        return self.results

    def _warm_again(self, r: ActionResult) -> None:
        """The second and last warmup of a first load whose first one failed: passed, it serves; failed,
        it is a failed load (quarantine, unloaded), as a first failure would have been."""
        a = r.action
        assert a.version is not None
        r.warmup_error = ""
        try:
            if not self.down:
                self.ctl.warmup(a.model, a.version, r.warmup_config)
        except TritonOpsError as e:
            r.warmup_error = str(e)
        if self.down or r.warmup_error:
            r.result, r.error = Outcome.failed, self.down or r.warmup_error
            r.quarantined = self.quarantine.record_failure(a.server, a.model, a.version, a.digest, r.error)
            r.restored = _restore(self.ctl, a.model, [], r.warmup_config)
            self.owned.update(set(), {a.model})
            log.warning("%s", r.error)
        else:
            log.info("server %s: model %r passed its warmup after the other loads", self.ctl.name, a.model)
            self.quarantine.clear(a.server, a.model, a.digest)
        r.warmup_error = ""

    def _start(self, pool: ThreadPoolExecutor, in_flight: dict[Future[ActionResult], tuple[Action, int, str]]) -> None:
        while self.pending:
            a = self.pending[0]
            if self.down:
                self.results += [ActionResult(x, Outcome.skipped, error=self.down) for x in self.pending]
                self.pending.clear()
                return
            mode = self._mode(a)
            alone_in_flight = any(m == "alone" for _, _, m in in_flight.values())
            # Until one measurement says how wrong the estimates are, estimated loads go one at a time,
            # unless what is free could hold every load left at several times its estimate.
            first_pending = (
                self.estimated == 0
                and any(m != "known" for _, _, m in in_flight.values())
                and not self._ample(in_flight)
            )
            busy = len(in_flight) >= self.threads or alone_in_flight or (mode != "known" and first_pending)
            if in_flight and (mode == "alone" or busy):
                return
            need = self._reserve(a, mode == "known")
            self.pending.pop(0)
            if self.free is not None and need > 0 and need > self.free:
                self.results.append(self._deferred(a, need))
                continue
            if self.free is not None:
                self.free -= need
            in_flight[pool.submit(_run_action, a, self.desired, self.ctl, self.quarantine, self.owned)] = (
                a, need, mode,
            )  # fmt: skip

    def _finish(self, r: ActionResult, a: Action, need: int, mode: str) -> None:
        r.measured = mode != "known" and r.result is Outcome.ok and r.prediction_error_bytes is not None
        self.results.append(r)
        if r.result is not Outcome.ok:
            if self.free is not None:
                self.free += need  # the previous versions were restored (or nothing was loaded)
            self.down = self.down or _down(self.ctl)
            return
        err = r.prediction_error_bytes or 0
        if r.estimate_bytes is not None:
            # Not measured: what is left is planned with its estimate (margin included), never less than
            # the plan assumed, and it is never taken back (its probe could not see; Triton serves it).
            err = max(0, r.estimate_bytes - a.predicted_bytes)
        if r.measured and (dm := self.desired.models.get(a.model)) is not None:
            self.estimated += dm.footprint_bytes
            self.measured += dm.footprint_bytes + err
        if self.free is None:
            return
        # Give back the old copy a reload kept while loading, and take what the plan got wrong.
        self.free += need - a.predicted_bytes - err
        if err:
            log.info(
                "server %s: model %r measured %+d bytes against the plan; %d bytes left for the rest",
                self.ctl.name, a.model, err, self.free,
            )  # fmt: skip
        if self.free < 0 and a.kind == "load" and r.estimate_bytes is None:
            self._take_back(r, a)

    def _take_back(self, r: ActionResult, a: Action) -> None:
        """A first load whose measurement put the server over its budget is unloaded again: the budget
        is a promise, and the next run plans from the measurement."""
        assert self.free is not None
        over = -self.free
        try:
            self.ctl.unload(a.model)
        except TritonOpsError as e:
            log.warning("server %s: over budget by %d bytes; unloading %r failed: %s", self.ctl.name, over, a.model, e)
            return
        self.owned.update(set(), {a.model})
        self.free += a.predicted_bytes + (r.prediction_error_bytes or 0)
        r.result = Outcome.deferred
        r.error = (
            f"server {self.ctl.name!r}: model {a.model!r} version {a.version} measured "
            f"{a.predicted_bytes + (r.prediction_error_bytes or 0)} bytes, {over} over the memory budget; "
            "unloaded again and deferred to the next run"
        )
        log.warning("%s", r.error)

    def _deferred(self, a: Action, need: int) -> ActionResult:
        msg = (
            f"server {self.ctl.name!r}: model {a.model!r} version {a.version} needs {need} bytes but only "
            f"{max(0, self.free or 0)} are left once measured footprints replaced the plan's estimates; "
            "deferred to the next run"
        )
        log.warning("%s", msg)
        return ActionResult(a, Outcome.deferred, error=msg)


def _load(
    a: Action, desired: DesiredState, ctl: ServerControl, r: ActionResult, quarantine: Quarantine
) -> None:
    assert a.version is not None
    dm = desired.model_on(a.server, a.model)  # a canary server's release version, else the region's
    if dm is None or dm.version != a.version:
        raise _GateError(f"model {a.model!r} version {a.version} is no longer the published version")
    config = config_dict(dm.config_text, f"{desired.region}/{a.model}/config.pbtxt")
    old = list(a.from_versions)
    loaded = old  # what the plan read; the load need not ask Triton again
    if a.kind == "reload" and a.strategy != AVAILABILITY and a.version not in old:
        ctl.unload(a.model)  # resource-preserving: free the old copy before loading the new one
        loaded = []
    meta: dict[str, Any] = {"version": a.version, "digest": dm.digest, "size_bytes": dm.size_bytes}
    try:
        if a.kind == "reload" and a.strategy == AVAILABILITY and a.version not in old:
            measured = ctl.load(a.model, override_json(config, a.model, [*old, a.version]), **meta, loaded=old)
            _gate(ctl, a.model, a.version, config)
            # Switching to the new version alone only drops the old one: not a footprint to measure.
            ctl.load(a.model, override_json(config, a.model, [a.version]), **meta, measure=False)
        else:
            measured = ctl.load(
                a.model,
                override_json(config, a.model, [a.version]),
                **meta,
                measure=a.version not in old,
                loaded=loaded,
            )
        # A first load's warmup may call models loaded after it (BLS): it may wait for them.
        _gate(ctl, a.model, a.version, config, r if a.kind == "load" and not old else None)
        if isinstance(measured, Unmeasured):  # the control logged the warning; the run report carries it
            r.estimate_bytes, r.measure_error = measured.estimate_bytes, measured.error
        elif measured is not None:
            r.prediction_error_bytes = measured - dm.footprint_bytes
    except TritonOpsError as e:
        r.result, r.error = Outcome.failed, str(e)
        r.quarantined = quarantine.record_failure(a.server, a.model, a.version, a.digest, str(e))
        r.restored = _restore(ctl, a.model, old, config)
        return
    if not r.warmup_error:
        quarantine.clear(a.server, a.model, a.digest)


def _restore(ctl: ServerControl, model: str, old: list[int], config: dict[str, Any]) -> list[int]:
    """Bring back exactly the versions that served before; for a first load, leave nothing half-loaded."""
    try:
        if old:
            if _ready_versions(ctl, model) != sorted(old):
                ctl.load(model, override_json(config, model, old))
        elif ctl.ready_versions(model):
            ctl.unload(model)  # half-loaded (the gate failed); a load that failed left nothing loaded
        return _ready_versions(ctl, model)
    except TritonOpsError as e:
        log.warning("server %s: could not restore model %s: %s", ctl.name, model, e)
        return []
