"""``tritonops load|unload|mem|status``: control Triton servers and show measured memory."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tritonops.cli._common import STATE, OutputFormat, OutputOpt, emit, get_config, human_bytes
from tritonops.cli.root import app
from tritonops.errors import ExitCode, MemoryProbeError, TritonError

if TYPE_CHECKING:
    from tritonops.config import Config

ServerOpt = Annotated[
    str,
    typer.Option("--server", "-s", help="A configured server name, or a URL (http://host:port, grpc://host:port)."),
]
ProtocolOpt = Annotated[str | None, typer.Option("--protocol", help="http or grpc (default: from the URL, else http).")]
ProbeOpt = Annotated[
    str | None,
    typer.Option("--probe", help="Memory source: nvml, metrics or host (default: the best that works)."),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds allowed for each control call.", min=0.1)]


PROBES = ("nvml", "metrics", "host")


def _check_probe(probe: str | None) -> None:
    # Checked before any server is asked: `mem` reports a probe failure as data and exits 0.
    if probe is not None and probe not in PROBES:
        raise MemoryProbeError(f"--probe: unknown memory probe {probe!r} ({', '.join(PROBES)})")


def _check_in_index(cfg: Config | None, server_ref: str, model: str, protocol: str | None, timeout: float) -> None:
    """Refuse to unload a model the server does not know: Triton accepts it and nothing happens."""
    from tritonops.memory import service

    server, _ = service.resolve_server(cfg, server_ref)
    client = service.client_for(server, protocol, timeout)
    if model not in {m.name for m in client.index()}:
        raise TritonError(f"model {model!r}: not in the repository index of server {server.name} ({client.url})")


def _optional_config() -> Config | None:
    """The config when one is given or present; commands taking a URL also work without one."""
    from pathlib import Path

    from tritonops.config import CONFIG_ENV, DEFAULT_CONFIG_NAME

    if STATE.config_path is None and not os.environ.get(CONFIG_ENV) and not Path(DEFAULT_CONFIG_NAME).exists():
        return None
    return get_config()


@app.command("load")
def load_cmd(
    model: Annotated[str, typer.Argument(help="Model name in the server's repository.")],
    server: ServerOpt,
    protocol: ProtocolOpt = None,
    probe: ProbeOpt = None,
    timeout: TimeoutOpt = 10.0,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Load a model on a Triton server and record its measured memory footprint."""
    from tritonops.memory import service

    _check_probe(probe)
    data = service.load_model(_optional_config(), server, model, protocol=protocol, probe=probe, timeout_s=timeout)

    def render(c: Console) -> None:
        err = data["error_ratio"]
        c.print(
            f"loaded {data['model']} v{data['version']} on {data['server']} in {data['seconds']:.2f}s: "
            f"footprint {human_bytes(data['footprint_bytes'])} ({data['probe']}), predicted "
            f"{human_bytes(data['predicted_bytes'])} ({data['predicted_source']}"
            + (f", error {err:+.1%})" if err is not None else ")"),
            highlight=False,
        )
        if data.get("footprint_source") == "estimate":
            c.print(f"warning: footprint not measured ({data['measure_error']}); held at its estimate",
                    markup=False, highlight=False)  # fmt: skip

    emit(output, data, render)


@app.command("unload")
def unload_cmd(
    model: Annotated[str, typer.Argument(help="Model name to unload.")],
    server: ServerOpt,
    protocol: ProtocolOpt = None,
    probe: ProbeOpt = None,
    timeout: TimeoutOpt = 10.0,
    wait_s: Annotated[
        float,
        typer.Option("--wait-timeout", help="Seconds to wait for the model and its memory to go.", min=0.1),
    ] = 120.0,
    dependents: Annotated[bool, typer.Option("--dependents", help="Also unload models that depend on it.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once Triton accepts the request.")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Unload a model; by default wait until Triton lists it unavailable and its memory is back."""
    from tritonops.memory import service

    _check_probe(probe)
    cfg = _optional_config()
    _check_in_index(cfg, server, model, protocol, timeout)
    data = service.unload_model(
        cfg, server, model, protocol=protocol, probe=probe, timeout_s=timeout,
        wait_s=wait_s, dependents=dependents, wait=not no_wait,
    )  # fmt: skip

    def render(c: Console) -> None:
        if data["waited"]:
            c.print(
                f"unloaded {model} from {data['server']} in {data['seconds']:.2f}s: "
                f"{human_bytes(data['released_bytes'])} released ({data['probe']})",
                highlight=False,
            )
        else:
            c.print(f"unload of {model} requested on {data['server']}", highlight=False)

    emit(output, data, render)


def _devices_table(devices: list[dict[str, Any]]) -> Table:
    t = Table("device", "kind", "total", "used", "free")
    for d in devices:
        t.add_row(d["device"], d["kind"], human_bytes(d["total_bytes"]), human_bytes(d["used_bytes"]),
                  human_bytes(d["free_bytes"]))  # fmt: skip
    return t


@app.command("mem")
def mem_cmd(
    server: ServerOpt,
    protocol: ProtocolOpt = None,
    probe: ProbeOpt = None,
    timeout: TimeoutOpt = 10.0,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show a server's memory: devices, measured footprint of each loaded model, leaks."""
    from tritonops.memory import service

    _check_probe(probe)
    data = service.memory_report(_optional_config(), server, protocol=protocol, probe=probe, timeout_s=timeout)

    def render(c: Console) -> None:
        for s in data["servers"]:
            c.print(
                f"{s['server']} (Triton {s['triton_version']}, probe {s['probe']}): "
                f"leaked {human_bytes(s['leaked_bytes'])}",
                highlight=False,
            )
            if s.get("error"):
                c.print(f"  memory: {s['error']}", markup=False, highlight=False)
            c.print(_devices_table(s["devices"]))
            t = Table("model", "version", "held", "held as", "predicted", "source")
            for m in s["models"]:
                held = m["footprint_bytes"]
                t.add_row(m["model"], str(m["version"]), human_bytes(held) if held is not None else "-",
                          m.get("footprint_source") or "-", human_bytes(m["predicted_bytes"]),
                          m["predicted_source"])  # fmt: skip
            c.print(t)

    emit(output, data, render)


def _held(version: dict[str, Any]) -> str:
    """A version's footprint as the ledger holds it: "37.0 MiB measured", "96.0 MiB estimate", "-"."""
    if version.get("footprint_bytes") is None:
        return "-"
    return f"{human_bytes(version['footprint_bytes'])} {version.get('footprint_source') or 'measured'}"


@app.command("status")
def status_cmd(
    region: Annotated[str, typer.Option("--region", "-r", help="Region whose servers to show.")],
    timeout: TimeoutOpt = 10.0,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show every server of a region: health, models, versions and states, memory; who holds the
    region's leases (docs/multi-host.md)."""
    from tritonops.errors import TritonOpsError
    from tritonops.memory import service
    from tritonops.store.lease import region_leases

    cfg = get_config()
    data = service.region_status(cfg, region, timeout_s=timeout)
    try:
        data["leases"] = region_leases(cfg, region)
    except TritonOpsError as e:  # the servers are still worth showing; the bucket's error is reported
        data["leases"], data["leases_error"] = {}, str(e)

    def render(c: Console) -> None:
        t = Table("server", "ready", "model", "version", "state", "footprint", "reason")
        for s in data["servers"]:
            if "error" in s:
                t.add_row(s["server"], "no", "-", "-", "-", s["error"])
                continue
            if not s["models"]:
                t.add_row(s["server"], "yes" if s["ready"] else "no", "-", "-", "-", "-", "")
            for name, m in sorted(s["models"].items()):
                rows = sorted(m["versions"].items()) or [
                    ("-", {"state": m.get("state", ""), "reason": m.get("reason", "")})
                ]
                for v, st in rows:
                    t.add_row(s["server"], "yes" if s["ready"] else "no", name, v, st["state"], _held(st),
                              st["reason"])  # fmt: skip
        c.print(t)
        for s in data["servers"]:
            mem = s.get("memory")
            if mem and mem["devices"]:
                c.print(f"{s['server']} memory ({mem['probe']}):", highlight=False)
                c.print(_devices_table(mem["devices"]))
        for name, h in data["leases"].items():
            left = h["expires_in_s"]
            state = f"expired {-left:.0f} s ago" if h["expired"] else f"expires in {left:.0f} s"
            c.print(f"lease {name}: held by {h['host']} pid {h['pid']} ({h['purpose']}; {state})",
                    markup=False, highlight=False)  # fmt: skip
        if "leases_error" in data:
            c.print(f"leases: not read ({data['leases_error']})", markup=False, highlight=False)

    emit(output, data, render)
    if any("error" in s for s in data["servers"]):
        raise typer.Exit(code=ExitCode.ERROR)
