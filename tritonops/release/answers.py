"""The answers gate: does the new version answer what the live version answers?

The gates on Triton's counters see failures and slowness, not wrong numbers: a version that returns
shifted scores, NaN for a class of inputs, or a swapped output order passes them all. So before any
live traffic is weighed, each rollout step sends the same inputs to the new version on the step's
servers and compares its outputs with the live version's, per output tensor:

- an output missing, or with another dtype or shape, fails;
- NaN or Inf where the live version gave a finite value fails;
- numbers: every element within ``atol + rtol * |live|`` (integers and booleans: equal; strings: equal).

The worst output (the largest error relative to what it is allowed) is named in the verdict.

Inputs, in this order: the ``.npz`` the rollout policy names for the model (arrays by input name);
the ``model_warmup`` samples of the model's config (``zero_data`` / ``random_data``); else requests
generated from the config's inputs (seeded, so both versions get the same values; never all zeros,
which a scale change would pass). Tolerance: the policy's ``atol`` / ``rtol``, else the one the
conversion's accuracy gate recorded for the version (``metadata.tolerance``: ``max_abs``,
``max_rel``, ``mismatch`` per output), else 1e-5 / 1e-3.

The live version's answers are taken before the step is applied, from a server of the region that
serves it, and kept in the controller's state dir beside the rollout (``<model>.<id>.answers.npz``),
so a later step whose servers no longer serve the old version still compares with it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.errors import TritonOpsError

log = logging.getLogger(__name__)

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-3
SEED = 20240607
GENERATED_BATCH = 8  # samples per generated request (variable dimensions: 2)
Inputs = list[tuple[str, str, np.ndarray]]  # (name, Triton datatype, array)

_NP = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}  # fmt: skip


@dataclass(frozen=True)
class Tolerance:
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    mismatch: float = 0.0  # integer outputs: the share of elements that may differ


@dataclass
class OutputCheck:
    name: str
    ok: bool
    reason: str = ""
    max_abs: float | None = None
    score: float = 0.0  # the largest error / what it is allowed (inf: a structural failure)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason, "max_abs": self.max_abs,
                "score": self.score if math.isfinite(self.score) else None}  # fmt: skip


@dataclass
class AnswerVerdict:
    verdict: str  # pass | fail | wait (nothing to compare yet) | skip (the gate is off or cannot run)
    reasons: list[str] = field(default_factory=list)
    worst: str | None = None
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # server -> its checks
    inputs_from: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": self.reasons, "worst": self.worst, "outputs": self.outputs,
                "inputs_from": self.inputs_from}  # fmt: skip


# -- comparing ---------------------------------------------------------------------------------------


def _check_one(name: str, ref: np.ndarray, got: np.ndarray | None, tol: Tolerance) -> OutputCheck:
    inf = float("inf")
    if got is None:
        return OutputCheck(name, False, "missing from the new version's outputs", None, inf)
    if got.dtype != ref.dtype:
        return OutputCheck(name, False, f"dtype {got.dtype} != live {ref.dtype}", None, inf)
    if got.shape != ref.shape:
        return OutputCheck(name, False, f"shape {list(got.shape)} != live {list(ref.shape)}", None, inf)
    if ref.dtype.kind not in "fc":
        differ = int(np.sum(got != ref)) if ref.size else 0
        share = differ / ref.size if ref.size else 0.0
        if share > tol.mismatch:
            return OutputCheck(name, False, f"{differ} of {ref.size} values differ", None, inf)
        return OutputCheck(name, True, "", None, 0.0)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    finite = np.isfinite(r)
    broke = finite & ~np.isfinite(g)
    if broke.any():
        return OutputCheck(
            name, False, f"{int(broke.sum())} of {r.size} values NaN or Inf where the live version's are finite",
            None, inf,
        )  # fmt: skip
    # Where the live version was not finite, the new one must not be either (the same non-finite value).
    same_nonfinite = ~finite & ((np.isnan(r) & np.isnan(g)) | (r == g))
    if (~finite & ~same_nonfinite).any():
        return OutputCheck(name, False, "non-finite values of the live version differ", None, inf)
    if not finite.any():
        return OutputCheck(name, True, "", 0.0, 0.0)
    err = np.abs(g[finite] - r[finite])
    allowed = tol.atol + tol.rtol * np.abs(r[finite])
    ratio = err / np.maximum(allowed, np.finfo(np.float64).tiny)
    worst = float(ratio.max())
    max_abs = float(err.max())
    beyond = int(np.sum(err > allowed))
    if beyond:
        return OutputCheck(
            name, False, f"{beyond} of {r.size} values beyond atol {tol.atol:g} + rtol {tol.rtol:g} x |live| "
            f"(max abs error {max_abs:.4g})", max_abs, worst,
        )  # fmt: skip
    return OutputCheck(name, True, "", max_abs, worst)


def compare(
    live: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], tol: Mapping[str, Tolerance] | Tolerance
) -> list[OutputCheck]:
    """One check per output of the live version, in name order."""
    out = []
    for name in sorted(live):
        t = tol if isinstance(tol, Tolerance) else tol.get(name, Tolerance())
        got = new.get(name)
        out.append(_check_one(name, np.asarray(live[name]), None if got is None else np.asarray(got), t))
    return out


def worst_of(checks: list[OutputCheck]) -> OutputCheck | None:
    failed = [c for c in checks if not c.ok]
    pool = failed or checks
    return max(pool, key=lambda c: c.score) if pool else None


# -- inputs and tolerance ----------------------------------------------------------------------------


def _datatype(dtype: str) -> str:
    return dtype.removeprefix("TYPE_").replace("STRING", "BYTES")


def _random(rng: np.random.Generator, dtype: str, shape: list[int]) -> np.ndarray:
    np_type = _NP.get(dtype)
    if np_type is None:
        raise ValueError(f"data_type {dtype} cannot be generated")
    if np_type is np.object_:
        words = [str(x).encode() for x in rng.integers(0, 100, int(np.prod(shape)))]
        return np.array(words, dtype=np.object_).reshape(shape)
    if np_type is np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(np_type, np.integer):
        return rng.integers(0, 8, shape).astype(np_type)
    # Stratified over [0.05, 0.95]: every part of the range is sampled (a version wrong for a class of
    # inputs is seen), and never all zeros (a scale change would pass them).
    n = int(np.prod(shape))
    u = (rng.permutation(n) + rng.random(n)) / max(n, 1)
    return (0.05 + 0.9 * u).reshape(shape).astype(np_type)


def _shape(inp: Mapping[str, Any], batch: int | None, override: list[Any] | None = None) -> list[int]:
    dims = [int(d) for d in (override if override is not None else inp.get("dims", []))]
    shape = [d if d > 0 else 2 for d in dims]
    return [batch, *shape] if batch else shape


def inputs_for(config: Mapping[str, Any], npz: Path | None = None) -> tuple[Inputs, str]:
    """The request both versions get, and where it came from (see the module doc)."""
    inputs = {str(i["name"]): i for i in config.get("input", [])}
    if npz is not None:
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise TritonOpsError(f"{npz}: cannot read the answers gate's inputs ({e})") from None
        missing = sorted(set(inputs) - set(arrays))
        if missing:
            raise TritonOpsError(f"{npz}: no array for input(s) {', '.join(missing)}")
        given = [(n, _datatype(str(inputs[n].get("data_type", "TYPE_FP32"))), arrays[n]) for n in sorted(inputs)]
        return given, str(npz)
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    rng = np.random.default_rng(SEED)
    for w in config.get("model_warmup", []):
        spec = w.get("inputs", {})
        if set(spec) != set(inputs) or any("input_data_file" in s for s in spec.values()):
            continue
        batch = int(w.get("batch_size", 1) or 1) if batched else None
        out: Inputs = []
        for name in sorted(spec):
            s = spec[name]
            dtype = str(s.get("data_type", inputs[name].get("data_type", "TYPE_FP32")))
            shape = _shape(inputs[name], batch, s.get("dims"))
            zeros = s.get("zero_data")
            arr = np.zeros(shape, dtype=_NP.get(dtype, np.float32)) if zeros else _random(rng, dtype, shape)
            out.append((name, _datatype(dtype), arr))
        if any(not s.get("zero_data") for s in spec.values()):
            return out, f"the config's model_warmup {w.get('name', '')!r}".strip()
    batch = min(GENERATED_BATCH, int(config.get("max_batch_size", 0) or 0)) if batched else None
    gen = [(n, _datatype(str(i.get("data_type", "TYPE_FP32"))), _random(rng, str(i.get("data_type", "TYPE_FP32")),
            _shape(i, batch))) for n, i in sorted(inputs.items())]  # fmt: skip
    return gen, f"generated from the config's inputs (seed {SEED})"


def tolerance_for(metadata: Mapping[str, Any], atol: float | None, rtol: float | None) -> dict[str, Tolerance]:
    """Per output: the policy's atol/rtol where set, else the conversion's recorded tolerance."""
    recorded = metadata.get("tolerance") if isinstance(metadata.get("tolerance"), dict) else {}
    out: dict[str, Tolerance] = {}
    for name, t in (recorded or {}).items():
        if not isinstance(t, dict):
            continue
        a = atol if atol is not None else float(t.get("max_abs") or DEFAULT_ATOL)
        r = rtol if rtol is not None else float(t.get("max_rel") or (0.0 if t.get("max_abs") else DEFAULT_RTOL))
        out[str(name)] = Tolerance(a, r, float(t.get("mismatch") or 0.0))
    return _Default(out, Tolerance(DEFAULT_ATOL if atol is None else atol, DEFAULT_RTOL if rtol is None else rtol))


class _Default(dict[str, Tolerance]):
    """Tolerances by output name, with one for every output not named."""

    def __init__(self, named: dict[str, Tolerance], default: Tolerance) -> None:
        super().__init__(named)
        self.default = default

    def get(self, key: str, default: Any = None) -> Any:  # noqa: ARG002 - the dict's own default wins
        return super().get(key, self.default)


# -- a rollout step ----------------------------------------------------------------------------------

_SEP = "|"


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=True) as data:  # our own file, in the controller's state dir
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); the live version's answers are taken again", path, e)
        return {}


def _save(path: Path, stored: Mapping[str, np.ndarray]) -> None:
    import io

    from tritonops.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **dict(stored))
    atomic_write_bytes(path, buf.getvalue())


def _stored_inputs(stored: Mapping[str, np.ndarray]) -> Inputs:
    names = sorted(k.split(_SEP, 1)[1] for k in stored if k.startswith("in" + _SEP))
    return [(n, str(stored[f"dt{_SEP}{n}"]), stored[f"in{_SEP}{n}"]) for n in names]


def _outputs_of(stored: Mapping[str, np.ndarray], version: int) -> dict[str, np.ndarray]:
    head = f"v{version}{_SEP}"
    return {k[len(head):]: v for k, v in stored.items() if k.startswith(head)}


def _client(cfg: Any, region: str, server: str) -> Any:
    from tritonops.triton.client import ControlClient

    s = next(x for x in cfg.region(region).servers if x.name == server)
    return ControlClient.from_server(s)


def take_reference(cfg: Any, ro: Mapping[str, Any], path: Path) -> list[str]:
    """Before a step: the live version's answers, once per live version, from a server that serves it
    in the step's regions. Returns notes (what could not be taken)."""
    from tritonops.release.ops import read_region_model, served_versions
    from tritonops.repo.model_config import config_dict

    policy = cfg.release.rollout.gates.answers
    if not policy.enabled:
        return []
    model, stored, notes = ro["model"], _load(path), []
    for region in sorted(ro["steps"][ro["step"]]["targets"]):
        old = ro["origin"].get(region)
        if old is None or old == ro["version"] or _outputs_of(stored, old):
            continue
        if not _stored_inputs(stored):
            rm = read_region_model(cfg, region, model)
            rm.store.close()
            npz = policy.inputs.get(model)
            inputs, source = inputs_for(config_dict(rm.config_text, f"{region}/{model}"),
                                        cfg.resolve(npz) if npz is not None else None)  # fmt: skip
            for name, dt, arr in inputs:
                stored[f"in{_SEP}{name}"], stored[f"dt{_SEP}{name}"] = arr, np.array(dt)
            stored["source"] = np.array(source)
        served = served_versions(cfg, region, [model])
        serving = [s for s, d in sorted(served.items()) if old in d["models"].get(model, [])]
        if not serving:
            notes.append(f"answers: no server of region {region!r} serves version {old}: its answers not taken")
            continue
        try:
            outs = _client(cfg, region, serving[0]).infer(model, _stored_inputs(stored), version=old)
        except TritonOpsError as e:
            notes.append(f"answers: version {old} on {serving[0]}: {e}")
            continue
        for name, arr in outs.items():
            stored[f"v{old}{_SEP}{name}"] = np.asarray(arr)
        _save(path, stored)
    return notes


def check(cfg: Any, ro: Mapping[str, Any], path: Path) -> AnswerVerdict:
    """After a step is applied: the new version on each of the step's servers against the live answers."""
    from tritonops.release.ops import read_region_model, served_versions

    policy = cfg.release.rollout.gates.answers
    if not policy.enabled:
        return AnswerVerdict("skip", ["answers: gate off (release.rollout.gates.answers.enabled)"])
    model, new = ro["model"], ro["version"]
    stored = _load(path)
    v = AnswerVerdict("pass", inputs_from=str(stored.get("source", "")))
    pending: list[str] = []
    worst: tuple[float, str] | None = None
    for region, servers in sorted(ro["steps"][ro["step"]]["targets"].items()):
        old = ro["origin"].get(region)
        live = _outputs_of(stored, old) if old is not None else {}
        if not live:
            v.reasons.append(f"answers: region {region!r}: no answers of a live version to compare with")
            continue
        rm = read_region_model(cfg, region, model)
        rm.store.close()
        entry = rm.manifest.versions.get(new)
        tol = tolerance_for(entry.metadata if entry else {}, policy.atol, policy.rtol)
        served = served_versions(cfg, region, [model])
        for s in sorted(servers):
            if new not in served.get(s, {}).get("models", {}).get(model, []):
                pending.append(s)
                continue
            try:
                got = _client(cfg, region, s).infer(model, _stored_inputs(stored), version=new)
            except TritonOpsError as e:
                v.verdict = "fail"
                v.reasons.append(f"answers: server {s}: version {new} failed the request version {old} answered: {e}")
                continue
            checks = compare(live, got, tol)
            v.outputs[s] = [c.to_json() for c in checks]
            w = worst_of(checks)
            if w is None:
                continue
            if not w.ok:
                v.verdict = "fail"
                v.reasons.append(f"answers: server {s}: output {w.name!r} of version {new}: {w.reason} "
                                 f"(against version {old})")  # fmt: skip
            if worst is None or w.score > worst[0]:
                worst = (w.score, w.name)
    v.worst = worst[1] if worst else None
    if v.verdict == "fail":
        return v
    if not v.outputs:
        v.verdict = "wait" if pending else "skip"
        if pending:
            v.reasons.append(f"answers: {', '.join(pending)} do not serve version {new} yet")
        return v
    assert worst is not None
    v.reasons.append(f"answers: version {new} on {len(v.outputs)} server(s) within tolerance of the live "
                     f"version (closest to its limit: output {worst[1]!r}, {worst[0]:.2g} of it)")  # fmt: skip
    return v
