"""``tritonops route``: the region's Envoy configuration, from what its servers actually serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, emit_json, get_config, info
from tritonops.cli.root import app


def _render(doc: dict[str, Any], c: Console) -> None:
    t = Table("server", "model", "versions", title=f"region {doc['region']}: served (routed)")
    for server, models in sorted(doc["served"].items()):
        for m, vs in sorted(models.items()):
            t.add_row(server, m, ",".join(str(v) for v in vs))
    c.print(t)
    for region, models in sorted(doc["peers"].items()):
        c.print(f"failover to {region}: {', '.join(models) or '(no model)'}", markup=False, highlight=False)
    if doc["unplaced"]:
        c.print(f"placed nowhere (503 + Retry-After): {', '.join(doc['unplaced'])}", markup=False, highlight=False)
    for p in doc["problems"]:
        c.print(f"problem: {p}", markup=False, highlight=False)
    what = "would write" if doc["dry_run"] else ("applied " + ",".join(doc["changed"]) if doc["changed"] else
                                                 "unchanged")  # fmt: skip
    c.print(f"version {doc['version']}: {doc['clusters']} clusters, {what} ({doc['duration_s']:.2f} s)")


def _show(output: OutputFormat, doc: dict[str, Any]) -> None:
    emit(output, doc, lambda c: _render(doc, c))


@app.command("route")
def route_cmd(
    region: Annotated[
        list[str] | None, typer.Option("--region", "-r", help="Region whose Envoy to configure (repeatable).")
    ] = None,
    all_regions: Annotated[bool, typer.Option("--all-regions", help="Every region with a route: section.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Render only; write nothing.")] = False,
    show: Annotated[
        Path | None, typer.Option("--show", help="Also write the rendered Envoy resources (JSON) to this file.")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Render a region's Envoy clusters and routes from what its servers serve (READY, at which
    version) and apply them; returns once Envoy's admin shows them accepted (exit 1 if rejected or
    Envoy unreachable, 5 if applied without a server that did not answer)."""
    import json

    from tritonops.errors import ConfigError
    from tritonops.route.update import routed_regions, update_routes

    cfg = get_config()
    regions = routed_regions(cfg) if all_regions else list(region or [])
    if not regions:
        raise ConfigError("name a region (--region R) or pass --all-regions")
    docs = []
    for r in regions:
        report = update_routes(cfg, r, dry_run=dry_run)
        doc = report.to_json()
        docs.append(doc)
        if show is not None:
            show.write_text(json.dumps(report.config.to_json(), indent=1) + "\n")
            info(f"Envoy resources written to {show}")
        if output is not OutputFormat.json:
            _show(output, doc)
    if output is OutputFormat.json:
        emit_json(docs[0] if len(docs) == 1 else {"regions": docs})
    skipped = [f"region {d['region']}: server {s} not read, left out of the routes" for d in docs
               for s in sorted(d["unreachable"])]  # fmt: skip
    for line in skipped:
        info(f"degraded: {line}")
    if skipped:
        raise typer.Exit(code=5)  # applied, but a server was skipped: cron must see it (as reconcile's exit 5)
