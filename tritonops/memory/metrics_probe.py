"""Memory as Triton's metrics endpoint reports it (``nv_gpu_memory_*``, ``nv_cpu_memory_*``), from afar."""

from __future__ import annotations

import time
from collections.abc import Iterable

from tritonops.errors import MemoryProbeError, TritonError
from tritonops.memory.devices import HOST_DEVICE, DeviceKind, DeviceMemory, ProbeSource
from tritonops.triton import client as triton_client
from tritonops.triton.metrics import parse_prometheus

# How long the metrics probe waits for a just-started Triton's first memory poll.
FIRST_POLL_WAIT_S = 5.0


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
