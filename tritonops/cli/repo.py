"""``tritonops repo``: build, check, list, compare and prune a versioned model repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, get_config, human_bytes, info
from tritonops.cli.root import app
from tritonops.errors import ExitCode, RepositoryError

repo_app = typer.Typer(help="Build and check versioned Triton model repositories (manifests with sha256).")
app.add_typer(repo_app, name="repo")

RepoOpt = Annotated[
    Path | None,
    typer.Option("--repo", help="Repository root (default: `repository` from tritonops.yaml)."),
]


def _root(repo: Path | None) -> Path:
    return repo if repo is not None else get_config().repository_path


@repo_app.command("add")
def add_cmd(
    model: Annotated[str, typer.Argument(help="Model name (folder in the repository).")],
    from_: Annotated[
        Path, typer.Option("--from", help="Folder whose contents become the new version, or one file.")
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="config.pbtxt to use (default: keep the model's, or generate from model.onnx)."
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="For an ONNX model, as `convert --runtime`: onnxruntime (platform onnxruntime_onnx) or "
            "onnxruntime-python (adds convert's model.py, backend python: the local stack).",
        ),
    ] = None,
    repo: RepoOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Add version N+1 of a model from files; existing versions are never rewritten."""
    from tritonops.repo.repository import add_onnx_version, add_version

    root = _root(repo)
    if runtime is not None:
        entry = add_onnx_version(root, model, from_, runtime=runtime, config=config)
    else:
        entry = add_version(root, model, from_, config=config)
    data = {"repository": str(root), "model": model, **entry.to_json(), "version": entry.version}

    def render(c: Console) -> None:
        c.print(
            f"{model} version {entry.version}: {len(entry.files)} file(s), {human_bytes(entry.size)}, "
            f"digest {entry.digest[:16]}"
        )

    emit(output, data, render)


@repo_app.command("validate")
def validate_cmd(
    path: Annotated[
        Path | None, typer.Argument(help="Repository root (default: --repo or the configured one).")
    ] = None,
    repo: RepoOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Check a repository as Triton would, plus manifests: exit 0 valid, 1 invalid (every problem listed)."""
    from tritonops.repo.validate import validate_repository

    root = path if path is not None else _root(repo)
    problems = validate_repository(root)
    data = {"repository": str(root), "valid": not problems, "problems": [p.to_json() for p in problems]}

    def render(c: Console) -> None:
        for p in problems:
            c.print(str(p), markup=False, highlight=False)

    emit(output, data, render)
    if problems:
        info(f"{root}: {len(problems)} problem(s)")
        raise typer.Exit(code=ExitCode.ERROR)
    info(f"{root}: valid")


@repo_app.command("list")
def list_cmd(repo: RepoOpt = None, output: OutputOpt = OutputFormat.table) -> None:
    """List models, versions, sizes and digests."""
    from tritonops.repo.repository import list_repository

    root = _root(repo)
    models = list_repository(root)

    def render(c: Console) -> None:
        t = Table("model", "backend", "version", "live", "size", "files", "digest", "created")
        for m in models:
            for v in m["versions"]:
                t.add_row(
                    m["model"],
                    m["backend"] or m["platform"] or "-",
                    str(v["version"]),
                    "yes" if v["version"] in m["live_versions"] else "",
                    human_bytes(v["size"]),
                    str(v["files"]),
                    v["digest"][:12],
                    v["created"],
                )
        c.print(t)

    emit(output, {"repository": str(root), "models": models}, render)


_VERSION_REF = re.compile(r"^(?P<model>[0-9A-Za-z_][0-9A-Za-z._-]*)@(?P<n>[1-9][0-9]*)$")


@repo_app.command("diff")
def diff_cmd(
    old: Annotated[str, typer.Argument(help="Old repository path, or MODEL@N for a version in --repo.")],
    new: Annotated[str, typer.Argument(help="New repository path, or MODEL@N for a version in --repo.")],
    repo: RepoOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show what changed between two repositories, or two versions of a model (MODEL@1 MODEL@2)."""
    from tritonops.repo.repository import diff_repositories, diff_versions

    ma, mb = _VERSION_REF.match(old), _VERSION_REF.match(new)
    data: dict[str, Any]
    if ma and mb:
        if ma["model"] != mb["model"]:
            raise RepositoryError(f"diff: {old} and {new} name different models")
        data = diff_versions(_root(repo), ma["model"], int(ma["n"]), int(mb["n"]))
        rows = [
            (k.removeprefix("files_"), p)
            for k in ("files_added", "files_removed", "files_changed")
            for p in data[k]
        ]
    elif ma or mb:
        raise RepositoryError(
            "diff: compare two repositories, or two versions (MODEL@N MODEL@M), not one of each"
        )
    else:
        data = diff_repositories(Path(old), Path(new))
        rows = [("model added", m) for m in data["models_added"]] + [
            ("model removed", m) for m in data["models_removed"]
        ]
        for ch in data["models_changed"]:
            parts = (
                [f"+v{n}" for n in ch["versions_added"]]
                + [f"-v{n}" for n in ch["versions_removed"]]
                + [f"~v{n}" for n in ch["versions_changed"]]
                + (["config"] if ch["config_changed"] else [])
            )
            rows.append(("model changed", f"{ch['model']}: {' '.join(parts)}"))

    def render(c: Console) -> None:
        if not rows:
            c.print("no differences")
            return
        t = Table("change", "what")
        for r in rows:
            t.add_row(*r)
        c.print(t)

    emit(output, data, render)


@repo_app.command("prune")
def prune_cmd(
    keep: Annotated[
        int, typer.Option("--keep", help="Versions to keep per model (newest), plus live and pinned.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be removed.")] = False,
    repo: RepoOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Remove old versions: keep the N newest per model plus live and pinned ones (Triton loads them all)."""
    from tritonops.repo.repository import prune_repository

    root = _root(repo)
    removed = prune_repository(root, keep, dry_run=dry_run)

    def render(c: Console) -> None:
        verb = "would remove" if dry_run else "removed"
        if not removed:
            c.print("nothing to prune")
        for r in removed:
            c.print(f"{verb} {r['model']} version {r['version']} ({human_bytes(r['size'])})")

    emit(output, {"repository": str(root), "dry_run": dry_run, "removed": removed}, render)
