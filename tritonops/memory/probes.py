"""Memory probes: one interface, three sources, and the one settle loop.

- :class:`NvmlProbe` (``nvml_probe``): NVML on the GPU node (per device total/used/free, MIG-aware,
  per process).
- :class:`MetricsProbe` (``metrics_probe``): Triton's metrics endpoint from afar (``nv_gpu_memory_*``
  per GPU uuid, ``nv_cpu_memory_*`` for the host).
- :class:`HostProbe` (``host_probe``): the Triton process tree's resident memory plus system memory,
  via psutil. Python-backend models run in their own stub processes (children of tritonserver), so
  their cost shows up here; this is what the CPU local stack and KIND_CPU models use.

``usage()`` is what footprints are measured with: bytes attributable to the server, per device.
This module chooses a probe for a server (:func:`probe_for_server`) and waits for readings to settle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import psutil

from tritonops.errors import MemoryProbeError
from tritonops.memory.devices import HOST_DEVICE, DeviceKind, DeviceMemory, MemoryProbe, ProbeSource
from tritonops.memory.host_probe import STUB_NAME, HostProbe, StubNames, StubUsage
from tritonops.memory.metrics_probe import MetricsProbe, parse_prometheus
from tritonops.memory.nvml_probe import NvmlProbe

__all__ = [
    "HOST_DEVICE", "STUB_NAME", "DeviceKind", "DeviceMemory", "HostProbe", "MemoryProbe", "MetricsProbe",
    "NvmlProbe", "ProbeSource", "Settled", "StubNames", "StubUsage", "local_pid_listening", "parse_prometheus",
    "probe_for_server", "settle", "usage",
]  # fmt: skip

log = logging.getLogger(__name__)

# A memory reading has settled when this many consecutive samples...
SETTLE_SAMPLES = 3
# ...lie within this many bytes of each other.
SETTLE_TOLERANCE_BYTES = 2 << 20
SETTLE_INTERVAL_S = 0.2


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
