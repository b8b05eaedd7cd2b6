"""Memory probes: one interface, three sources.

- :class:`NvmlProbe`: NVML on the GPU node (per device total/used/free, MIG-aware, per process).
- :class:`MetricsProbe`: Triton's metrics endpoint from afar (``nv_gpu_memory_*`` per GPU uuid,
  ``nv_cpu_memory_*`` for the host).
- :class:`HostProbe`: the Triton process tree's resident memory plus system memory, via psutil.
  Python-backend models run in their own stub processes (children of tritonserver), so their cost
  shows up here; this is what the CPU local stack and KIND_CPU models use.

``usage()`` is what footprints are measured with: bytes attributable to the server, per device.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import psutil

from tritonops.errors import MemoryProbeError, TritonError
from tritonops.strenum import StrEnum
from tritonops.triton import client as triton_client
from tritonops.triton.metrics import parse_prometheus

log = logging.getLogger(__name__)

HOST_DEVICE = "host"
# The python backend runs each model instance in a process of its own with this executable.
STUB_NAME = "triton_python_backend_stub"
# How long the metrics probe waits for a just-started Triton's first memory poll.
FIRST_POLL_WAIT_S = 5.0
# A memory reading has settled when this many consecutive samples...
SETTLE_SAMPLES = 3
# ...lie within this many bytes of each other.
SETTLE_TOLERANCE_BYTES = 2 << 20
SETTLE_INTERVAL_S = 0.2


class DeviceKind(StrEnum):
    gpu = "gpu"
    host = "host"


class ProbeSource(StrEnum):
    """Where a probe reads memory from."""

    nvml = "nvml"
    metrics = "metrics"  # Triton's Prometheus endpoint
    host = "host"  # the Triton process tree's resident memory
    host_stub = "host-stub"  # one python-backend model's own stub processes


@dataclass(frozen=True)
class DeviceMemory:
    device: str  # GPU or MIG uuid, or "host"
    kind: DeviceKind
    total_bytes: int
    used_bytes: int
    free_bytes: int
    name: str = ""  # e.g. "NVIDIA H100 80GB HBM3", "host"
    reserved_bytes: int = 0  # NVML v2: memory the driver reserves (inside total, outside used and free)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": str(self.kind)}


@runtime_checkable
class MemoryProbe(Protocol):
    """What every probe offers."""

    source: ProbeSource

    def devices(self) -> list[DeviceMemory]: ...

    def process_bytes(self, pids: Iterable[int]) -> int: ...

    def usage(self) -> dict[str, int]: ...

    def device_type(self) -> str: ...


# A process gone while psutil reads its /proc entry: NoSuchProcess, or FileNotFoundError when the entry
# vanishes mid-read (psutil issue 2418). Stubs come and go while a server loads: both mean "gone".
_GONE = (psutil.NoSuchProcess, FileNotFoundError)


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants (each once)."""
    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            seen.setdefault(p.pid, p)
            for c in p.children(recursive=True):
                seen.setdefault(c.pid, c)
        except _GONE:
            continue
    return list(seen.values())


# -- host ------------------------------------------------------------------------------------------


class HostProbe:
    """Resident memory of a Triton process tree, and the machine's memory.

    ``metric="rss"`` (default) is what ps and the kernel report, counting a shared page once per
    process; measured on the local stack it reproduces allocation differences exactly.
    ``metric="pss"`` (Linux) splits shared pages between the processes mapping them, so a new
    stub costs only what it really adds; a little noisier, and slower to read.
    """

    source = ProbeSource.host
    # A reading is a fresh look at the process tree (no polling behind it): settling needs no long gaps.
    settle_interval_s = 0.05

    def __init__(self, pid: int, metric: str = "rss") -> None:
        if metric not in ("pss", "rss"):
            raise MemoryProbeError(f"host probe: unknown metric {metric!r} (pss or rss)")
        self.pid = pid
        self.metric = metric
        try:
            psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise MemoryProbeError(f"host probe: no process with pid {pid}") from None

    def _bytes(self, p: psutil.Process) -> int:
        if self.metric == "pss":
            try:
                return int(p.memory_full_info().pss)
            except (AttributeError, psutil.AccessDenied):
                self.metric = "rss"  # not Linux, or not ours: fall back once, for good
        return int(p.memory_info().rss)

    def process_bytes(self, pids: Iterable[int]) -> int:
        total = 0
        for p in _tree(pids):
            try:
                total += self._bytes(p)
            except _GONE:
                continue  # a stub that exited between listing and reading
        return total

    def tree_bytes(self) -> int:
        try:
            psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            raise MemoryProbeError(f"host probe: Triton process {self.pid} is gone") from None
        return self.process_bytes([self.pid])

    def devices(self) -> list[DeviceMemory]:
        vm = psutil.virtual_memory()
        used = int(vm.total - vm.available)
        return [DeviceMemory(HOST_DEVICE, DeviceKind.host, int(vm.total), used, int(vm.available), name="host")]

    def usage(self) -> dict[str, int]:
        return {HOST_DEVICE: self.tree_bytes()}

    def device_type(self) -> str:
        return "cpu"

    def stub_processes(self, model: str) -> list[psutil.Process]:
        """``model``'s python-backend stub processes (one per instance, children of Triton, named
        ``<model>_<group>_<instance>`` on their command line)."""
        name = re.compile(re.escape(model) + r"_\d+_\d+")
        out = []
        for p in _tree([self.pid]):
            try:
                argv = p.cmdline()
            except (*_GONE, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if len(argv) >= 3 and argv[0].endswith(STUB_NAME) and name.fullmatch(argv[-2]):
                out.append(p)
        return out

    def processes_bytes(self, procs: Iterable[psutil.Process]) -> int:
        """Memory of exactly these processes (no children); raises psutil's error for one that is gone."""
        return sum(self._bytes(p) for p in procs)


class StubUsage:
    """One model's stub processes as a probe reading, so the one settle loop can wait on them.

    The processes are found once (a walk of Triton's process tree, a command line per child: with
    50 models loaded, 50 reads per look) and then read directly; a stub that exits is looked for
    again."""

    source = ProbeSource.host_stub

    def __init__(self, host: HostProbe, model: str) -> None:
        self.host = host
        self.model = model
        self.settle_interval_s = host.settle_interval_s
        self._procs: list[psutil.Process] = []

    def usage(self) -> dict[str, int]:
        for _ in range(2):  # the stubs found last time, else a fresh look
            if not self._procs:
                self._procs = self.host.stub_processes(self.model)
                if not self._procs:
                    raise MemoryProbeError(f"host probe: no python-backend stub process for model {self.model!r}")
            try:
                return {HOST_DEVICE: self.host.processes_bytes(self._procs)}
            except (*_GONE, psutil.AccessDenied, psutil.ZombieProcess):
                self._procs = []  # a stub exited (a restart, an unload): look again
        raise MemoryProbeError(f"host probe: the stub process of model {self.model!r} exited")


# -- NVML ------------------------------------------------------------------------------------------


def _load_nvml(nvml_module: ModuleType | None) -> ModuleType:
    if nvml_module is not None:
        return nvml_module
    try:
        import pynvml
    except ImportError:
        raise MemoryProbeError("NVML unavailable: nvidia-ml-py (pynvml) is not installed") from None
    return pynvml


def _nvml_err(nv: ModuleType, e: BaseException) -> str:
    try:
        return str(nv.nvmlErrorString(e.value)) if hasattr(e, "value") else str(e)
    except Exception:  # noqa: BLE001 - the error string is best effort
        return str(e) or type(e).__name__


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class NvmlProbe:
    """GPU memory via NVML, on the node running Triton.

    Reports every GPU, or with MIG enabled every MIG instance instead of its parent (the parent's
    memory info covers the whole card). Per-process memory comes from the compute processes NVML
    lists; ``pids`` (Triton's, children included) restrict ``usage()`` to what the server holds.
    """

    source = ProbeSource.nvml
    settle_interval_s = 0.1  # NVML reads the driver's current numbers

    def __init__(self, pids: Iterable[int] | None = None, nvml_module: ModuleType | None = None) -> None:
        self.pids = list(pids) if pids is not None else None
        self._nv = _load_nvml(nvml_module)
        try:
            self._nv.nvmlInit()
        except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
            raise MemoryProbeError(f"NVML unavailable: {_nvml_err(self._nv, e)}") from None

    def close(self) -> None:
        try:
            self._nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            log.debug("nvmlShutdown failed", exc_info=True)

    def _handles(self) -> list[tuple[Any, str]]:
        """(handle, label) of every GPU, or of every MIG instance where MIG is on."""
        nv = self._nv
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as e:  # noqa: BLE001
            raise MemoryProbeError(f"NVML: cannot count GPUs: {_nvml_err(nv, e)}") from None
        out: list[tuple[Any, str]] = []
        for i in range(count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception as e:  # noqa: BLE001 - a GPU that fell off the bus reports GpuIsLost here
                raise MemoryProbeError(f"NVML: GPU {i}: {_nvml_err(nv, e)}") from None
            mig_on = False
            if hasattr(nv, "nvmlDeviceGetMigMode"):
                try:
                    current, _pending = nv.nvmlDeviceGetMigMode(h)
                    mig_on = current == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)
                except Exception:  # noqa: BLE001 - NotSupported on GPUs without MIG
                    mig_on = False
            if not mig_on:
                out.append((h, f"GPU {i}"))
                continue
            slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(h))
            for j in range(slots):
                try:
                    out.append((nv.nvmlDeviceGetMigDeviceHandleByIndex(h, j), f"GPU {i} MIG {j}"))
                except Exception:  # noqa: BLE001 - NotFound: an empty MIG slot
                    continue
        return out

    def _memory(self, h: Any, label: str) -> tuple[int, int, int, int]:
        """(total, used, free, reserved): v2 where the driver and bindings have it, else v1."""
        nv = self._nv
        v2 = getattr(nv, "nvmlMemory_v2", None)
        if v2 is not None:
            try:
                m = nv.nvmlDeviceGetMemoryInfo(h, version=v2)
                return int(m.total), int(m.used), int(m.free), int(getattr(m, "reserved", 0))
            except TypeError:
                pass  # bindings without the version argument
            except Exception as e:  # noqa: BLE001
                if "lost" in _nvml_err(nv, e).lower():
                    raise MemoryProbeError(f"NVML: {label}: {_nvml_err(nv, e)}") from None
                # FunctionNotFound / NotSupported: an older driver; v1 below
        try:
            m = nv.nvmlDeviceGetMemoryInfo(h)
        except Exception as e:  # noqa: BLE001
            raise MemoryProbeError(f"NVML: {label}: memory info: {_nvml_err(nv, e)}") from None
        return int(m.total), int(m.used), int(m.free), 0

    def _uuid(self, h: Any, label: str) -> str:
        try:
            return _s(self._nv.nvmlDeviceGetUUID(h))
        except Exception as e:  # noqa: BLE001
            raise MemoryProbeError(f"NVML: {label}: {_nvml_err(self._nv, e)}") from None

    def _name(self, h: Any) -> str:
        try:
            return _s(self._nv.nvmlDeviceGetName(h))
        except Exception:  # noqa: BLE001 - cosmetic
            return "gpu"

    def devices(self) -> list[DeviceMemory]:
        out = []
        for h, label in self._handles():
            total, used, free, reserved = self._memory(h, label)
            out.append(DeviceMemory(self._uuid(h, label), DeviceKind.gpu, total, used, free, self._name(h), reserved))
        return out

    def _per_process(self, h: Any, label: str) -> dict[int, int | None]:
        nv = self._nv
        try:
            procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
        except Exception as e:  # noqa: BLE001
            raise MemoryProbeError(f"NVML: {label}: running processes: {_nvml_err(nv, e)}") from None
        out: dict[int, int | None] = {}
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            # NVML reports "not available" (no permission, some MIG setups) as None or as a huge sentinel.
            if used is not None and int(used) >= (1 << 63) - 1:
                used = None
            out[int(p.pid)] = None if used is None else int(used) + (out.get(int(p.pid)) or 0)
        return out

    def process_bytes_by_device(self, pids: Iterable[int]) -> dict[str, int]:
        """GPU memory held by ``pids`` and their children, per device uuid."""
        wanted = {p.pid for p in _tree(pids)} | set(pids)
        out: dict[str, int] = {}
        for h, label in self._handles():
            uuid = self._uuid(h, label)
            total = 0
            for pid, used in self._per_process(h, label).items():
                if pid not in wanted:
                    continue
                if used is None:
                    raise MemoryProbeError(
                        f"NVML: {label}: per-process memory of pid {pid} not available (permissions or MIG)"
                    )
                total += used
            out[uuid] = total
        return out

    def process_bytes(self, pids: Iterable[int]) -> int:
        return sum(self.process_bytes_by_device(list(pids)).values())

    def usage(self) -> dict[str, int]:
        if self.pids is not None:
            return self.process_bytes_by_device(self.pids)
        return {d.device: d.used_bytes for d in self.devices()}

    def device_type(self) -> str:
        names = sorted({d.name for d in self.devices()})
        return names[0] if len(names) == 1 else ",".join(names) or "gpu"


# -- Triton metrics ----------------------------------------------------------------------------------


class MetricsProbe:
    """Memory as Triton's metrics endpoint reports it, from anywhere that can reach the server.

    GPUs: ``nv_gpu_memory_total_bytes`` / ``nv_gpu_memory_used_bytes`` per ``gpu_uuid``. The host:
    ``nv_cpu_memory_total_bytes`` / ``nv_cpu_memory_used_bytes`` (with ``--allow-cpu-metrics``).
    No per-process view: ``usage()`` is device-wide, so footprints from it include other tenants.
    """

    source = ProbeSource.metrics

    def __init__(self, metrics_url: str, timeout_s: float = 10.0, gpu_type: str = "gpu") -> None:
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        self.gpu_type = gpu_type

    def _scrape(self) -> list[tuple[str, dict[str, str], float]]:
        try:
            return parse_prometheus(triton_client.fetch_metrics(self.metrics_url, self.timeout_s))
        except TritonError as e:
            raise MemoryProbeError(str(e)) from None

    def devices(self) -> list[DeviceMemory]:
        # Triton fills these gauges on its first poll (--metrics-interval-ms, 2 s by default) and
        # serves zeros until then: wait for real numbers rather than report an empty machine.
        deadline = time.monotonic() + FIRST_POLL_WAIT_S
        while True:
            devs, unpolled = self._devices_once()
            if not unpolled or time.monotonic() >= deadline:
                return devs
            time.sleep(0.25)

    def shows_gpus(self) -> bool:
        """Whether Triton exports GPU memory gauges (before its first poll they read 0, but exist)."""
        return any(name == "nv_gpu_memory_total_bytes" for name, _, _ in self._scrape())

    def _devices_once(self) -> tuple[list[DeviceMemory], bool]:
        samples = self._scrape()
        gpus: dict[str, dict[str, int]] = {}
        host: dict[str, int] = {}
        for name, labels, value in samples:
            if name in ("nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes"):
                uuid = labels.get("gpu_uuid", "gpu")
                gpus.setdefault(uuid, {})[name.split("_")[3]] = int(value)
            elif name in ("nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes"):
                host[name.split("_")[3]] = int(value)
        out = []
        unpolled = False
        for uuid in sorted(gpus):
            g = gpus[uuid]
            if not g.get("total") or "used" not in g:
                unpolled = True
                continue
            out.append(DeviceMemory(uuid, DeviceKind.gpu, g["total"], g["used"], g["total"] - g["used"], self.gpu_type))
        if host.get("total") and "used" in host:
            out.append(
                DeviceMemory(
                    HOST_DEVICE, DeviceKind.host, host["total"], host["used"], host["total"] - host["used"], "host"
                )
            )
        elif "total" in host:
            unpolled = True
        return out, unpolled

    def process_bytes(self, pids: Iterable[int]) -> int:
        raise MemoryProbeError(f"metrics {self.metrics_url}: no per-process memory from the metrics endpoint")

    def usage(self) -> dict[str, int]:
        devs = self.devices()
        gpus = [d for d in devs if d.kind == DeviceKind.gpu]
        # A GPU server's footprints are GPU memory; host memory is the fallback for CPU-only servers.
        return {d.device: d.used_bytes for d in (gpus or devs)}

    def device_type(self) -> str:
        return self.gpu_type if any(d.kind == DeviceKind.gpu for d in self.devices()) else "cpu"


# -- choosing a probe for a server -----------------------------------------------------------------


def local_pid_listening(url: str) -> int | None:
    """The pid of the local process listening on ``url``'s port, when the host is this machine."""
    from urllib.parse import urlparse

    u = urlparse(url if "://" in url else f"http://{url}")
    if u.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0") or u.port is None:
        return None
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == u.port and c.pid:
            return int(c.pid)
    return None


def probe_for_server(
    url: str,
    metrics_url: str | None = None,
    *,
    pid: int | None = None,
    prefer: ProbeSource | str | None = None,
    nvml_module: ModuleType | None = None,
) -> MemoryProbe:
    """The best probe for a server: NVML for a local Triton with GPUs, else its metrics when they show
    GPUs, else the host probe for a local Triton, else its metrics (host memory only).

    ``prefer`` ("nvml", "metrics", "host") forces one source and fails if it cannot work.
    """
    if pid is None:
        pid = local_pid_listening(url)
    errors: list[str] = []

    def nvml() -> MemoryProbe | None:
        try:
            p = NvmlProbe(pids=[pid] if pid else None, nvml_module=nvml_module)
            if p.devices():
                return p
            errors.append("NVML: no GPUs")
        except MemoryProbeError as e:
            errors.append(str(e))
        return None

    def metrics(require_gpu: bool) -> MemoryProbe | None:
        if not metrics_url:
            errors.append(f"server {url}: no metrics_url")
            return None
        m = MetricsProbe(metrics_url)
        try:
            if require_gpu and not m.shows_gpus():
                return None  # no GPU gauges at all: no need to wait for Triton's first poll of them
            devs = m.devices()
        except MemoryProbeError as e:
            errors.append(str(e))
            return None
        if require_gpu and not any(d.kind == DeviceKind.gpu for d in devs):
            return None
        return m if devs else None

    def host() -> MemoryProbe | None:
        if pid is None:
            errors.append(f"server {url}: not a local process (host probe needs its pid)")
            return None
        return HostProbe(pid)

    if prefer is None:
        chain = [lambda: nvml() if pid else None, lambda: metrics(True), host, lambda: metrics(False)]
    else:
        try:
            only = ProbeSource(prefer)
        except ValueError:
            raise MemoryProbeError(f"unknown memory probe {prefer!r} (nvml, metrics or host)") from None
        chain = [{ProbeSource.nvml: nvml, ProbeSource.metrics: lambda: metrics(False), ProbeSource.host: host}[only]]
    for make in chain:
        probe = make()
        if probe is not None:
            if errors:
                log.info("server %s: using the %s memory probe (%s)", url, probe.source, "; ".join(errors))
            return probe
    raise MemoryProbeError(f"server {url}: no memory probe works: {'; '.join(errors) or 'none applicable'}")


@dataclass(frozen=True)
class Settled:
    """A usage reading per device; ``settled`` is False when the deadline came first."""

    reading: dict[str, int]
    settled: bool


class _Readable(Protocol):
    def usage(self) -> dict[str, int]: ...


def settle(
    probe: _Readable,
    *,
    timeout_s: float = 10.0,
    until: Callable[[dict[str, int]], bool] | None = None,
    about: str = "",
) -> Settled:
    """The one settle loop: read ``probe`` until ``SETTLE_SAMPLES`` readings lie within
    ``SETTLE_TOLERANCE_BYTES`` of each other (and ``until(reading)`` holds, when given), or
    ``timeout_s`` passes (then the last reading, ``settled=False``). ``about`` names the server in
    the MemoryProbeError a failing probe becomes. Readings are ``probe.settle_interval_s`` apart where
    the probe says how fresh its numbers are (host and NVML read live values), else SETTLE_INTERVAL_S."""
    interval_s = float(getattr(probe, "settle_interval_s", SETTLE_INTERVAL_S))
    deadline = time.monotonic() + timeout_s
    seen: list[int] = []
    while True:
        now = usage(probe, about)
        seen.append(sum(now.values()))
        last = seen[-SETTLE_SAMPLES:]
        stable = len(last) == SETTLE_SAMPLES and max(last) - min(last) <= SETTLE_TOLERANCE_BYTES
        if stable and (until is None or until(now)):
            return Settled(now, True)
        if time.monotonic() >= deadline:
            log.info("%s memory still moving after %.0fs; using the last reading", about or "probe", timeout_s)
            return Settled(now, False)
        time.sleep(interval_s)


def usage(probe: _Readable, about: str = "") -> dict[str, int]:
    """``probe.usage()``, any failure a MemoryProbeError naming ``about`` (the server)."""
    try:
        return dict(probe.usage())
    except MemoryProbeError:
        raise
    except Exception as e:  # noqa: BLE001 - probes wrap psutil, NVML and HTTP, each with its own errors
        where = f"{about}: " if about else ""
        raise MemoryProbeError(f"{where}memory probe failed: {type(e).__name__}: {e}") from e
