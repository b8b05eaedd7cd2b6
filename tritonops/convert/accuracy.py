"""The accuracy gate: run source and target on the same inputs and compare every output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonops.convert.recipe import Tolerance

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

    def to_json(self) -> dict[str, Any]:
        return {
            "max_abs": self.max_abs,
            "p99_abs": self.p99_abs,
            "max_rel": self.max_rel,
            "p99_rel": self.p99_rel,
            "norm_max": self.norm_max,
            "norm_p99": self.norm_p99,
            "mismatch": self.mismatch,
            "violations": self.violations,
        }


def output_errors(name: str, ref: np.ndarray, got: np.ndarray) -> OutputErrors:
    if ref.shape != got.shape:
        inf = float("inf")
        return OutputErrors(
            name, inf, inf, inf, inf, inf, inf, 1.0, [f"shape {list(got.shape)} != source {list(ref.shape)}"]
        )
    r = ref.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel()
    if r.size == 0:
        return OutputErrors(name, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if not np.all(np.isfinite(g)) and not np.array_equal(np.isfinite(g), np.isfinite(r)):
        inf = float("inf")
        return OutputErrors(
            name, inf, inf, inf, inf, inf, inf, 1.0, ["non-finite values where the source has none"]
        )
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


def gate(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance) -> list[OutputErrors]:
    """Errors per output, each with the limits it breaks (empty violations: within tolerance).

    Integer outputs (labels) are held to ``mismatch`` only: an abs error of 1 between class 2
    and class 1 means nothing. Float outputs are held to every other limit that is set.
    """
    out = []
    for name, r in ref.items():
        if name not in got:
            inf = float("inf")
            e = OutputErrors(name, inf, inf, inf, inf, inf, inf, 1.0, ["missing from the target's outputs"])
            out.append(e)
            continue
        e = output_errors(name, np.asarray(r), np.asarray(got[name]))
        if not e.violations:
            integer = np.issubdtype(np.asarray(r).dtype, np.integer) or np.asarray(r).dtype == bool
            checks = (
                ("mismatch",)
                if integer
                else ("max_abs", "p99_abs", "max_rel", "p99_rel", "norm_max", "norm_p99")
            )
            for k in checks:
                limit = getattr(tol, k)
                if limit is not None and getattr(e, k) > limit:
                    e.violations.append(f"{k} {getattr(e, k):.3g} > {limit:.3g}")
        out.append(e)
    return out
