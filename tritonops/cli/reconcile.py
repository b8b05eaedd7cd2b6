"""``tritonops plan``, ``tritonops apply`` and ``tritonops reconcile``: place published models on servers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli import app
from tritonops.cli._common import OutputFormat, OutputOpt, emit, get_config, human_bytes, info

if TYPE_CHECKING:  # imported inside the commands: keeps `tritonops --help` fast
    from tritonops.reconcile import runner
    from tritonops.reconcile.plan import Plan

RegionOpt = Annotated[str, typer.Option("--region", "-r", help="Region whose servers to reconcile.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Allow a plan that unloads all or most models.")]
MetricsOpt = Annotated[
    Path | None,
    typer.Option("--metrics-file", help="Prometheus textfile to write (default: in the state dir)."),
]


def _render_plan(plan: Plan, c: Console) -> None:
    if not plan.actions:
        c.print(f"region {plan.region}: nothing to do")
    else:
        t = Table("kind", "server", "model", "version", "strategy", "reason", "free after")
        for a in plan.actions:
            free = ", ".join(f"{d}={human_bytes(b)}" for d, b in a.memory_free_after) or "-"
            t.add_row(a.kind, a.server, a.model, str(a.version), a.strategy or "-", a.reason, free)
        c.print(t)
    for n in plan.notes:
        c.print(f"{n.kind}: {n.message}", markup=False, highlight=False)
    c.print(f"digest {plan.digest[:12]}  " + ", ".join(f"{k} {v}" for k, v in plan.summary().items()))


def _render_report(doc: dict[str, Any], c: Console) -> None:
    t = Table("kind", "server", "model", "version", "strategy", "result", "seconds", "error")
    for r in doc["results"]:
        t.add_row(
            r["kind"],
            r["server"],
            r["model"],
            str(r["version"]),
            r["strategy"] or "-",
            r["result"],
            f"{r['duration_s']:.2f}",
            r["error"] + (" (quarantined)" if r["quarantined"] else ""),
        )
    if doc["results"]:
        c.print(t)
    for n in doc["notes"]:
        c.print(f"{n['kind']}: {n['message']}", markup=False, highlight=False)
    c.print(
        f"region {doc['region']}: {len(doc['results'])} actions, {doc['failed']} failed, "
        f"drift {doc['drift']}, {doc['duration_s']:.2f} s"
    )


@app.command("plan")
def plan_cmd(
    region: RegionOpt,
    out: Annotated[
        Path | None, typer.Option("--out", help="Save the plan for `tritonops apply FILE`.")
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 when nothing to do, 2 when changes are pending."),
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show what reconcile would load, unload, reload or evict in a region, and why."""
    from tritonops.reconcile import runner

    ctx = runner.context(get_config(), region)
    plan = runner.make_region_plan(ctx)
    if out is not None:
        runner.save_plan(plan, out)
        info(f"plan saved to {out}")
    emit(
        output,
        {k: v for k, v in plan.to_json().items() if k != "format_version"},
        lambda c: _render_plan(plan, c),
    )
    if detailed_exitcode and plan.has_changes:
        raise typer.Exit(code=2)


@app.command("apply")
def apply_cmd(
    plan_file: Annotated[Path, typer.Argument(help="A plan saved by `tritonops plan --out FILE`.")],
    force: ForceOpt = False,
    metrics_file: MetricsOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Apply a saved plan exactly; refuse it if the servers or published models changed since."""
    from tritonops.reconcile import runner

    plan = runner.load_plan(plan_file)
    ctx = runner.context(get_config(), plan.region)
    report = runner.apply_plan_file(ctx, plan, force, metrics_file)
    _finish(report, output)


@app.command("reconcile")
def reconcile_cmd(
    region: RegionOpt,
    force: ForceOpt = False,
    metrics_file: MetricsOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Plan and apply once under the region's lock; for cron (exit 5: a server skipped or an action
    failed; exit 3: another reconcile holds the lock)."""
    from tritonops.reconcile import runner

    ctx = runner.context(get_config(), region)
    report = runner.reconcile(ctx, force, metrics_file)
    _finish(report, output)


def _finish(report: runner.RunReport, output: OutputFormat) -> None:
    from rich.markup import escape

    from tritonops.reconcile.runner import EXIT_DEGRADED

    doc = report.to_json()
    emit(output, {k: v for k, v in doc.items() if k != "format_version"}, lambda c: _render_report(doc, c))
    if report.degraded:
        # Recorded in the journal and the metrics textfile too; a distinct exit makes cron notice.
        for line in report.degraded_reasons():
            info(escape(f"degraded: region {report.region}: {line}"))
        raise typer.Exit(code=EXIT_DEGRADED)
