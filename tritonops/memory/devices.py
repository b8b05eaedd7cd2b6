"""What every memory probe shares: the device reading, the probe Protocol, and Triton's process tree.

The probes themselves live beside this module, one job each: ``host_probe`` (the Triton process tree
and a python model's own stub processes), ``nvml_probe`` (NVML on the GPU node) and ``metrics_probe``
(Triton's metrics endpoint from afar). ``probes`` chooses one for a server and settles readings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import psutil

from tritonops.strenum import StrEnum

HOST_DEVICE = "host"


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
GONE = (psutil.NoSuchProcess, FileNotFoundError)


def process_tree(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants (each once)."""
    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            seen.setdefault(p.pid, p)
            for c in p.children(recursive=True):
                seen.setdefault(c.pid, c)
        except GONE:
            continue
    return list(seen.values())
