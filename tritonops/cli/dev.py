"""``tritonops dev``: the local stack (real S3 server + one real Triton per region, on loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, info
from tritonops.cli.root import app
from tritonops.errors import ExitCode, StackError

dev_app = typer.Typer(help="Run a local stack: a real S3 server and a real Triton per region, on loopback.")
app.add_typer(dev_app, name="dev")

StateDirOpt = Annotated[
    Path, typer.Option("--state-dir", help="Where pid files, logs, bucket data and the stack's tritonops.yaml live.")
]
DEFAULT_STATE_DIR = Path(".tritonops/dev")


@dev_app.command("up")
def up_cmd(
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    repository: Annotated[
        Path, typer.Option("--repository", help="Local model repository the stack's config points at.")
    ] = Path("model_repos/demo"),
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Region to create (repeatable; default: two regions).")
    ] = None,
    s3: Annotated[str, typer.Option("--s3", help="S3 server: moto (default, in memory) or rclone (on disk).")] = "moto",
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="YAML with `models:` rules (residency, placement) for the generated config."),
    ] = None,
    servers: Annotated[
        int, typer.Option("--servers", min=1, help="Triton servers in the first region (default 1).")
    ] = 1,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Start the local stack (idempotent) and write a tritonops.yaml for it."""
    from tritonops.dev import stack  # psutil, pydantic: only when a dev command runs

    regions = region or list(stack.DEFAULT_REGIONS)
    info(f"starting local stack in {state_dir} ({', '.join(regions)}) ...")
    state = stack.up(state_dir, repository, regions=regions, s3_kind=s3, policy_file=policy, servers=servers)
    data = {"config": state.config, "s3_endpoint": state.s3_endpoint, "regions": state.regions}

    def render(c: Console) -> None:
        t = Table("region", "bucket", "triton http", "triton grpc", title="local stack")
        for r, d in state.regions.items():
            t.add_row(r, d["bucket"], d["http_url"], d["grpc_url"])
        c.print(t)
        c.print(f"S3 endpoint: {state.s3_endpoint}")
        c.print(f"config: {state.config}")
        c.print(f"use it:  export TRITONOPS_CONFIG={state.config}")
        c.print(f"stop it: tritonops dev down --state-dir {state_dir}")

    emit(output, data, render)


@dev_app.command("status")
def status_cmd(state_dir: StateDirOpt = DEFAULT_STATE_DIR, output: OutputOpt = OutputFormat.table) -> None:
    """Show each part of the local stack and whether it is ready (exit 1 if any is not)."""
    from tritonops.dev import stack

    state, parts = stack.status(state_dir)
    data = {
        "up": state is not None,
        "config": state.config if state else None,
        "parts": [p.__dict__ for p in parts],
    }

    def render(c: Console) -> None:
        if state is None:
            c.print(f"no local stack in {state_dir}")
            return
        t = Table("part", "pid", "running", "ready", "url")
        for p in parts:
            t.add_row(p.name, str(p.pid), "yes" if p.running else "NO", "yes" if p.ready else "NO", p.url)
        c.print(t)

    emit(output, data, render)
    if state is None or not all(p.ready for p in parts):
        raise typer.Exit(ExitCode.ERROR)


@dev_app.command("down")
def down_cmd(state_dir: StateDirOpt = DEFAULT_STATE_DIR, output: OutputOpt = OutputFormat.table) -> None:
    """Stop exactly the processes `dev up` started (by pid), leaving bucket data on disk."""
    from tritonops.dev import stack

    stopped = stack.down(state_dir)
    data = {"stopped": stopped}
    emit(output, data, lambda c: c.print(f"stopped: {', '.join(stopped) or 'nothing was running'}"))


@dev_app.command("check")
def check_cmd(state_dir: StateDirOpt = DEFAULT_STATE_DIR, output: OutputOpt = OutputFormat.table) -> None:
    """Publish a tiny model to every region, load it on each Triton, query it, unload it."""
    from tritonops.config import load_config
    from tritonops.dev import stack
    from tritonops.dev.smoke import check_server

    state = stack.read_state(state_dir.absolute())
    if state is None:
        raise StackError(f"no local stack in {state_dir}; run: tritonops dev up --state-dir {state_dir}")
    cfg = load_config(Path(state.config))
    results = []
    for name in sorted(cfg.regions):
        results += check_server(name, cfg.regions[name])
    data = {"results": [r.__dict__ for r in results]}

    def render(c: Console) -> None:
        t = Table("region", "server", "model", "input", "output", "load s", "ok", title="end-to-end check")
        for r in results:
            t.add_row(r.region, r.server, r.model, str(r.input), str(r.output), f"{r.load_seconds:.2f}",
                      "yes" if r.ok else "NO")
        c.print(t)

    emit(output, data, render)
    if not all(r.ok for r in results):
        raise typer.Exit(ExitCode.ERROR)
