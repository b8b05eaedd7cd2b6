"""``tritonops config``: check and show the configuration in effect."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, get_config
from tritonops.cli.root import app

config_app = typer.Typer(help="Check and show tritonops.yaml.")
app.add_typer(config_app, name="config")


@config_app.command("validate")
def validate_cmd(output: OutputOpt = OutputFormat.table) -> None:
    """Validate tritonops.yaml and show the regions, servers and model rules it defines."""
    cfg = get_config()
    data = {
        "config": str(cfg.source),
        "repository": str(cfg.repository_path),
        "regions": {
            name: {
                "bucket": r.bucket,
                "endpoint_url": r.endpoint_url,
                "servers": [s.name for s in r.servers],
            }
            for name, r in sorted(cfg.regions.items())
        },
        "models": {
            m: {"regions": cfg.allowed_regions(m), "placement": cfg.placement(m).value} for m in sorted(cfg.models)
        },
    }

    def render(c: Console) -> None:
        c.print(f"{cfg.source}: valid")
        t = Table("region", "bucket", "endpoint", "servers")
        for name, r in sorted(cfg.regions.items()):
            t.add_row(name, r.bucket, r.endpoint_url or "(AWS)", ", ".join(s.name for s in r.servers))
        c.print(t)
        if cfg.models:
            m = Table("model", "allowed regions", "placement")
            for name in sorted(cfg.models):
                m.add_row(name, ", ".join(cfg.allowed_regions(name)), cfg.placement(name).value)
            c.print(m)

    emit(output, data, render)
