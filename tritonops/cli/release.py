"""``tritonops release status``, ``promote``, ``rollback``, ``rollout start|advance|abort``."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, get_config, info
from tritonops.cli.root import app
from tritonops.errors import ConfigError, ExitCode

release_app = typer.Typer(help="Which version is live per region and server; staged rollouts.", no_args_is_help=True)
rollout_app = typer.Typer(help="Staged rollouts: canary servers, whole regions, waves; gated on metrics.",
                          no_args_is_help=True)  # fmt: skip
app.add_typer(release_app, name="release")
app.add_typer(rollout_app, name="rollout")

ModelArg = Annotated[str, typer.Argument(help="Model name.")]
RegionOpt = Annotated[str | None, typer.Option("--region", "-r", help="Region.")]
AllRegionsOpt = Annotated[bool, typer.Option("--all-regions", help="Every configured region.")]


class ServersChoice(str, enum.Enum):
    canary = "canary"
    all = "all"


def _regions(region: str | None, all_regions: bool) -> list[str]:
    cfg = get_config()
    if bool(region) == all_regions:
        raise typer.BadParameter("give exactly one of --region R or --all-regions")
    if region:
        cfg.region(region)
        return [region]
    if not cfg.regions:
        raise ConfigError("tritonops.yaml: regions: none configured")
    return list(cfg.regions)


def _render_status(doc: dict[str, Any], c: Console) -> None:
    for r in doc["regions"]:
        t = Table("model", "live", "previous", "canary", "pointer", "blocked", *sorted(r["servers"]))
        for m, d in sorted(r["models"].items()):
            canary = f"v{d['canary']['version']} on {' '.join(d['canary']['servers'])}" if d["canary"] else "-"
            served = []
            for s in sorted(r["servers"]):
                sv = r["servers"][s]
                served.append(",".join(map(str, sv["models"].get(m, []))) or "-" if sv["reachable"] else "down")
            t.add_row(m, str(d["live"]), str(d["previous"] or "-"), canary,
                      ",".join(map(str, d["pointer"])) + (" (lags)" if d["pointer_lags"] else ""),
                      str(len(d["blocked"])), *served)  # fmt: skip
        c.print(f"region {r['region']} (release mode {r['mode']})")
        c.print(t)
        for p in r["problems"]:
            c.print(f"problem: {p}", markup=False, highlight=False)
    for ro in doc["rollouts"]:
        gate = ro.get("gate") or {}
        c.print(f"rollout {ro['id']}: {ro['model']} v{ro['version']} step {ro['step'] + 1}/{len(ro['steps'])} "
                f"{ro['phase']}; bake left {ro.get('bake_left_s', 0):.0f} s; gate {gate.get('verdict', '-')}: "
                f"{'; '.join(gate.get('reasons', []))}", markup=False, highlight=False)  # fmt: skip
    for name, h in sorted(doc.get("leases", {}).items()):
        c.print(f"lease {name}: held by {h['host']} pid {h['pid']} ({h['purpose']}; "
                f"{'expired' if h['expired'] else 'expires in'} {abs(h['expires_in_s']):.0f} s"
                f"{' ago' if h['expired'] else ''})", markup=False, highlight=False)  # fmt: skip


@release_app.command("status")
def status_cmd(
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    region: RegionOpt = None,
    all_regions: AllRegionsOpt = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Per region and server: the live version, what each server serves, rollouts in progress, and
    who holds each lease (docs/multi-host.md)."""
    import contextlib
    import time

    from tritonops.errors import TritonOpsError
    from tritonops.regions import per_region
    from tritonops.release.controller import load_rollout, rollouts_dir
    from tritonops.release.ops import region_status
    from tritonops.store.lease import model_lease_name, region_leases
    from tritonops.store.shared_doc import shared_names

    cfg = get_config()
    res = per_region(_regions(region, all_regions or region is None), lambda r: region_status(cfg, r, model),
                     (TritonOpsError,))  # fmt: skip
    docs = [d for _, d in res.done]
    rollouts = []
    d = rollouts_dir(cfg)
    names = [model] if model else sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []
    leases: dict[str, dict[str, Any]] = {}  # multi-host: rollouts and leases in the regions' buckets
    for r in sorted(cfg.regions):
        with contextlib.suppress(TritonOpsError):  # a bucket down is reported by region_status above
            names += [] if model else shared_names(cfg, r)
            leases |= {f"{r}/{k}": v for k, v in region_leases(cfg, r).items()}
    for name in sorted(set(names)):
        ro = load_rollout(cfg, name)
        if ro is not None:
            left = ro.get("bake_started", 0) + ro["bake_s"] - time.time() if ro["phase"] == "bake" else 0
            home = sorted(ro["steps"][0]["targets"])[0] if ro["steps"] else ""
            rollouts.append({**{k: ro[k] for k in ("id", "model", "version", "step", "steps", "phase", "gate")},
                             "bake_left_s": max(0.0, left), "failure": ro.get("failure"),
                             "lease": leases.get(f"{home}/{model_lease_name(name)}")})  # fmt: skip
    doc = {"regions": docs, "rollouts": rollouts, "leases": leases, "failed": res.failed}
    emit(output, doc, lambda c: _render_status(doc, c))
    res.raise_if_failed("shown")
    if any(not s["reachable"] for r in docs for s in r["servers"].values()):
        raise typer.Exit(ExitCode.ERROR)


def _render_changes(changes: list[dict[str, Any]], c: Console) -> None:
    for ch in changes:
        c.print(f"region {ch['region']}: {ch['model']} {ch['action']}: live {ch['live_before']} -> "
                f"{ch['live_after']}" + (f", canary {ch['canary']}" if ch["canary"] else "")
                + ("" if ch["pointer_written"] else " (pointer already set)")
                + "".join(f"; {n}" for n in ch["notes"]), markup=False, highlight=False)  # fmt: skip


@app.command("promote")
def promote_cmd(
    model: ModelArg,
    version: Annotated[int, typer.Option("--version", help="Published version to make live.")],
    region: Annotated[str, typer.Option("--region", "-r", help="Region.")],
    servers: Annotated[ServersChoice, typer.Option("--servers", help="canary: the region's canary servers only.")]
    = ServersChoice.all,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Make a published version live in a region (or on its canary servers): verified, then pointed at."""
    from tritonops.release.ops import promote

    ch = promote(get_config(), model, version, region, servers.value).to_json()
    emit(output, {"changes": [ch]}, lambda c: _render_changes([ch], c))
    info("takes effect at the region's next reconcile (`tritonops reconcile --region R`)")


@app.command("rollback")
def rollback_cmd(
    model: ModelArg,
    region: RegionOpt = None,
    all_regions: AllRegionsOpt = False,
    to: Annotated[int | None, typer.Option("--to", help="Version to go back to (default: the previous live).")]
    = None,
    now: Annotated[bool, typer.Option("--now", help="Reconcile the region(s) at once.")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Back to the previous live version; within one reconcile, or at once with --now.

    With --all-regions every region is tried: one that fails (its bucket down, no previous version
    there) does not keep the others from rolling back; the run then exits 1 naming each."""
    from tritonops.errors import TritonOpsError
    from tritonops.regions import per_region
    from tritonops.release.ops import rollback

    cfg = get_config()
    # Every region's pointer first, then (--now) each region's reconcile.
    res = per_region(_regions(region, all_regions), lambda r: rollback(cfg, model, r, to).to_json(), (TritonOpsError,))
    changes = [ch for _, ch in res.done]
    if now:
        from tritonops.reconcile.runner import context, reconcile

        for r, ch in res.done:
            try:
                ch["reconcile_failed_actions"] = reconcile(context(cfg, r)).failed
            except TritonOpsError as e:
                if len(res.regions) == 1:
                    raise
                res.fail(r, e)  # its pointer is rolled back; its next reconcile serves it
    doc: dict[str, Any] = {"changes": changes, "failed": res.failed}
    emit(output, doc, lambda c: _render_changes(changes, c))
    res.raise_if_failed("rolled back")
    if sum(ch.get("reconcile_failed_actions", 0) for ch in changes):
        raise typer.Exit(ExitCode.ERROR)


def _render_rollout(doc: dict[str, Any], c: Console) -> None:
    for line in doc["report"]:
        c.print(line, markup=False, highlight=False)
    ro = doc["rollout"]
    if ro:
        c.print(f"rollout {ro['id']}: {ro['model']} v{ro['version']}: step {ro['step'] + 1}/{len(ro['steps'])}, "
                f"{ro['phase']}", markup=False, highlight=False)  # fmt: skip


def _rollout_doc(ro: dict[str, Any] | None, report: list[str]) -> dict[str, Any]:
    keep = ("id", "model", "version", "steps", "step", "phase", "gate", "failure", "history", "origin")
    return {"rollout": {k: ro.get(k) for k in keep} if ro else None, "report": report}


@rollout_app.command("start")
def rollout_start_cmd(
    model: ModelArg,
    version: Annotated[int, typer.Option("--version", help="Published version to roll out.")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Plan a staged rollout (waves, canary servers, bake, gates from tritonops.yaml); `advance` runs it."""
    from tritonops.release.controller import start

    ro = start(get_config(), model, version)
    doc = _rollout_doc(ro, [f"rollout {ro['id']} planned: {len(ro['steps'])} steps; run `tritonops rollout advance`"])
    emit(output, doc, lambda c: _render_rollout(doc, c))


@rollout_app.command("advance")
def rollout_advance_cmd(
    model: ModelArg,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Do what is next (idempotent, cron-safe, resumable): apply a step, or judge it after its bake.
    Exit 0 progressing or done, 4 rolled back after a failed gate, 3 another controller holds the lock."""
    from tritonops.cli.reconcile import reconcile_region
    from tritonops.release.controller import advance

    ro, report = advance(get_config(), model, reconcile_region)
    doc = _rollout_doc(ro, report)
    emit(output, doc, lambda c: _render_rollout(doc, c))
    if ro is not None and ro["phase"] == "failed":
        raise typer.Exit(ExitCode.ROLLED_BACK)


@rollout_app.command("abort")
def rollout_abort_cmd(model: ModelArg, output: OutputOpt = OutputFormat.table) -> None:
    """Roll back every step the rollout took (the version is not blocked)."""
    from tritonops.cli.reconcile import reconcile_region
    from tritonops.release.controller import abort

    ro, report = abort(get_config(), model, reconcile_region)
    doc = _rollout_doc(ro, report)
    emit(output, doc, lambda c: _render_rollout(doc, c))
