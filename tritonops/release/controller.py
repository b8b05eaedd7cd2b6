"""The rollout controller: moves one version of a model wave by wave, step by step, behind gates.

State is a small JSON document per model (``<state_dir>/release/rollouts/`` and the home region's bucket),
written atomically (rename) BEFORE each action it announces, and each action is idempotent (a release
record write, a pointer write, a reconcile). So ``advance`` can be SIGKILLed anywhere: the next run
reads the intent and does it again. Where the store has conditional writes, the authoritative copy is
in the bucket of the rollout's home region (its first region), replaced only with ``If-Match``, under a
lease per model: another host advances it after this one is gone (docs/multi-host.md); the state dir
keeps a copy. Each touched region's release record carries a ``rollout`` summary for status readers.

Phases of the current step: ``apply`` (write the records, reconcile the step's regions, take the
baseline) -> ``bake`` (wait ``bake_s``, then the health gate and the metric gates) -> next step's
``apply``, or ``rollback`` (every step taken so far undone, the digest blocked everywhere) -> ``failed``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tritonops.config import Config, ReleaseMode
from tritonops.errors import LockHeldError, StoreError, TritonOpsError
from tritonops.fileio import atomic_write_bytes, utc_now
from tritonops.filelock import exclusive_lock
from tritonops.regions import per_region
from tritonops.release import answers, gates, metric_gates
from tritonops.release.ops import read_region_model, served_versions, set_canary, set_live
from tritonops.release.policy import canary_servers
from tritonops.release.state import ReleaseError, ReleaseRecord, write_record
from tritonops.store.base import ConditionalWritesUnsupported, PreconditionFailed
from tritonops.store.lease import hold, model_lease_name
from tritonops.store.shared_doc import SharedDoc, rollout_key, shared_doc
from tritonops.strenum import StrEnum

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class Phase(StrEnum):
    """Where a rollout is (its state file's ``phase``): the current step's, or how it ended."""

    apply = "apply"  # write the step's records, reconcile its regions, check the answers
    bake = "bake"  # wait bake_s, then the health, counter and metric gates
    rollback = "rollback"  # a gate failed: undo every step taken, block the digest
    abort = "abort"  # the operator aborted: undo every step taken
    done = "done"
    failed = "failed"
    aborted = "aborted"


TERMINAL = (Phase.done, Phase.failed, Phase.aborted)
LOCK_HELD = "reconcile lock held: "
# Reconciles a region now, under its lock: the number of failed actions; LockHeldError if another
# run holds the lock. Handed in by the CLI, so that release does not import reconcile.
Reconciler = Callable[[Config, str], int]


def rollouts_dir(cfg: Config) -> Path:
    return cfg.state_path / "release" / "rollouts"


def _path(cfg: Config, model: str) -> Path:
    return rollouts_dir(cfg) / f"{model}.json"


def _home(cfg: Config, model: str) -> str | None:
    """The region whose bucket holds the rollout's state and lease: the first region of its first step."""
    steps = plan_steps(cfg, model)
    return sorted(steps[0]["targets"])[0] if steps else None


def _shared(cfg: Config, model: str) -> SharedDoc | None:
    home = _home(cfg, model)
    return None if home is None else shared_doc(cfg, home, rollout_key(model))


def _unreachable(e: StoreError) -> bool:
    """A bucket that cannot be read or written now, as opposed to one that answered no (another host
    wrote first, no conditional writes): only the first lets this host go on with its own copy."""
    return not isinstance(e, (PreconditionFailed, ConditionalWritesUnsupported))


def load_rollout(cfg: Config, model: str) -> dict[str, Any] | None:
    """The newer of the bucket's copy (in the home region; docs/multi-host.md) and the state dir's. A
    home bucket that is down leaves the state dir's copy (a warning): status and rollbacks go on."""
    p = _path(cfg, model)
    shared: SharedDoc | None = None
    doc: Any = None
    try:
        shared = _shared(cfg, model)
        doc = shared.load() if shared is not None else None
    except StoreError as e:
        if not _unreachable(e):
            raise
        (log.warning if p.exists() else log.debug)("rollout %s: %s; using this host's copy %s", model, e, p)
    src = shared.where if doc is not None and shared is not None else str(p)
    try:
        local = json.loads(p.read_text())
    except FileNotFoundError:
        local = None
    except ValueError as e:
        if doc is None:
            raise ReleaseError(f"{p}: rollout state is not valid JSON ({e})") from None
        local = None
    if doc is None or (isinstance(local, dict) and str(local.get("updated", "")) >= str(doc.get("updated", ""))):
        doc, src = local, str(p)
    if doc is None:
        return None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise ReleaseError(f"{src}: unsupported rollout state")
    return doc


def _save(cfg: Config, ro: dict[str, Any]) -> None:
    """The bucket's copy first (replaced only if it is still the version read), then the state dir's."""
    ro["updated"] = utc_now()
    try:
        shared = _shared(cfg, ro["model"])
        if shared is not None:
            shared.save(ro)
    except StoreError as e:
        if not _unreachable(e):
            raise
        log.warning("rollout %s: %s; saved on this host only (the newer copy wins when it is back)", ro["model"], e)
    atomic_write_bytes(_path(cfg, ro["model"]), (json.dumps(ro, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def rollout_lock(cfg: Config, model: str) -> Iterator[None]:
    """One controller per model at a time: this host's lock file (the kernel drops it when the process
    dies), then the model's lease in its home region's bucket (across hosts)."""
    p = rollouts_dir(cfg) / f"{model}.lock"
    home = _home(cfg, model)
    with exclusive_lock(p, lambda _pid: LockHeldError(f"model {model!r}: another rollout controller holds {p}")), \
            ExitStack() as stack:  # fmt: skip
        if home:
            try:
                stack.enter_context(hold(cfg, home, model_lease_name(model), f"rollout {model}"))
            except StoreError as e:
                # A home bucket that is down must not stop an emergency rollback in the other regions;
                # a lease held by another host (LeaseHeldError) still does.
                if not _unreachable(e):
                    raise
                log.warning("model %r: the lease in %s's bucket cannot be taken (%s): this host's lock alone",
                            model, home, e)
        yield


def plan_steps(cfg: Config, model: str) -> list[dict[str, Any]]:
    """Per wave: its regions' canary servers (when that is not every server), then the whole wave."""
    ro = cfg.release.rollout
    regions = [r for r in cfg.regions if cfg.is_allowed(model, r)]
    waves = ro.waves or ([regions[:1], regions[1:]] if regions else [])
    steps: list[dict[str, Any]] = []
    for wave in waves:
        wave = [r for r in wave if r in regions]
        if not wave:
            continue
        canary: dict[str, list[str]] = {}
        for r in wave:
            names = [s.name for s in cfg.region(r).servers]
            picked = canary_servers(names, ro.canary_share)
            if len(picked) < len(names):
                canary[r] = picked
        if canary:
            steps.append({"kind": "canary", "targets": canary})
        steps.append({"kind": "all", "targets": {r: [s.name for s in cfg.region(r).servers] for r in wave}})
    return steps


def start(cfg: Config, model: str, version: int) -> dict[str, Any]:
    if cfg.release.mode is not ReleaseMode.explicit:
        raise ReleaseError(
            "release.mode is on-publish (publishing already releases everywhere): set "
            "`release: {mode: explicit}` in tritonops.yaml to stage rollouts"
        )
    with rollout_lock(cfg, model):
        cur = load_rollout(cfg, model)
        if cur is not None and cur["phase"] not in TERMINAL:
            raise ReleaseError(
                f"model {model!r}: rollout {cur['id']} of version {cur['version']} is in progress "
                "(advance it, or `tritonops rollout abort`)"
            )
        steps = plan_steps(cfg, model)
        if not steps:
            raise ReleaseError(f"model {model!r}: no region allows it; nothing to roll out")
        origin: dict[str, int | None] = {}
        digest = ""
        for r in sorted({r for s in steps for r in s["targets"]}):
            rm = read_region_model(cfg, r, model)
            try:
                if version not in rm.manifest.versions:
                    raise ReleaseError(f"region {r!r}: model {model!r} version {version} is not published there")
                digest = rm.manifest.versions[version].digest
                if rm.record is not None and digest in rm.record.blocked:
                    raise ReleaseError(f"region {r!r}: model {model!r} version {version} is blocked "
                                       f"({rm.record.blocked[digest]})")  # fmt: skip
                origin[r] = rm.live
            finally:
                rm.store.close()
        ro: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "id": uuid.uuid4().hex[:12], "model": model,
            "version": version, "digest": digest, "origin": origin, "steps": steps, "step": 0,
            "phase": Phase.apply, "started": utc_now(), "history": [], "gate": None,
            "bake_s": cfg.release.rollout.bake_s,
        }  # fmt: skip
        _save(cfg, ro)
        return ro


def _summary(ro: dict[str, Any]) -> dict[str, Any]:
    return {"id": ro["id"], "version": ro["version"], "step": ro["step"], "steps": len(ro["steps"]),
            "phase": ro["phase"]}  # fmt: skip


def _reconcile(cfg: Config, region: str, run: Reconciler) -> str:
    """Reconcile the region now (under its lock); '' or why not."""
    try:
        failed = run(cfg, region)
    except LockHeldError as e:
        return f"{LOCK_HELD}{e}"
    return f"{failed} action(s) failed" if failed else ""


def _apply_step(cfg: Config, ro: dict[str, Any], run: Reconciler) -> None:
    step = ro["steps"][ro["step"]]
    for region, servers in sorted(step["targets"].items()):
        rm = read_region_model(cfg, region, ro["model"])
        try:
            if step["kind"] == "all":
                set_live(rm, ro["version"], rollout=_summary(ro))
            else:
                set_canary(rm, ro["version"], servers, rollout=_summary(ro))
        finally:
            rm.store.close()
        why = _reconcile(cfg, region, run)
        if why:
            log.warning("rollout %s: region %s: reconcile: %s", ro["id"], region, why)


def _regions_of(ro: dict[str, Any], upto: int) -> list[str]:
    return sorted({r for s in ro["steps"][: upto + 1] for r in s["targets"]})


def _answers_path(cfg: Config, ro: dict[str, Any]) -> Path:
    return rollouts_dir(cfg) / f"{ro['model']}.{ro['id']}.answers.npz"


def _answers_check(cfg: Config, ro: dict[str, Any]) -> answers.AnswerVerdict:
    """The answers gate of the current step (once it passed, it is not asked again)."""
    done = ro.get("answers") or {}
    if done.get("step") == ro["step"] and done.get("verdict") in ("pass", "skip", "fail"):
        return answers.AnswerVerdict(done["verdict"], list(done.get("reasons", [])), done.get("worst"))
    av = answers.check(cfg, ro, _answers_path(cfg, ro))
    ro["answers"] = {"step": ro["step"], **av.to_json()}
    return av


def _bake_check(cfg: Config, ro: dict[str, Any], run: Reconciler) -> gates.Verdict:
    step = ro["steps"][ro["step"]]
    regions = sorted(step["targets"])
    step_servers = sorted(s for r in regions for s in step["targets"][r])
    all_servers = sorted(s.name for r in regions for s in cfg.region(r).servers)
    control = [s for s in all_servers if s not in step_servers]
    for r in regions:  # a restarted Triton gets its override back before it is judged
        try:
            run(cfg, r)  # failed loads are judged by the health gate below
        except LockHeldError as e:
            return gates.Verdict("wait", [f"region {r!r}: {LOCK_HELD}{e}"])
    served: dict[str, Any] = {}
    for r in regions:
        served.update(served_versions(cfg, r, [ro["model"]]))
    health = gates.served_ok(served, ro["model"], ro["version"], step_servers)
    if health.verdict != "pass":
        return health
    av = _answers_check(cfg, ro)
    if av.verdict == "fail":
        return gates.Verdict("fail", av.reasons)
    now, notes = gates.take_snapshot(cfg, regions, ro["model"])
    olds = {ro["origin"].get(r) for r in regions}
    old = next(iter(olds)) if len(olds) == 1 else None
    g = cfg.release.rollout.gates
    v = gates.evaluate(g, ro.get("pre") or {}, ro["baseline"], now, ro["version"], old, step_servers, control)
    v.reasons += notes
    v.readings["answers"] = av.reasons
    if g.metrics:  # the user's Prometheus queries over the bake window
        m = metric_gates.evaluate(g.metrics, ro["model"], ro["version"], old, ro["bake_s"])
        v.readings["metric_gates"] = {"values": m.readings, "reasons": m.reasons}
        if m.verdict == "fail" or (m.verdict == "wait" and v.verdict == "pass"):
            v.verdict = m.verdict
            v.reasons += [r for r in m.reasons if "within its threshold" not in r]
    if v.restarted:
        ro["baseline"], ro["bake_started"] = now, time.time()
    return v


def _rollback(cfg: Config, ro: dict[str, Any], reason: str, block: bool, run: Reconciler) -> None:
    """Undo every step taken (idempotent); with ``block``, block the digest in every region of the
    rollout, so neither a later rollout nor reconcile (nor on-publish) makes it live again. A region
    that fails (its bucket down) does not keep the others from it; the phase stays, and the next
    advance retries."""
    touched = _regions_of(ro, ro["step"])
    regions = sorted({r for s in ro["steps"] for r in s["targets"]})

    def one(region: str) -> None:
        rm = read_region_model(cfg, region, ro["model"])
        try:
            if block:
                rec = rm.record or ReleaseRecord(ro["model"], live=rm.live)
                rec.watermark = max(rec.watermark, max(rm.manifest.versions, default=0))
                rec.blocked[ro["digest"]] = f"rollout {ro['id']}: {reason}"
                rm.record = rec
            origin = ro["origin"].get(region)
            if region in touched and origin is not None:
                set_live(rm, origin, "rollback", rollout=_summary(ro))
            elif rm.record is not None:
                if region in touched:  # nothing was live before the rollout: nothing is now
                    rm.record.live, rm.record.canary = None, None
                rm.record.rollout = _summary(ro)
                write_record(rm.store, rm.record)
        finally:
            rm.store.close()
        if region in touched:
            _reconcile(cfg, region, run)

    res = per_region([r for r in regions if r in touched or block], one, (TritonOpsError,))
    res.raise_if_failed("rolled back")


def _finish(cfg: Config, ro: dict[str, Any]) -> None:
    """Clear the rollout summary from the records (best effort: it is only for readers)."""
    for region in sorted({r for s in ro["steps"] for r in s["targets"]}):
        rm = read_region_model(cfg, region, ro["model"])
        try:
            if rm.record is not None and (rm.record.rollout or {}).get("id") == ro["id"]:
                rm.record.rollout = _summary(ro)
                write_record(rm.store, rm.record)
        finally:
            rm.store.close()


def _tick(cfg: Config, ro: dict[str, Any], report: list[str], run: Reconciler) -> bool:
    """One transition; True when another may follow at once."""
    n = len(ro["steps"])
    if ro["phase"] == Phase.apply:
        regions = sorted(ro["steps"][ro["step"]]["targets"])
        if ro.get("pre_step") != ro["step"]:  # the old version's answers and counters before the step
            ro["answers_notes"] = answers.take_reference(cfg, ro, _answers_path(cfg, ro))
            ro["pre"], _ = gates.take_snapshot(cfg, regions, ro["model"])
            ro["pre_step"] = ro["step"]
            _save(cfg, ro)
        _apply_step(cfg, ro, run)
        # Before any traffic is weighed: a version that answers wrong is stopped here, with none at all.
        av = _answers_check(cfg, ro)
        if av.verdict == "fail":
            ro["gate"] = {"verdict": "fail", "reasons": av.reasons, "time": utc_now()}
            ro["history"].append({"step": ro["step"], **ro["gate"]})
            ro["phase"], ro["failure"] = Phase.rollback, "; ".join(av.reasons)
            report.append(f"step {ro['step'] + 1}/{n}: answers gate failed: {ro['failure']}; rolling back")
            _save(cfg, ro)
            return True
        ro["baseline"], _ = gates.take_snapshot(cfg, regions, ro["model"])
        ro["bake_started"], ro["phase"] = time.time(), Phase.bake
        report.append(f"step {ro['step'] + 1}/{n} ({_describe(ro['steps'][ro['step']])}) applied; baking")
        _save(cfg, ro)
        return ro["bake_s"] <= 0
    if ro["phase"] == Phase.bake:
        left = ro["bake_started"] + ro["bake_s"] - time.time()
        if left > 0:
            report.append(f"step {ro['step'] + 1}/{n}: baking, {left:.0f} s left")
            return False
        v = _bake_check(cfg, ro, run)
        ro["gate"] = {**v.to_json(), "time": utc_now()}
        if v.verdict == "wait":
            report.append(f"step {ro['step'] + 1}/{n}: waiting: {'; '.join(v.reasons)}")
            _save(cfg, ro)
            return False
        ro["history"].append({"step": ro["step"], **ro["gate"]})
        if v.verdict == "fail":
            ro["phase"], ro["failure"] = Phase.rollback, "; ".join(v.reasons)
            report.append(f"step {ro['step'] + 1}/{n}: gate failed: {ro['failure']}; rolling back")
            _save(cfg, ro)
            return True
        report.append(f"step {ro['step'] + 1}/{n}: gates passed")
        if ro["step"] + 1 >= n:
            ro["phase"] = Phase.done
            _save(cfg, ro)
            _finish(cfg, ro)
            report.append(f"version {ro['version']} is live in every region of the rollout")
            return False
        ro["step"], ro["phase"] = ro["step"] + 1, Phase.apply
        _save(cfg, ro)
        return True
    if ro["phase"] in (Phase.rollback, Phase.abort):
        block = ro["phase"] == Phase.rollback
        _rollback(cfg, ro, ro.get("failure", "aborted"), block, run)
        ro["phase"] = Phase.failed if block else Phase.aborted
        _save(cfg, ro)
        _finish(cfg, ro)
        report.append(
            f"rolled back every step taken; version {ro['version']} "
            + ("blocked (digest) in every region of the rollout" if block else "withdrawn")
        )
        return False
    return False


def _describe(step: dict[str, Any]) -> str:
    parts = [f"{r}: {'all' if step['kind'] == 'all' else ' '.join(sv)}" for r, sv in sorted(step["targets"].items())]
    return ", ".join(parts)


def advance(cfg: Config, model: str, reconcile: Reconciler) -> tuple[dict[str, Any] | None, list[str]]:
    """Idempotent and cron-safe: does whatever the rollout's state says is next, as far as it may go
    now (a bake or a gate waiting for traffic ends the run). Returns the state and what it did.
    ``reconcile`` reconciles a region after each pointer move (see :data:`Reconciler`)."""
    report: list[str] = []
    with rollout_lock(cfg, model):
        ro = load_rollout(cfg, model)
        if ro is None:
            raise ReleaseError(f"model {model!r}: no rollout (start one with `tritonops rollout start`)")
        if ro["phase"] in TERMINAL:
            report.append(f"rollout {ro['id']} is {ro['phase']}; nothing to do")
            return ro, report
        try:
            while _tick(cfg, ro, report, reconcile):
                pass
        except TritonOpsError as e:
            report.append(f"stopped: {e} (the next advance resumes here)")
            raise
        return ro, report


def abort(cfg: Config, model: str, reconcile: Reconciler) -> tuple[dict[str, Any], list[str]]:
    report: list[str] = []
    with rollout_lock(cfg, model):
        ro = load_rollout(cfg, model)
        if ro is None or ro["phase"] in TERMINAL:
            raise ReleaseError(f"model {model!r}: no rollout in progress")
        if ro["phase"] != Phase.rollback:  # a failed gate's rollback (and block) stays one
            ro["phase"], ro["failure"] = Phase.abort, "aborted by operator"
            _save(cfg, ro)
        _tick(cfg, ro, report, reconcile)
        return ro, report
