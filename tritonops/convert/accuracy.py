"""The accuracy gate: run source and target on the same inputs and compare every output.

Every dynamic dimension is exercised at its minimum, a typical size and its maximum
(:func:`dim_ranges`, :func:`shape_points`): a graph can be right at one sequence length and far off
at another. Non-finite values reject a target, and every figure stays JSON (``inf`` -> ``null``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonops.convert.export import random_values
from tritonops.convert.recipe import DimRange, OutputKind, TensorSpec, Tolerance
from tritonops.errors import ConversionError

# rel error floor, as a fraction of the output's largest magnitude (see Tolerance).
REL_FLOOR = 1e-3


@dataclass
class OutputErrors:
    name: str
    max_abs: float
    p99_abs: float
    max_rel: float
    p99_rel: float
    norm_max: float
    norm_p99: float
    mismatch: float
    violations: list[str] = field(default_factory=list)

    kind: OutputKind = OutputKind.scores

    def to_json(self) -> dict[str, Any]:
        figures = {k: _finite_or_none(getattr(self, k)) for k in METRICS}
        return {"kind": self.kind.value, **figures, "violations": self.violations}


METRICS = ("max_abs", "p99_abs", "max_rel", "p99_rel", "norm_max", "norm_p99", "mismatch")


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN or Infinity: a figure that could not be measured is null (and has a violation).
    return x if math.isfinite(x) else None


def _failed(name: str, why: str) -> OutputErrors:
    inf = float("inf")
    return OutputErrors(name, inf, inf, inf, inf, inf, inf, 1.0, [why])


def _non_finite(a: np.ndarray) -> str | None:
    if a.dtype.kind not in "fc":
        return None
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    return None if not (nan or inf) else f"{nan} NaN and {inf} Inf values"


def output_kind(ref: np.ndarray) -> OutputKind:
    """labels (integers), probabilities (rows in [0, 1] summing to 1), or scores."""
    if np.issubdtype(ref.dtype, np.integer) or ref.dtype == bool:
        return OutputKind.labels
    r = ref.astype(np.float64)
    if (
        r.ndim == 2
        and r.shape[1] > 1
        and r.size
        and np.all(np.isfinite(r))
        and r.min() >= 0.0
        and r.max() <= 1.0
        and np.allclose(r.sum(axis=1), 1.0, atol=1e-3)
    ):
        return OutputKind.probabilities
    return OutputKind.scores


def output_errors(name: str, ref: np.ndarray, got: np.ndarray) -> OutputErrors:
    if ref.shape != got.shape:
        return _failed(name, f"shape {list(got.shape)} != source {list(ref.shape)}")
    # A NaN or Inf compares as nothing: the target is rejected, whether or not the source has it too.
    for who, a in (("target", got), ("source", ref)):
        bad = _non_finite(a)
        if bad:
            return _failed(name, f"{bad} in the {who}'s output")
    r = ref.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel()
    if r.size == 0:
        return OutputErrors(name, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    abs_err = np.abs(g - r)
    scale = float(np.max(np.abs(r)))
    denom = np.maximum(np.abs(r), max(REL_FLOOR * scale, float(np.finfo(np.float64).tiny)))
    rel = abs_err / denom
    return OutputErrors(
        name,
        max_abs=float(abs_err.max()),
        p99_abs=float(np.quantile(abs_err, 0.99)),
        max_rel=float(rel.max()),
        p99_rel=float(np.quantile(rel, 0.99)),
        norm_max=float(abs_err.max() / scale) if scale > 0 else float(abs_err.max()),
        norm_p99=float(np.quantile(abs_err, 0.99) / scale)
        if scale > 0
        else float(np.quantile(abs_err, 0.99)),
        mismatch=float(np.mean(g != r)),
    )


Tolerances = Tolerance | Callable[[str], Tolerance]


def gate(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], tol: Tolerances) -> list[OutputErrors]:
    """Errors per output, each with the limits it breaks (empty violations: within tolerance).

    ``tol`` is one Tolerance for every output, or a function from the output's kind (labels,
    probabilities, scores: :func:`output_kind`) to its Tolerance. Labels are held to ``mismatch``
    only: an abs error of 1 between class 2 and class 1 means nothing. Float outputs are held to
    every other limit that is set.
    """
    out = []
    for name, r in ref.items():
        r = np.asarray(r)
        if name not in got:
            out.append(_failed(name, "missing from the target's outputs"))
            continue
        e = output_errors(name, r, np.asarray(got[name]))
        e.kind = output_kind(r)
        limits = tol(e.kind) if callable(tol) else tol
        if not e.violations:
            checks = ("mismatch",) if e.kind is OutputKind.labels else [k for k in METRICS if k != "mismatch"]
            for k in checks:
                limit = getattr(limits, k)
                if limit is not None and getattr(e, k) > limit:
                    e.violations.append(f"{k} {getattr(e, k):.3g} > {limit:.3g}")
        out.append(e)
    return out


# ------------------------------------------------------------------------------------ shape ranges

DEFAULT_TYPICAL = 8
DEFAULT_MAX = 64


@dataclass(frozen=True)
class Dim:
    """A dynamic dimension's validated sizes, and where they came from."""

    name: str
    min: int
    typical: int
    max: int
    origin: str  # "recipe", "triton.max_batch_size", "validation data", "default" (or a mix)
    batch: bool = False  # dim 0 of every input: the sample axis, run in chunks of its size

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min, "typical": self.typical, "max": self.max, "origin": self.origin}


def batch_dim(specs: list[TensorSpec]) -> str | None:
    """The name of the sample axis: dim 0 of every input, dynamic and shared by all."""
    firsts = {s.shape[0] for s in specs}
    name = next(iter(firsts)) if len(firsts) == 1 else None
    return name if isinstance(name, str) else None


def dim_ranges(
    specs: list[TensorSpec],
    declared: Mapping[str, DimRange],
    max_batch_size: int,
    data: Mapping[str, np.ndarray] | None,
    where: str,
) -> list[Dim]:
    """min / typical / max of every dynamic dim: the recipe's ``validation.dims``, else Triton's
    max_batch_size (batch), the validation data's size (typical), or defaults (1, 8, 64)."""
    names: dict[str, int] = {}  # dim name -> size in the validation data (0: no data)
    for s in specs:
        for i, d in s.dynamic_dims.items():
            size = int(data[s.name].shape[i]) if data is not None and s.name in data else 0
            names.setdefault(d, size)
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise ConversionError(
            f"{where}.dims: {unknown} are not dynamic dimensions of the inputs (those are {sorted(names)})"
        )
    batch = batch_dim(specs)
    out = []
    for name, data_size in names.items():
        dr = declared.get(name) or DimRange()
        origin = "recipe" if name in declared else "default"
        is_batch = name == batch
        hi = dr.max
        if hi is None:
            hi = max_batch_size if is_batch and max_batch_size > 0 else DEFAULT_MAX
            origin += "+triton.max_batch_size" if is_batch and max_batch_size > 0 else ""
        if is_batch and max_batch_size > 0 and hi > max_batch_size:
            raise ConversionError(
                f"{where}.dims.{name}.max: {hi} is above triton.max_batch_size ({max_batch_size})"
            )
        lo = dr.min or 1
        typical = dr.typical or (data_size if data_size and not is_batch else DEFAULT_TYPICAL)
        typical = min(max(typical, lo), hi)
        if not lo <= typical <= hi:
            raise ConversionError(f"{where}.dims.{name}: need min <= typical <= max, got {lo}, {typical}, {hi}")
        out.append(Dim(name, lo, typical, hi, origin, is_batch))
    return out


def shape_points(dims: list[Dim]) -> list[dict[str, int]]:
    """Every dim at its typical size, then each dim at its min and at its max (the others typical)."""
    typical = {d.name: d.typical for d in dims}
    points = [typical]
    for d in dims:
        for size in (d.min, d.max):
            p = {**typical, d.name: size}
            if p not in points:
                points.append(p)
    return points


def point_label(point: Mapping[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "static"


def feeds_at(
    specs: list[TensorSpec],
    point: Mapping[str, int],
    batch: str | None,
    samples: int,
    data: Mapping[str, np.ndarray] | None,
    seed: int,
) -> dict[str, np.ndarray]:
    """Inputs at one shape point: the validation data cropped or wrapped to each dynamic size, or
    generated in [low, high]. The sample axis holds at least ``samples`` rows, a multiple of its size."""
    rng = np.random.default_rng(seed)
    n = samples if data is None else len(next(iter(data.values())))
    rows = -(-max(n, point.get(batch, 1)) // point[batch]) * point[batch] if batch else 0
    out = {}
    for s in specs:
        sizes = {i: (rows if d == batch else point[d]) for i, d in s.dynamic_dims.items()}
        if data is not None:
            a = data[s.name]
            for i, size in sizes.items():
                a = np.take(a, np.arange(size), axis=i, mode="wrap")
            out[s.name] = np.ascontiguousarray(a)
            continue
        shape = tuple(sizes[i] if i in sizes else int(d) for i, d in enumerate(s.shape))
        out[s.name] = random_values(s, rng, shape)
    return out


def run_at(
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    feeds: Mapping[str, np.ndarray],
    batch_size: int | None,
) -> dict[str, np.ndarray]:
    """Run over every sample in requests of ``batch_size`` rows (one request when there is no batch)."""
    n = len(next(iter(feeds.values())))
    step = batch_size or n
    parts = [run({k: v[i : i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def worst(per_point: list[tuple[dict[str, int], list[OutputErrors]]]) -> dict[str, dict[str, Any]]:
    """Per output, the largest of each figure over the shape points; violations name their point."""
    out: dict[str, dict[str, Any]] = {}
    for point, errs in per_point:
        for e in errs:
            j = e.to_json()
            cur = out.setdefault(e.name, {**j, "violations": [], "worst_at": {}})
            for k in METRICS:
                v = getattr(e, k)
                prev = cur[k]
                if j[k] is None or (prev is not None and v > prev):
                    cur[k] = j[k]
                    cur["worst_at"][k] = point_label(point)
                elif prev is not None and v == prev and k not in cur["worst_at"]:
                    cur["worst_at"][k] = point_label(point)
            cur["violations"] += [f"at {point_label(point)}: {v}" for v in e.violations]
    return out
