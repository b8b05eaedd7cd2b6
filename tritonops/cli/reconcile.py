"""``tritonops plan``, ``tritonops apply`` and ``tritonops reconcile``: place published models on servers."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, get_config, human_bytes, info
from tritonops.cli.root import app
from tritonops.errors import ExitCode

if TYPE_CHECKING:  # imported inside the commands: keeps `tritonops --help` fast
    from tritonops.config import Config
    from tritonops.reconcile import runner
    from tritonops.reconcile.plan import Plan

RegionOpt = Annotated[str, typer.Option("--region", "-r", help="Region whose servers to reconcile.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Allow a plan that unloads all or most models.")]
VerifyContentOpt = Annotated[
    bool,
    typer.Option(
        "--verify-content",
        help="Before loading a version, download and hash its files (default: size, recorded sha256, "
        "no extra objects).",
    ),
]
MetricsOpt = Annotated[
    Path | None,
    typer.Option("--metrics-file", help="Prometheus textfile to write (default: in the state dir)."),
]


def _render_placement(placement: dict[str, Any], c: Console) -> None:
    """The region's placement: model -> servers, with the demand and cost behind each."""
    t = Table("model", "servers", "wanted", "demand", "footprint", "priority s/GiB", title="region placement")
    for m, d in placement["models"].items():
        if d["servers"]:
            servers = ", ".join(f"{s}" + ("" if r["decision"] in ("keep", "pinned") else f" ({r['decision']})")
                                for s, r in d["servers"].items())  # fmt: skip
            t.add_row(m, servers, str(d["wanted"]), f"{d['demand']:g}", human_bytes(d["footprint_bytes"]),
                      f"{d['priority']:.4g}")  # fmt: skip
    c.print(t)
    c.print(f"{placement['distinct_models']} models, {placement['replicas']} replicas; "
            f"{placement['loads']} loads, {placement['evictions']} evictions this run", highlight=False)  # fmt: skip


def _render_plan(plan: Plan, c: Console) -> None:
    if plan.placement is not None:
        _render_placement(plan.placement, c)
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
    noted = {n["message"] for n in doc["notes"]}
    for line in doc.get("refused", []):
        if line not in noted:  # `apply` of a saved plan: the refusal happened after planning
            c.print(f"problem: {line}", markup=False, highlight=False)
    c.print(
        f"region {doc['region']}: {len(doc['results'])} actions, {doc['failed']} failed, "
        f"drift {doc['drift']}, {doc['duration_s']:.2f} s"
    )


@app.command("plan")
def plan_cmd(
    region: RegionOpt,
    out: Annotated[Path | None, typer.Option("--out", help="Save the plan for `tritonops apply FILE`.")] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 when nothing to do, 2 when changes are pending."),
    ] = False,
    verify_content: VerifyContentOpt = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show what reconcile would load, unload, reload or evict in a region, and why."""
    from tritonops.reconcile import runner

    ctx = runner.context(get_config(), region)
    plan = runner.make_region_plan(ctx, verify_content)
    if out is not None:
        runner.save_plan(plan, out)
        info(f"plan saved to {out}")
    emit(
        output,
        {k: v for k, v in plan.to_json().items() if k != "format_version"},
        lambda c: _render_plan(plan, c),
    )
    if detailed_exitcode and plan.has_changes:
        raise typer.Exit(code=ExitCode.CHANGES)


@app.command("apply")
def apply_cmd(
    plan_file: Annotated[Path, typer.Argument(help="A plan saved by `tritonops plan --out FILE`.")],
    force: ForceOpt = False,
    metrics_file: MetricsOpt = None,
    verify_content: VerifyContentOpt = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Apply a saved plan exactly; refuse it if the servers or published models changed since."""
    from tritonops.reconcile import runner

    plan = runner.load_plan(plan_file)
    ctx = runner.context(get_config(), plan.region)
    report = runner.apply_plan_file(ctx, plan, force, metrics_file, verify_content)
    _finish(report, output)


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")


def parse_every(text: str) -> float:
    """``15s``, ``500ms``, ``2m``, ``1h`` or plain seconds -> seconds (at least 1 s)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration such as 15s, 2m or 1h", param_hint="--every")
    s = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if s < 1:
        raise typer.BadParameter(f"{text!r}: the interval must be at least 1s", param_hint="--every")
    return s


def reconcile_region(cfg: Config, region: str) -> int:
    """Reconcile ``region`` once, now, under its lock: the number of failed actions (LockHeldError if
    another run holds the lock). What a rollout step hands its controller (release.controller.Reconciler)."""
    from tritonops.reconcile.runner import context, reconcile

    return reconcile(context(cfg, region)).failed


@app.command("reconcile")
def reconcile_cmd(
    region: RegionOpt,
    force: ForceOpt = False,
    metrics_file: MetricsOpt = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="Loop: plan and apply every interval (15s, 1m) until SIGTERM/SIGINT."),
    ] = None,
    verify_content: VerifyContentOpt = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Plan and apply once under the region's lock; for cron (exit 5: a server skipped or an action
    failed; exit 3: another reconcile holds the lock; 1: a version refused by the bucket check).

    With --every: one process that holds the lock and runs every interval until SIGTERM or SIGINT."""
    from tritonops.reconcile import runner

    every_s = parse_every(every) if every is not None else None
    ctx = runner.context(get_config(), region)
    if every_s is not None:
        _loop(ctx, every_s, force, metrics_file, output)
        return
    report = runner.reconcile(ctx, force, metrics_file, verify_content)
    _finish(report, output)


def _loop(ctx: runner.Context, every_s: float, force: bool, metrics_file: Path | None, output: OutputFormat) -> None:
    """Each run's outcome: a line on stderr (table) or one JSON document per line on stdout (json)."""
    from tritonops.reconcile import runner

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        info(f"region {ctx.region}: {signal.Signals(signum).name}: stopping after the current run")
        stop.set()

    def on_run(report: runner.RunReport | None, error: str) -> None:
        if output is OutputFormat.json:
            line: dict[str, Any] = (
                report.to_json() if report else {"format_version": 1, "region": ctx.region, "error": error}
            )
            sys.stdout.write(json.dumps(line, sort_keys=False) + "\n")
            sys.stdout.flush()
        elif report is None:
            info(f"region {ctx.region}: run failed: {error}")
        else:
            doc = report.to_json()
            summary = ", ".join(f"{k} {v}" for k, v in doc["summary"].items())
            info(f"region {ctx.region}: {summary}; {doc['failed']} failed, drift {doc['drift']}, "
                 f"{doc['duration_s']:.2f} s")  # fmt: skip

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        runs = runner.reconcile_loop(ctx, every_s, stop, force, metrics_file, on_run)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    info(f"region {ctx.region}: loop stopped after {runs} runs")


def _finish(report: runner.RunReport, output: OutputFormat) -> None:
    from rich.markup import escape

    doc = report.to_json()
    emit(output, {k: v for k, v in doc.items() if k != "format_version"}, lambda c: _render_report(doc, c))
    for line in report.degraded_reasons():
        info(escape(f"degraded: region {report.region}: {line}"))
    if report.refused:
        # A version whose bucket objects differ from its manifest was not loaded (quarantined): the
        # user must repair the bucket; this takes precedence over degraded (its own load fails too).
        raise typer.Exit(code=ExitCode.ERROR)
    if report.degraded:
        # Recorded in the journal and the metrics textfile too; a distinct exit makes cron notice.
        raise typer.Exit(code=ExitCode.DEGRADED)
