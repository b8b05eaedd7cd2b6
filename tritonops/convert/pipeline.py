"""``tritonops convert``: recipe -> export -> targets -> accuracy gate -> speed -> repository.

Nothing reaches the repository until every recipe's every target has been built and has passed
its gate (or, with ``select="fastest"``, until the fastest passing target is known): a rejected
target means a non-zero exit and an unchanged repository, with the numbers in the report. A target
the recipe marks ``optional`` is the exception: its failure is reported, the others are written.

The gate runs every target at each dynamic dimension's minimum, typical and maximum size
(accuracy.shape_points), against the source run at the same shapes.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.convert import accuracy, optimise, speed
from tritonops.convert.accuracy import Dim, gate
from tritonops.convert.export import Exported, Feeds, example_feeds, export, input_specs, ort_runner
from tritonops.convert.model_folder import make_config, stage_version
from tritonops.convert.recipe import Recipe, TargetKind, TargetSpec, TensorSpec, load_recipe
from tritonops.errors import ConversionError, TritonOpsError
from tritonops.repo.model_config import Runtime
from tritonops.strenum import StrEnum

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class TargetStatus(StrEnum):
    pending = "pending"
    passed = "passed"  # exported and within tolerance
    rejected = "rejected"  # outside tolerance (the accuracy gate)
    failed = "failed"  # could not be built or checked
    not_selected = "not-selected"  # passed, but --select fastest chose another
    written = "written"  # added to the repository

    @property
    def is_problem(self) -> bool:
        return self in (TargetStatus.rejected, TargetStatus.failed)


@dataclass
class TargetResult:
    target: str
    model: str
    status: TargetStatus = TargetStatus.pending
    reason: str | None = None
    version: int | None = None
    size_bytes: int | None = None
    accuracy: dict[str, Any] = field(default_factory=dict)
    tolerance: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None
    optional: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": self.model,
            "optional": self.optional,
            "status": self.status.value,
            "reason": self.reason,
            "version": self.version,
            "size_bytes": self.size_bytes,
            "accuracy": self.accuracy,
            "tolerance": self.tolerance,
            "speed": self.speed,
            "build": self.build,
        }


@dataclass
class RecipeResult:
    recipe: str
    repository: str
    runtime: str
    export: dict[str, Any]
    targets: list[TargetResult]
    # Kept for the write step and for callers (bench); not serialised.
    exported: Exported | None = field(default=None, repr=False)
    recipe_obj: Recipe | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "repository": self.repository,
            "runtime": self.runtime,
            "export": self.export,
            "targets": [t.to_json() for t in self.targets],
        }


@dataclass
class ConvertReport:
    recipes: list[RecipeResult]
    written: bool = False

    @property
    def ok(self) -> bool:
        return self.written

    def problem_targets(self, *, optional: bool | None = None) -> list[TargetResult]:
        """Rejected or failed targets; ``optional`` filters on the recipe's mark."""
        return [
            t
            for r in self.recipes
            for t in r.targets
            if t.status.is_problem and (optional is None or t.optional == optional)
        ]

    def problems(self, *, optional: bool | None = None) -> list[str]:
        """Rejected or failed targets, one line each."""
        return [
            f"{t.model} ({t.target}{', optional' if t.optional else ''}): {t.status}: {t.reason}"
            for t in self.problem_targets(optional=optional)
        ]

    def to_json(self) -> dict[str, Any]:
        return {"written": self.written, "recipes": [r.to_json() for r in self.recipes]}


def _data(
    recipe: Recipe, spec_data: str | None, samples: int, seed: int, specs: list[TensorSpec], field_name: str
) -> Feeds:
    if spec_data:
        return optimise.load_npz(recipe.resolve(spec_data), specs, f"{recipe.path}: {field_name}.data")
    return example_feeds(specs, samples, seed)


@dataclass
class Check:
    """One shape point of the gate: its sizes, the inputs, and the source's outputs on them."""

    point: dict[str, int]
    batch_size: int | None  # rows per request along the sample axis (None: one request)
    feeds: Feeds
    ref: dict[str, np.ndarray]
    samples: int  # distinct samples (the feeds wrap them to a multiple of the batch size)


_ORT_OP_PATTERNS = (
    # onnxruntime has no kernel for this operator at this opset (e.g. opset 1-6 ops).
    (re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'"),
     "onnxruntime cannot run operator {0} at opset {1} (node '{2}')"),
    (re.compile(r"(?:([\w.]+):)?(\w+)\((-?\d+)\) is not a registered function/op"),
     "onnxruntime does not know operator {1} (domain '{0}')"),
    (re.compile(r"No Op registered for (\w+) with domain_version of (\d+)"),
     "unknown operator {0} (opset {1})"),
    (re.compile(r"Unrecognized attribute: (\w+) for operator (\w+)"),
     "operator {1} has an attribute onnxruntime does not know ({0}): an old or unsupported opset"),
)


def describe_failure(e: BaseException) -> str:
    """A converter's or runtime's exception as one line, naming the operator when it names one."""
    text = str(e).strip()
    for pattern, template in _ORT_OP_PATTERNS:
        m = pattern.search(text)
        if m:
            return template.format(*(g or "" for g in m.groups())).replace(" (node '')", "")
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _export(recipe: Recipe, out: Path) -> Exported:
    try:
        return export(recipe, out)
    except TritonOpsError:
        raise
    except Exception as e:  # noqa: BLE001 - onnxruntime refusing the source graph: one line, not a traceback
        raise ConversionError(f"{recipe.path}: source: {describe_failure(e)}") from None


def _checks(
    recipe: Recipe, exp: Exported, specs: list[TensorSpec], dims: list[Dim], data: Feeds | None
) -> list[Check]:
    """The source's outputs at every shape point (min / typical / max of each dynamic dim)."""
    v = recipe.validation
    batch = accuracy.batch_dim(specs)
    out = []
    for point in accuracy.shape_points(dims):
        feeds = accuracy.feeds_at(specs, point, batch, v.samples, data, v.seed)
        size = point[batch] if batch else None
        try:
            ref = accuracy.run_at(exp.run_source, feeds, size)
        except Exception as e:  # noqa: BLE001 - the user's model at a size it does not take
            raise ConversionError(
                f"{recipe.path}: validation.dims: the source fails at {accuracy.point_label(point)} "
                f"(set the sizes to check in validation.dims): {describe_failure(e)}"
            ) from None
        distinct = len(next(iter(data.values()))) if data is not None else v.samples
        out.append(Check(point, size, feeds, ref, distinct))
    return out


def _targets(recipe: Recipe, only: list[TargetKind] | None) -> list[TargetSpec]:
    if not only:
        return list(recipe.targets)
    have = {t.kind: t for t in recipe.targets}
    # A target the recipe does not list is built with its precision's default tolerance.
    return [have.get(k) or TargetSpec(kind=k) for k in only]


def parse_targets(names: list[str] | None) -> list[TargetKind] | None:
    if not names:
        return None
    out = []
    for n in names:
        try:
            out.append(TargetKind(n))
        except ValueError:
            raise ConversionError(
                f"--target: unknown target {n!r} (known: {', '.join(k.value for k in TargetKind)})"
            ) from None
    return out


def _build_target(
    recipe: Recipe,
    t: TargetSpec,
    res: TargetResult,
    exp: Exported,
    specs: list[TensorSpec],
    work: Path,
    calibration: Feeds | None,
    checks: list[Check],
) -> None:
    from tritonops.convert import tensorrt

    batch_dynamic = all(0 in s.dynamic_dims for s in specs)
    if t.kind.is_tensorrt:
        out_dir = work / f"trt-{t.kind.value}"
        out_dir.mkdir(exist_ok=True)
        res.build = tensorrt.build_plan(
            t.kind,
            res.model,
            exp.path,
            specs,
            recipe.triton.max_batch_size or 1,
            out_dir,
            calibration,
            recipe.path.parent / ".tritonops-trt-timing.cache",
        )
        plan = out_dir / res.build["plan"]
        res.file = plan
        res.size_bytes = plan.stat().st_size
        run = tensorrt.plan_runner(plan)
    else:
        dst = work / f"{t.kind.value}.onnx"
        res.build = optimise.build_onnx_target(t.kind, exp.path, dst, calibration, batch_dynamic)
        res.file = dst
        res.size_bytes = dst.stat().st_size
        run = ort_runner(dst)
    per_point = []
    for c in checks:
        try:
            got = accuracy.run_at(run, c.feeds, c.batch_size)
        except Exception as e:  # noqa: BLE001 - a target that cannot run at a size its source takes
            raise ConversionError(
                f"{res.model}: target {t.kind.value} fails at {accuracy.point_label(c.point)}: "
                f"{describe_failure(e)}"
            ) from None
        per_point.append((c.point, gate(c.ref, got, t.effective_tolerance)))
    outputs = accuracy.worst(per_point)
    res.tolerance = {
        name: t.effective_tolerance(o["kind"]).model_dump(exclude_none=True) for name, o in outputs.items()
    }
    res.accuracy = {
        "samples": checks[0].samples,
        "shapes": [
            {"dims": c.point, "outputs": {e.name: e.to_json() for e in errs}}
            for c, (_, errs) in zip(checks, per_point, strict=True)
        ],
        "outputs": outputs,
    }
    bad = [f"{name}: {v}" for name, o in outputs.items() for v in o["violations"]]
    if bad:
        res.status = TargetStatus.rejected
        res.reason = "beyond tolerance: " + "; ".join(bad)
        return
    res.status = TargetStatus.passed
    if not t.kind.is_tensorrt:
        sp = recipe.speed
        res.speed = speed.measure(res.file, specs, sp.batches, sp.iterations, sp.budget_s, sp.threads)


def _convert_one(
    recipe: Recipe,
    only: list[TargetKind] | None,
    repo: Path | None,
    runtime: str,
    work: Path,
    progress: Progress,
) -> RecipeResult:
    name = recipe.destination.model
    progress(f"{name}: exporting the {recipe.source.kind} source")
    exp = _export(recipe, work / "fp32.onnx")
    specs = input_specs(recipe, exp)
    targets = _targets(recipe, only)
    v = recipe.validation
    data = optimise.load_npz(recipe.resolve(v.data), specs, f"{recipe.path}: validation.data") if v.data else None
    dims = accuracy.dim_ranges(specs, v.dims, recipe.triton.max_batch_size, data, f"{recipe.path}: validation")
    checks = _checks(recipe, exp, specs, dims, data)
    calibration = None
    if any(t.kind.needs_calibration for t in targets):
        calibration = _data(
            recipe,
            recipe.calibration.data,
            recipe.calibration.samples,
            recipe.calibration.seed + 1,
            specs,
            "calibration",
        )
    missing = sorted(set(checks[0].ref) - {o.name for o in exp.outputs})
    if missing:
        raise ConversionError(
            f"{recipe.path}: source outputs {missing} are not outputs of the exported graph"
        )
    results = []
    for t in targets:
        res = TargetResult(t.kind.value, recipe.model_name(t), optional=t.optional)
        results.append(res)
        progress(f"{name}: building {t.kind.value}")
        try:
            _build_target(recipe, t, res, exp, specs, work, calibration, checks)
        except TritonOpsError as e:
            res.status, res.reason = TargetStatus.failed, str(e)
        except Exception as e:  # noqa: BLE001 - a converter's own error: reported per target, one line
            res.status, res.reason = TargetStatus.failed, describe_failure(e)
        log.info("%s %s: %s %s", name, t.kind.value, res.status, res.reason or "")
    info = {**exp.info, "dims": {d.name: d.to_json() for d in dims}}
    return RecipeResult(str(recipe.path), str(recipe.repository_path(repo)), runtime, info, results, exp, recipe)


def _select_fastest(results: list[RecipeResult]) -> None:
    for rr in results:
        passed = [t for t in rr.targets if t.status == TargetStatus.passed]
        if not passed:
            continue

        def score(t: TargetResult) -> float:
            b = t.speed.get("batches", {})
            # The largest measured batch: throughput is what a served model is chosen for.
            return float(b[max(b, key=int)]["throughput_per_s"]) if b else 0.0

        best = max(passed, key=score)
        for t in passed:
            if t is not best:
                t.status, t.reason = TargetStatus.not_selected, f"slower than {best.target} (--select fastest)"


def _preflight(results: list[RecipeResult]) -> None:
    """Refuse before writing anything what add_version would refuse midway (after other models)."""
    from tritonops.repo.manifest import MANIFEST_NAME

    for rr in results:
        for t in rr.targets:
            d = Path(rr.repository) / t.model
            if t.status == TargetStatus.passed and d.is_dir() and any(d.iterdir()) and not (d / MANIFEST_NAME).exists():
                raise ConversionError(
                    f"{d}: exists but has no {MANIFEST_NAME} (not created by tritonops); nothing written"
                )


def _write(rr: RecipeResult, progress: Progress) -> None:
    from tritonops.repo.repository import add_version

    recipe, exp = rr.recipe_obj, rr.exported
    assert recipe is not None and exp is not None
    root = Path(rr.repository)
    with tempfile.TemporaryDirectory(prefix="tritonops-stage-") as tmp:
        for t in rr.targets:
            if t.status != TargetStatus.passed:
                continue
            assert t.file is not None
            kind = TargetKind(t.target)
            folder = Path(tmp) / t.model
            if kind.is_tensorrt:
                folder.mkdir(parents=True)
                (folder / t.file.name).write_bytes(t.file.read_bytes())
                cfg = make_config(
                    t.model,
                    recipe.triton,
                    exp.inputs,
                    exp.outputs,
                    Runtime.tensorrt,
                    t.build.get("cc_model_filenames"),
                )
                runtime = Runtime.tensorrt.value
            else:
                stage_version(folder, t.file, rr.runtime)
                cfg = make_config(t.model, recipe.triton, exp.inputs, exp.outputs, rr.runtime)
                runtime = rr.runtime
            progress(f"{t.model}: adding a version to {root}")
            entry = add_version(
                root,
                t.model,
                folder,
                config=cfg,
                source={
                    "recipe": str(recipe.path),
                    "recipe_sha256": recipe.sha256,
                    "target": t.target,
                    "precision": kind.precision,
                    **exp.info,
                },
                metadata={
                    "runtime": runtime,
                    "build": t.build,
                    "accuracy": t.accuracy,
                    "tolerance": t.tolerance,
                    "speed": t.speed,
                },
            )
            t.version = entry.version
            t.status = TargetStatus.written


def convert(
    recipe_paths: list[Path],
    *,
    targets: list[str] | None = None,
    repo: Path | None = None,
    select: str | None = None,
    runtime: str | None = None,
    progress: Progress | None = None,
) -> ConvertReport:
    """Convert every recipe; write to the repository only if every target passed (see module doc).

    Raises ConversionError for bad input (recipe, factory, input spec, data files), before
    anything is written. Rejected or failed targets are reported in the returned report, whose
    ``written`` is then False.
    """
    if select not in (None, "fastest"):
        raise ConversionError(f"--select: unknown policy {select!r} (known: fastest)")
    if runtime not in (None, Runtime.onnxruntime, Runtime.onnxruntime_python):
        raise ConversionError(
            f"--runtime: unknown runtime {runtime!r} (known: onnxruntime, onnxruntime-python)"
        )
    if not recipe_paths:
        raise ConversionError("no recipe given")
    only = parse_targets(targets)
    say = progress or (lambda m: log.info("%s", m))
    recipes = [load_recipe(Path(p)) for p in recipe_paths]
    results: list[RecipeResult] = []
    with tempfile.TemporaryDirectory(prefix="tritonops-convert-") as tmp:
        for i, recipe in enumerate(recipes):
            work = Path(tmp) / str(i)
            work.mkdir()
            results.append(_convert_one(recipe, only, repo, runtime or recipe.triton.runtime, work, say))
        report = ConvertReport(results)
        if select == "fastest":
            _select_fastest(results)
            if any(not any(t.status == TargetStatus.passed for t in rr.targets) for rr in results):
                return report
        elif report.problems(optional=False) or any(
            not any(t.status == TargetStatus.passed for t in rr.targets) for rr in results
        ):
            return report
        _preflight(results)
        for rr in results:
            _write(rr, say)
        report.written = True
    return report
