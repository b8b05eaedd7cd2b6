"""``tritonops capacity``: what fleet serves a request trace warm, and what it costs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import OutputFormat, OutputOpt, emit, human_bytes, info
from tritonops.cli.root import app

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}  # fmt: skip


def _bytes(text: str, flag: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: expected a size such as 16GB, 300MB or 16GiB", param_hint=flag)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _sizes(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise typer.BadParameter(f"{text!r}: expected server counts such as 1,3,10,50", param_hint="--servers")
    return out


TraceOpt = Annotated[
    Path | None,
    typer.Option("--trace", help="Request trace: CSV (time,model[,region]) or JSONL."),
]
RequestsOpt = Annotated[
    int,
    typer.Option("--requests", help="Generated trace: number of requests.", min=1),
]
DaysOpt = Annotated[
    float,
    typer.Option("--days", help="Generated trace: days it spans (daily cycle).", min=0.01),
]
ServersOpt = Annotated[
    str | None,
    typer.Option("--servers", help="Fleet sizes to try, e.g. 1,3,10,50 (default: from 1 to all models at once)."),
]
GpuMemoryOpt = Annotated[
    str,
    typer.Option("--gpu-memory", help="Memory per server for models (16GB, 80GiB)."),
]
IntervalOpt = Annotated[
    float,
    typer.Option("--interval", help="Reconcile interval in seconds (cron: 60).", min=1),
]
HysteresisOpt = Annotated[
    float,
    typer.Option("--hysteresis", help="Edge a loaded model keeps (0.25: 25%).", min=0),
]
FootprintOpt = Annotated[
    str | None,
    typer.Option("--footprint", help="Footprint of models the ledger has not measured."),
]
ModelSizeOpt = Annotated[
    str | None,
    typer.Option("--model-size", help="On-disk size of unmeasured models (footprint estimated from it)."),
]
LoadSOpt = Annotated[
    float | None,
    typer.Option("--load-s", help="Load time per model in seconds (default: estimated from the footprint).", min=0),
]
CompareOpt = Annotated[
    str,
    typer.Option("--compare", help="Request-level caches to compare with: lru,lfu,belady or none."),
]
LedgerOpt = Annotated[
    Path | None,
    typer.Option("--ledger", help="Footprint ledger (default: footprints.json in the config's state_dir, if any)."),
]
OutDirOpt = Annotated[
    Path | None,
    typer.Option("--out-dir", help="Write capacity.html and capacity.png here."),
]


@app.command("capacity")
def capacity_cmd(
    trace: TraceOpt = None,
    zipf: Annotated[float | None, typer.Option("--zipf", help="Generate a trace: Zipf exponent s (e.g. 1.0).")] = None,
    models: Annotated[int, typer.Option("--models", help="Generated trace: number of models.", min=1)] = 1000,
    requests: RequestsOpt = 1_000_000,
    days: DaysOpt = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Generated trace: random seed.")] = 0,
    region: Annotated[str | None, typer.Option("--region", help="Keep only this region's rows of the trace.")] = None,
    servers: ServersOpt = None,
    gpu_memory: GpuMemoryOpt = "16GB",
    price: Annotated[float, typer.Option("--price-per-hour", help="Price of one server per hour.", min=0)] = 0.526,
    target: Annotated[float, typer.Option("--target", help="Share of requests to serve warm.", min=0, max=1)] = 0.99,
    interval: IntervalOpt = 60.0,
    window: Annotated[float, typer.Option("--window", help="Demand half-life in seconds.", min=0)] = 3600.0,
    hysteresis: HysteresisOpt = 0.25,
    max_loads: Annotated[int, typer.Option("--max-loads", help="Loads per server per run.", min=0)] = 4,
    footprint: FootprintOpt = None,
    model_size: ModelSizeOpt = None,
    load_s: LoadSOpt = None,
    compare: CompareOpt = "lru,lfu,belady",
    ledger: LedgerOpt = None,
    out_dir: OutDirOpt = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Replay a request trace against fleets of several sizes with the placement reconcile uses, and price them."""
    from tritonops.capacity import baselines, planner
    from tritonops.capacity.trace import read_trace, zipf_trace
    from tritonops.placement import PlacementPolicy

    if (trace is None) == (zipf is None):
        raise typer.BadParameter("give either --trace FILE or --zipf S", param_hint="--trace/--zipf")
    kinds = [k for k in compare.split(",") if k and k != "none"]
    if any(k not in baselines.BASELINES for k in kinds):
        raise typer.BadParameter(f"{compare!r}: expected a list of lru, lfu, belady (or none)", param_hint="--compare")
    memory = _bytes(gpu_memory, "--gpu-memory")
    chosen = _sizes(servers) if servers else None
    if trace is not None:
        tr = read_trace(trace, region)
    else:
        tr = zipf_trace(models, requests, zipf or 0.0, days=days, seed=seed)
    costs = planner.model_costs(
        tr, ledger=_ledger(ledger),
        footprint_bytes=_bytes(footprint, "--footprint") if footprint else None,
        size_bytes=_bytes(model_size, "--model-size") if model_size else None, load_s=load_s,
    )  # fmt: skip
    sizes = chosen or planner.default_fleet_sizes(costs, memory)
    policy = PlacementPolicy(interval_s=interval, hysteresis=hysteresis, max_loads=max_loads)
    data = planner.plan_capacity(tr, costs, sizes, memory, price, policy, target=target, window_s=window, compare=kinds)
    if out_dir is not None:
        from tritonops.capacity.chart import write_charts

        pics = data["pictures"] = write_charts(data, out_dir)
        info(f"wrote {pics['html']}" + (f" and {pics['png']}" if pics["png"] else ""))
    emit(output, data, lambda c: _render(c, data, kinds))


def _ledger(path: Path | None) -> Any:
    from tritonops.memory.ledger import FootprintLedger

    if path is not None:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--ledger")
        return FootprintLedger(path)
    from tritonops.cli.control import _optional_config

    cfg = _optional_config()
    if cfg is None:
        return None
    led = FootprintLedger.in_state_dir(cfg.state_path)
    return led if led.path.is_file() else None


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _secs(v: float | None) -> str:
    return "never" if v is None else f"{v:.0f} s"


def _render(c: Console, data: dict[str, Any], kinds: list[str]) -> None:
    t = data["trace"]
    m = data["models"]
    c.print(f"{t['source']}: {t['requests']} requests over {t['models']} models, {t['span_s'] / 3600:.1f} h; "
            f"footprints {m['footprint_sources']}, load times {m['load_sources']} (median {m['load_s_median']} s); "
            f"{human_bytes(data['fleet']['memory_bytes'])} per server", highlight=False)  # fmt: skip
    c.print(f"placement: {data['placement']}; baselines: {data['baselines']}", highlight=False)
    tab = Table("servers", "$/h", "warm", "cold p50", "cold p99", "loads/h", "memory", *kinds)
    for r in data["sizes"]:
        tab.add_row(str(r["servers"]), f"{r['cost_per_hour']:.2f}", _pct(r["warm_share"]),
                    _secs(r["cold_wait_p50_s"]), _secs(r["cold_wait_p99_s"]), f"{r['loads_per_hour']:.0f}",
                    _pct(r["memory_use_mean"]), *(_pct(r["baselines"][k]) for k in kinds))  # fmt: skip
    c.print(tab)
    rec = data["recommended"]
    all_in = data["all_models_servers"]
    if rec:
        c.print(f"recommended: {rec['servers']} servers at {rec['cost_per_hour']:.2f}/h serve "
                f"{rec['warm_share']:.2%} warm (target {data['target']:.1%}); every model loaded at once needs "
                f"{all_in} servers ({all_in * data['fleet']['price_per_hour']:.2f}/h)", highlight=False)  # fmt: skip
    else:
        c.print(f"no fleet size tried serves {data['target']:.1%} warm; try more servers (--servers)", highlight=False)
