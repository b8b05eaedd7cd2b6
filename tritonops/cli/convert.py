"""``tritonops convert``: recipes -> ONNX / fp16 / int8 / TensorRT versions, gated on accuracy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, err_console, human_bytes
from tritonops.cli.root import app
from tritonops.errors import AccuracyError, ConversionError, ExitCode

if TYPE_CHECKING:
    from tritonops.convert import ConvertReport

# Written, but a target the recipe marks optional failed or was rejected (README: Exit codes).
EXIT_OPTIONAL_FAILED = ExitCode.OPTIONAL_FAILED


def _worst(acc: dict[str, Any], key: str) -> float | None:
    vals = [o.get(key) for o in acc.get("outputs", {}).values() if o.get(key) is not None]
    return max(vals) if vals else None


def _speed(sp: dict[str, Any], batch: str, key: str) -> str:
    b = sp.get("batches", {}).get(batch)
    return "-" if not b else (f"{b[key]:.3f}" if key.endswith("_ms") else f"{b[key]:,.0f}")


def _error_figure(o: dict[str, Any]) -> str:
    """One figure per output: mismatch for labels, the normalised max error otherwise."""
    key = "mismatch" if o.get("kind") == "labels" else "norm_max"
    v = o.get(key)
    return f"{key} {'n/a' if v is None else f'{v:.2e}'}" + (" !" if o.get("violations") else "")


def _shapes_table(report: ConvertReport) -> Table:
    t = Table("model", "target", "shape", "errors per output", title="accuracy at each shape checked")
    for rr in report.recipes:
        for r in rr.targets:
            for sh in r.accuracy.get("shapes", []):
                label = " ".join(f"{k}={v}" for k, v in sh["dims"].items()) or "static"
                figures = "; ".join(f"{n}: {_error_figure(o)}" for n, o in sh["outputs"].items())
                t.add_row(r.model, r.target, label, figures)
    return t


def _render(report: ConvertReport, c: Console) -> None:
    t = Table(
        "model",
        "target",
        "status",
        "version",
        "size",
        "norm max err",
        "p50 ms b1",
        "p50 ms b32",
        "samples/s b32",
        title="tritonops convert",
    )
    for rr in report.recipes:
        for r in rr.targets:
            nm = _worst(r.accuracy, "norm_max")
            t.add_row(
                r.model,
                r.target,
                r.status.value,
                str(r.version or "-"),
                human_bytes(r.size_bytes),
                "-" if nm is None else f"{nm:.2e}",
                _speed(r.speed, "1", "p50_ms"),
                _speed(r.speed, "32", "p50_ms"),
                _speed(r.speed, "32", "throughput_per_s"),
            )
    c.print(t)
    c.print(_shapes_table(report))
    for rr in report.recipes:
        for r in rr.targets:
            if r.reason and r.status.is_problem:
                c.print(f"{r.model} ({r.target}) {r.status}: {r.reason}", markup=False, highlight=False)
        c.print(f"repository: {rr.repository}", markup=False, highlight=False)


@app.command("convert")
def convert_cmd(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML files (converters/<name>.yaml).")],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="Build only this target (repeatable): onnx, onnx-fp16, "
            "onnx-int8-dynamic, onnx-int8-static, tensorrt-fp16, tensorrt-int8.",
        ),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option("--repo", help="Model repository to add versions to (overrides the recipe's)."),
    ] = None,
    select: Annotated[
        str | None, typer.Option("--select", help="'fastest': keep only the fastest target within tolerance.")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="onnxruntime (platform onnxruntime_onnx) or onnxruntime-python "
            "(model.py serving the ONNX file in the python backend); overrides the recipe's.",
        ),
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Convert models from recipes into repository versions gated on accuracy."""
    # heavy (onnx, onnxruntime): only when converting
    from tritonops.convert import TargetStatus, convert

    console = err_console()
    if sys.stderr.isatty():
        with console.status("converting ...") as status:
            report = convert(
                recipes,
                targets=target,
                repo=repo,
                select=select,
                runtime=runtime,
                progress=lambda m: status.update(m),
            )
    else:
        report = convert(recipes, targets=target, repo=repo, select=select, runtime=runtime)
    emit(output, report.to_json(), lambda c: _render(report, c))
    if report.written and report.problems():
        # Optional targets failed: the others are written; a distinct exit code says so.
        for p in report.problems():
            console.print(f"warning: not written: {p}", markup=False, highlight=False)
        raise typer.Exit(code=EXIT_OPTIONAL_FAILED)
    if not report.written:
        problems = report.problems()
        if problems:
            first = problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            raise (
                AccuracyError(f"nothing written: {first}")
                if report.problem_targets()[0].status is TargetStatus.rejected
                else ConversionError(f"nothing written: {first}")
            )
        raise ConversionError("nothing written: no target passed")
