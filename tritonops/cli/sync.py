"""``tritonops sync``: publish the local repository to regional buckets (thin layer over store.sync)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from tritonops.cli._common import OutputFormat, OutputOpt, err_console, get_config, human_bytes, info
from tritonops.cli.root import app
from tritonops.errors import PlanError
from tritonops.store.base import DEFAULT_WORKERS

if TYPE_CHECKING:
    from rich.progress import TaskID


class _RichProgress:
    """A byte-accurate bar with throughput, on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )  # fmt: skip

        self._p = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files"), TimeRemainingColumn(),
            console=err_console(), transient=True,
        )  # fmt: skip
        self._task: TaskID | None = None
        self._files = 0

    def start(self, region: str, total_files: int, total_bytes: int) -> None:
        self._files = 0
        self._p.start()
        self._task = self._p.add_task(f"sync {region}", total=total_bytes, files=f"0/{total_files}")
        self._total_files = total_files

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, nbytes)

    def file_done(self) -> None:
        self._files += 1
        if self._task is not None:
            self._p.update(self._task, files=f"{self._files}/{self._total_files}")

    def finish(self) -> None:
        self._p.stop()
        self._task = None


@app.command("sync")
def sync_cmd(
    region: Annotated[
        list[str] | None, typer.Option("--region", "-r", help="Region to publish to (repeatable).")
    ] = None,
    all_regions: Annotated[
        bool, typer.Option("--all-regions", help="Publish to every configured region.")
    ] = False,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="Only this model (repeatable); a forbidden region is then an error."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be uploaded, skipped, deleted.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Delete published versions/models the local repository no longer has."),
    ] = False,
    max_delete: Annotated[
        int | None,
        typer.Option(
            "--max-delete", min=0, help="Refuse a prune deleting more objects (default: 25% of the region)."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Allow a prune over --max-delete, and replacing a published version whose local files "
            "changed (it compares local files with the published manifest, not the bucket's objects).",
        ),
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Check every published version's objects against its manifest (size, recorded sha256, "
            "extra objects; with --verify the bytes too), re-upload what differs, delete extra objects.",
        ),
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="After syncing, download and hash every published object.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=128, help="Files in flight (memory for bodies is bounded apart).")
    ] = DEFAULT_WORKERS,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Publish the local repository to regional buckets: incremental, atomic, residency-aware."""
    from tritonops.release.pointer import publish_release
    from tritonops.store.sync import SyncOptions, SyncSummary, failure_json, summary_json, sync

    cfg = get_config()
    if all_regions and region:
        raise PlanError("pass --region or --all-regions, not both")
    regions = sorted(cfg.regions) if all_regions else list(dict.fromkeys(region or []))
    if not regions:
        raise PlanError("no region given: pass --region R (repeatable) or --all-regions")
    opts = SyncOptions(
        dry_run=dry_run, prune=prune, max_delete=max_delete, force=force, verify=verify, repair=repair,
        models=list(dict.fromkeys(model)) if model else None, workers=workers,
    )  # fmt: skip
    progress = _RichProgress() if sys.stderr.isatty() and output is OutputFormat.table else None

    def report(s: SyncSummary) -> None:
        if output is OutputFormat.json:
            sys.stdout.write(summary_json(s) + "\n")
            sys.stdout.flush()
            return
        _render(s)

    def failed(region: str, line: str) -> None:
        if output is OutputFormat.json:  # the run's last line (stderr) names every failed region too
            sys.stdout.write(failure_json(region, line) + "\n")
            sys.stdout.flush()

    sync(cfg, regions, opts, progress=progress, on_summary=report, on_fail=failed, releases=publish_release)


def _render(s: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from tritonops.store.sync import SyncSummary

    assert isinstance(s, SyncSummary)
    for note in s.notes:
        info(f"note: {s.region}: {note}")
    for m in s.residency_skipped:
        info(f"skipped: {s.region}: model {m} is not allowed in this region (residency)")
    c: Console = Console(file=sys.stdout, soft_wrap=True)
    verb = "would upload" if s.dry_run else "uploaded"
    t = Table(title=f"{s.region} -> {s.url}" + (" (dry run)" if s.dry_run else ""))
    for col in ("", "files", "bytes"):
        t.add_column(col)
    t.add_row(verb, str(s.uploaded_files), human_bytes(s.uploaded_bytes))
    t.add_row("unchanged", str(s.skipped_files), "")
    t.add_row("would delete" if s.dry_run else "deleted", str(s.deleted_files), "")
    c.print(t)
    if s.models_published:
        c.print(f"models {'to publish' if s.dry_run else 'published'}: {', '.join(s.models_published)}")
    if s.models_pruned or s.versions_pruned:
        pruned = s.models_pruned + [f"{m} v{','.join(map(str, v))}" for m, v in s.versions_pruned.items()]
        c.print(f"{'to prune' if s.dry_run else 'pruned'}: {', '.join(pruned)}")
    if not s.dry_run:
        c.print(
            f"{s.uploaded_files} files, {human_bytes(s.uploaded_bytes)} in {s.seconds:.2f} s "
            f"({s.mb_per_s:.1f} MB/s)"
            + (f"; verified {s.verified_files} objects" if s.verified_files else "")
        )
    if s.repair is not None:
        for line in s.repair["found"]:
            info(f"{'differs' if s.dry_run else 'repaired'}: {line}")
        c.print(
            f"repair: {s.repair['checked_versions']} versions checked, {len(s.repair['found'])} objects differ"
            + ("" if s.dry_run else f", {len(s.repair['uploaded'])} re-uploaded, {len(s.repair['deleted'])} deleted")
        )
