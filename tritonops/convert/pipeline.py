"""``tritonops convert``: recipe -> export -> targets -> accuracy gate -> speed -> repository.

Nothing reaches the repository until every recipe's every target has been built and has passed
its gate (or, with ``select="fastest"``, until the fastest passing target is known): a rejected
target means a non-zero exit and an unchanged repository, with the numbers in the report.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.convert import optimise, speed
from tritonops.convert.accuracy import gate
from tritonops.convert.export import Exported, Feeds, Runner, example_feeds, export, input_specs, ort_runner
from tritonops.convert.model_folder import make_config, stage_version
from tritonops.convert.recipe import Recipe, TargetKind, TargetSpec, TensorSpec, load_recipe
from tritonops.errors import ConversionError, TritonOpsError

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class TargetResult:
    target: str
    model: str
    status: str = "pending"  # passed | rejected | failed | not-selected | written
    reason: str | None = None
    version: int | None = None
    size_bytes: int | None = None
    accuracy: dict[str, Any] = field(default_factory=dict)
    tolerance: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": self.model,
            "status": self.status,
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

    def problems(self) -> list[str]:
        return [
            f"{t.model} ({t.target}): {t.status}: {t.reason}"
            for r in self.recipes
            for t in r.targets
            if t.status in ("rejected", "failed")
        ]

    def to_json(self) -> dict[str, Any]:
        return {"written": self.written, "recipes": [r.to_json() for r in self.recipes]}


def _data(
    recipe: Recipe, spec_data: str | None, samples: int, seed: int, specs: list[TensorSpec], field_name: str
) -> Feeds:
    if spec_data:
        return optimise.load_npz(recipe.resolve(spec_data), specs, f"{recipe.path}: {field_name}.data")
    return example_feeds(specs, samples, seed)


def _run_chunked(run: Runner, feeds: Feeds, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Run over all samples; in chunks of the static first dimension when there is no batch dim."""
    n = len(next(iter(feeds.values())))
    static = [s.shape[0] for s in specs if 0 not in s.dynamic_dims]
    step = int(static[0]) if static else n
    parts = [run({k: v[i : i + step] for k, v in feeds.items()}) for i in range(0, n - step + 1, step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


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
    val: Feeds,
    ref: dict[str, np.ndarray],
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
    got = _run_chunked(run, val, specs)
    tol = t.effective_tolerance()
    res.tolerance = tol.model_dump(exclude_none=True)
    errs = gate(ref, got, tol)
    res.accuracy = {"samples": len(next(iter(val.values()))), "outputs": {e.name: e.to_json() for e in errs}}
    bad = [f"{e.name}: {v}" for e in errs for v in e.violations]
    if bad:
        res.status = "rejected"
        res.reason = "beyond tolerance: " + "; ".join(bad)
        return
    res.status = "passed"
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
    exp = export(recipe, work / "fp32.onnx")
    specs = input_specs(recipe, exp)
    targets = _targets(recipe, only)
    val = _data(
        recipe, recipe.validation.data, recipe.validation.samples, recipe.validation.seed, specs, "validation"
    )
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
    ref = _run_chunked(exp.run_source, val, specs)
    missing = sorted(set(ref) - {o.name for o in exp.outputs})
    if missing:
        raise ConversionError(
            f"{recipe.path}: source outputs {missing} are not outputs of the exported graph"
        )
    results = []
    for t in targets:
        res = TargetResult(t.kind.value, recipe.model_name(t))
        results.append(res)
        progress(f"{name}: building {t.kind.value}")
        try:
            _build_target(recipe, t, res, exp, specs, work, calibration, val, ref)
        except TritonOpsError as e:
            res.status, res.reason = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - a converter's own error: reported per target, one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            res.status, res.reason = "failed", f"{type(e).__name__}: {first}"
        log.info("%s %s: %s %s", name, t.kind.value, res.status, res.reason or "")
    return RecipeResult(
        str(recipe.path), str(recipe.repository_path(repo)), runtime, exp.info, results, exp, recipe
    )


def _select_fastest(results: list[RecipeResult]) -> None:
    for rr in results:
        passed = [t for t in rr.targets if t.status == "passed"]
        if not passed:
            continue

        def score(t: TargetResult) -> float:
            b = t.speed.get("batches", {})
            # The largest measured batch: throughput is what a served model is chosen for.
            return float(b[max(b, key=int)]["throughput_per_s"]) if b else 0.0

        best = max(passed, key=score)
        for t in passed:
            if t is not best:
                t.status, t.reason = "not-selected", f"slower than {best.target} (--select fastest)"


def _preflight(results: list[RecipeResult]) -> None:
    """Refuse before writing anything what add_version would refuse midway (after other models)."""
    from tritonops.repo.manifest import MANIFEST_NAME

    for rr in results:
        for t in rr.targets:
            d = Path(rr.repository) / t.model
            if t.status == "passed" and d.is_dir() and any(d.iterdir()) and not (d / MANIFEST_NAME).exists():
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
            if t.status != "passed":
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
                    "tensorrt",
                    t.build.get("cc_model_filenames"),
                )
                runtime = "tensorrt"
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
            t.status = "written"


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
    if runtime not in (None, "onnxruntime", "onnxruntime-python"):
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
            if any(not any(t.status == "passed" for t in rr.targets) for rr in results):
                return report
        elif report.problems():
            return report
        _preflight(results)
        for rr in results:
            _write(rr, say)
        report.written = True
    return report
