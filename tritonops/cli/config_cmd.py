"""``tritonops config``: check and show the configuration in effect."""

from __future__ import annotations

from collections import Counter

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, get_config
from tritonops.cli.root import app
from tritonops.config import check_local

MODEL_ROWS_MAX = 200

config_app = typer.Typer(help="Check and show tritonops.yaml.")
app.add_typer(config_app, name="config")


@config_app.command("validate")
def validate_cmd(output: OutputOpt = OutputFormat.table) -> None:
    """Validate tritonops.yaml and show the regions, servers and model rules it defines."""
    from tritonops.store.s3 import check_profiles

    cfg = get_config()
    check_local(cfg)
    check_profiles(cfg)
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
        if len(cfg.models) > MODEL_ROWS_MAX:
            # A row per rule is unreadable (and rich takes ~40 s for 200k rows): count rules per kind.
            groups = Counter((", ".join(cfg.allowed_regions(m)), cfg.placement(m).value) for m in cfg.models)
            g = Table("allowed regions", "placement", "models")
            for (regions, placement), n in sorted(groups.items()):
                g.add_row(regions, placement, str(n))
            c.print(g)
            c.print(f"{len(cfg.models)} model rules (one row per model: -o json)", highlight=False)
        elif cfg.models:
            m = Table("model", "allowed regions", "placement")
            for name in sorted(cfg.models):
                m.add_row(name, ", ".join(cfg.allowed_regions(name)), cfg.placement(name).value)
            c.print(m)

    emit(output, data, render)
