"""The local stack: a real S3 server, one real Triton per region and one real Envoy per region in
front of them, all on loopback.

Used by ``tritonops dev up|status|down``, by ``make demo`` and by the test fixtures, so the tests
exercise exactly what users run. Processes are started in their own session, recorded by pid and
start time in ``state.json``, and stopped by pid (never by name). The parts themselves are in
``tritonops.dev.procs`` (re-exported here) and ``tritonops.dev.envoy``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonops.config import Config, RegionConfig, RouteSettings, ServerConfig, dump_config, load_config, parse_config
from tritonops.dev.procs import (
    BUCKET_MARKER,
    BUCKET_MARKER_TEXT,
    DEV_PROFILE,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Credentials,
    ProcessRecord,
    S3Kind,
    S3Server,
    TritonServer,
    _http_ok,
    ensure_bucket,
    find_moto_server,
    find_rclone,
    free_port,
    free_ports,
    prepare_triton_home,
    python_bin_dir,
    spawn,
    start_s3,
    start_triton,
    stop,
    triton_libs_dir,
    wait_until,
)
from tritonops.errors import StackError

__all__ = [
    "BUCKET_MARKER", "BUCKET_MARKER_TEXT", "DEFAULT_REGIONS", "DEV_PROFILE", "READY_TIMEOUT_S", "STOP_TIMEOUT_S",
    "Credentials", "PartStatus", "ProcessRecord", "S3Kind", "S3Server", "StackState", "TritonServer",
    "bucket_name", "down", "ensure_bucket", "find_moto_server", "find_rclone", "free_port", "free_ports",
    "prepare_triton_home", "python_bin_dir", "read_state", "spawn", "stack_config", "start_s3", "start_triton",
    "status", "stop", "triton_libs_dir", "up", "wait_until",
]  # fmt: skip

log = logging.getLogger(__name__)

DEFAULT_REGIONS = ("eu-west-1", "us-east-1")

# -- the whole stack --------------------------------------------------------------------------


@dataclass
class StackState:
    state_dir: str
    config: str
    s3_kind: str
    s3_endpoint: str
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    regions: dict[str, dict[str, str]] = field(default_factory=dict)
    # Tritons beyond each region's first (``up(servers=N)``): region -> [{http_url, grpc_url, metrics_url}]
    extra_servers: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StackState:
        procs = {k: ProcessRecord(**v) for k, v in d.get("processes", {}).items()}
        return cls(
            state_dir=d["state_dir"],
            config=d["config"],
            s3_kind=d["s3_kind"],
            s3_endpoint=d["s3_endpoint"],
            processes=procs,
            regions=d.get("regions", {}),
            extra_servers=d.get("extra_servers", {}),
        )


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path) -> StackState | None:
    try:
        return StackState.from_json(json.loads(_state_file(state_dir).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise StackError(f"{_state_file(state_dir)}: unreadable stack state ({e}); remove it and run dev up") from None


def _write_state(state: StackState) -> None:
    path = _state_file(Path(state.state_dir))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2))
    tmp.replace(path)


def bucket_name(region: str) -> str:
    return f"tritonops-{region}"


def stack_config(
    state: StackState,
    repository: Path,
    credentials_file: Path,
    regions: list[str],
    policy: dict[str, Any] | None = None,
) -> Config:
    region_cfgs: dict[str, RegionConfig] = {}
    for r in regions:
        info = state.regions[r]
        route = None
        if info.get("envoy_listen"):
            route = RouteSettings(listen=info["envoy_listen"], admin=info["envoy_admin"],
                                  config_dir=Path(info["envoy_dir"]))  # fmt: skip
        region_cfgs[r] = RegionConfig(
            route=route,
            bucket=f"s3://{bucket_name(r)}/models",
            endpoint_url=state.s3_endpoint,
            profile=DEV_PROFILE,
            credentials_file=credentials_file,
            servers=[
                ServerConfig(
                    name=f"{r}-triton-{i}",
                    http_url=srv["http_url"],
                    grpc_url=srv["grpc_url"],
                    metrics_url=srv["metrics_url"],
                )
                for i, srv in enumerate([info, *state.extra_servers.get(r, [])])
            ],
        )
    data: dict[str, Any] = {
        "repository": str(repository),
        "state_dir": state.state_dir,
        "regions": {k: v.model_dump(exclude_none=True) for k, v in region_cfgs.items()},
    }
    for key, value in (policy or {}).items():
        if key in ("models", "default_placement", "release"):
            data[key] = value
    if state.s3_kind == S3Kind.rclone:  # rclone ignores conditional writes: one host, local locks (docs/multi-host.md)
        data["lease"] = {"on_unsupported": "local"}
    return parse_config(data, Path(state.config))


def _healthy(state: StackState) -> bool:
    if not all(p.alive() for p in state.processes.values()):
        return False
    if _http_ok(state.s3_endpoint) is None:
        return False
    if not all(info.get("envoy_listen") for info in state.regions.values()):
        return False  # a stack from before Envoy joined it: start it afresh
    infos = [*state.regions.values(), *(x for xs in state.extra_servers.values() for x in xs)]
    return all(_http_ok(f"{info['http_url']}/v2/health/live") == 200 for info in infos)


def up(
    state_dir: Path,
    repository: Path,
    regions: list[str] | tuple[str, ...] = DEFAULT_REGIONS,
    s3_kind: str = "moto",
    policy_file: Path | None = None,
    servers: int = 1,
) -> StackState:
    """Start (or find running) the local stack; idempotent. Writes ``<state_dir>/tritonops.yaml``.

    ``policy_file``: a tritonops.yaml fragment whose ``models`` (residency, placement) and
    ``default_placement`` go into the generated config; it is validated against the stack's regions.
    ``servers``: Tritons in the first region (a canary server and the rest); the others get one.
    """
    state_dir = state_dir.absolute()
    policy = _read_policy(policy_file, list(regions)) if policy_file else None
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(state_dir)
    if existing is not None:
        extra = len(existing.extra_servers.get(regions[0], [])) if regions else 0
        if _healthy(existing) and sorted(existing.regions) == sorted(regions) and extra == servers - 1:
            log.info("stack already up in %s", state_dir)
            if policy is not None:
                _write_config(existing, repository, state_dir / "credentials", list(regions), policy)
            return existing
        # A half-dead stack (killed, machine rebooted): stop what survives, then start afresh.
        down(state_dir)

    cred_file = state_dir / "credentials"
    creds = Credentials.read_shared_file(cred_file) if cred_file.exists() else None
    if creds is None:
        creds = Credentials.generate()
        creds.write_shared_file(cred_file)

    logs = state_dir / "logs"
    started: list[ProcessRecord] = []
    try:
        s3 = start_s3(state_dir / "s3-data", logs / "s3.log", creds, kind=s3_kind)
        started.append(s3.record)
        state = StackState(
            state_dir=str(state_dir),
            config=str(state_dir / "tritonops.yaml"),
            s3_kind=s3_kind,
            s3_endpoint=s3.endpoint_url,
            processes={"s3": s3.record},
        )
        home = prepare_triton_home(state_dir / "tritonserver")
        for r in regions:
            region_cfg = RegionConfig(
                bucket=f"s3://{bucket_name(r)}/models",
                endpoint_url=s3.endpoint_url,
                profile=DEV_PROFILE,
                credentials_file=cred_file,
            )
            ensure_bucket(region_cfg)
            t = start_triton(home, region_cfg.triton_repository_url(), logs / f"triton-{r}.log", creds.env())
            started.append(t.record)
            state.processes[f"triton-{r}"] = t.record
            state.regions[r] = {
                "http_url": t.http_url,
                "grpc_url": t.grpc_url,
                "metrics_url": t.metrics_url,
                "bucket": region_cfg.bucket,
                "repository_url": t.repository_url,
            }
            for i in range(1, servers if r == regions[0] else 1):
                _start_extra_triton(state, started, home, region_cfg, r, i, creds)
        for r in regions:
            _start_envoy(state, started, r)
        _write_config(state, repository, cred_file, list(regions), policy)
        _first_routes(state)
    except BaseException:
        for rec in reversed(started):
            stop(rec)
        raise
    _write_state(state)
    return state


def _start_extra_triton(
    state: StackState,
    started: list[ProcessRecord],
    home: Path,
    region_cfg: RegionConfig,
    region: str,
    i: int,
    creds: Credentials,
) -> None:
    """The region's i-th Triton (i >= 1) on the same bucket: ``up(servers=N)``, for canaries."""
    logs = Path(state.state_dir) / "logs"
    t = start_triton(home, region_cfg.triton_repository_url(), logs / f"triton-{region}-{i}.log", creds.env())
    started.append(t.record)
    state.processes[f"triton-{region}-{i}"] = t.record
    state.extra_servers.setdefault(region, []).append(
        {"http_url": t.http_url, "grpc_url": t.grpc_url, "metrics_url": t.metrics_url}
    )


def _start_envoy(state: StackState, started: list[ProcessRecord], region: str) -> None:
    """The region's Envoy, in front of its Tritons (``regions.<r>.route`` in the stack's config)."""
    from tritonops.dev.envoy import start_envoy

    e = start_envoy(region, Path(state.state_dir) / "envoy" / region)
    started.append(e.record)
    state.processes[f"envoy-{region}"] = e.record
    state.regions[region].update({"envoy_listen": e.listen, "envoy_admin": e.admin, "envoy_dir": e.config_dir})


def _first_routes(state: StackState) -> None:
    """Each Envoy's first clusters, routes and listener: from what the (new, empty) servers serve."""
    from tritonops.route.update import update_routes

    cfg = load_config(Path(state.config))
    for r in sorted(state.regions):
        if state.regions[r].get("envoy_listen"):
            update_routes(cfg, r)


def _read_policy(path: Path, regions: list[str]) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise StackError(f"{path}: policy file not found") from None
    except yaml.YAMLError as e:
        raise StackError(f"{path}: malformed YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise StackError(f"{path}: (top level): expected a mapping")
    unknown = sorted(set(data) - {"models", "default_placement", "release"})
    if unknown:
        raise StackError(f"{path}: {unknown[0]}: unknown key (a policy holds models, default_placement and release)")
    # Check it against the stack's regions now, before anything starts.
    parse_config({"regions": {r: {"bucket": f"s3://{bucket_name(r)}/models"} for r in regions}, **data}, path)
    return data


def _write_config(
    state: StackState, repository: Path, cred_file: Path, regions: list[str], policy: dict[str, Any] | None
) -> None:
    if policy is None and Path(state.config).exists():
        # Keep the policy an earlier `up --policy` wrote.
        old = load_config(Path(state.config))
        policy = {"models": {k: v.model_dump(mode="json", exclude_none=True) for k, v in old.models.items()}}
    cfg = stack_config(state, repository.absolute(), cred_file, regions, policy)
    Path(state.config).write_text(
        "# Written by `tritonops dev up` for the local stack. Credentials are in the file named\n"
        "# by credentials_file (mode 0600), never in here.\n" + dump_config(cfg)
    )


@dataclass
class PartStatus:
    name: str
    pid: int
    running: bool
    ready: bool
    url: str


def status(state_dir: Path) -> tuple[StackState | None, list[PartStatus]]:
    state = read_state(state_dir.absolute())
    if state is None:
        return None, []
    # Process names: triton-<region> for a region's first server, triton-<region>-<i> for the others (--servers).
    urls = {f"triton-{r}": info["http_url"] for r, info in state.regions.items()}
    for r, extras in state.extra_servers.items():
        urls.update({f"triton-{r}-{i}": x["http_url"] for i, x in enumerate(extras, start=1)})
    parts = []
    for name, rec in state.processes.items():
        running = rec.alive()
        if name == "s3":
            url = state.s3_endpoint
            ready = running and _http_ok(url) is not None
        elif name.startswith("envoy-"):
            info = state.regions.get(name.removeprefix("envoy-"), {})
            url = f"http://{info.get('envoy_listen', '')}"
            ready = running and _http_ok(f"http://{info.get('envoy_admin', '')}/ready") == 200
        else:
            url = urls[name]
            ready = running and _http_ok(f"{url}/v2/health/ready") == 200
        parts.append(PartStatus(name=name, pid=rec.pid, running=running, ready=ready, url=url))
    return state, parts


def down(state_dir: Path) -> list[str]:
    """Stop exactly the processes ``up`` started (by recorded pid and start time). Returns their names."""
    state_dir = state_dir.absolute()
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = []
    # Tritons first: they may be reading from the S3 server while shutting down.
    for name in sorted(state.processes, key=lambda n: n == "s3"):
        if stop(state.processes[name]):
            stopped.append(name)
    _state_file(state_dir).unlink(missing_ok=True)
    return stopped
