"""A fake ``pynvml`` module: the same functions and error shapes as nvidia-ml-py, driven by plain data.

Only for unit tests of the NVML probe on machines without a GPU; on a GPU machine
``scripts/gpu_check_nvml.py`` checks the real thing.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15

_STRINGS = {
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _STRINGS.get(self.value, f"NVML error {self.value}")


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 << 30
    used: int = 1 << 30
    reserved: int = 512 << 20
    # pid -> bytes (None: "not available", as NVML reports without permission)
    processes: dict[int, int | None] = field(default_factory=dict)
    mig: list[FakeGpu | None] | None = None  # MIG slots when MIG is on; None entries are empty slots
    lost: bool = False


def make_nvml(gpus: list[FakeGpu], *, v2: bool = True, version_kwarg: bool = True,
              init_error: int | None = None) -> types.ModuleType:  # fmt: skip
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError  # type: ignore[attr-defined]
    nv.NVML_DEVICE_MIG_ENABLE = 1  # type: ignore[attr-defined]
    nv.calls = []  # type: ignore[attr-defined]
    if version_kwarg:
        nv.nvmlMemory_v2 = 0x02000028  # type: ignore[attr-defined]

    def check(g: FakeGpu) -> None:
        if g.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    def nvmlInit() -> None:
        if init_error is not None:
            raise NVMLError(init_error)

    def nvmlDeviceGetHandleByIndex(i: int) -> FakeGpu:
        if gpus[i].lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpus[i]

    def nvmlDeviceGetMemoryInfo(h: FakeGpu, version: int | None = None) -> Any:
        check(h)
        nv.calls.append(("mem", h.uuid, version))  # type: ignore[attr-defined]
        if version is not None:
            if not v2:
                raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
            return types.SimpleNamespace(version=version, total=h.total, reserved=h.reserved,
                                         free=h.total - h.reserved - h.used, used=h.used)  # fmt: skip
        # v1 counts the reserved memory as used.
        return types.SimpleNamespace(total=h.total, free=h.total - h.reserved - h.used, used=h.used + h.reserved)

    def nvmlDeviceGetMemoryInfo_no_kwarg(h: FakeGpu) -> Any:
        return nvmlDeviceGetMemoryInfo(h)

    def nvmlDeviceGetMigMode(h: FakeGpu) -> list[int]:
        check(h)
        return [1, 1] if h.mig is not None else [0, 0]

    def nvmlDeviceGetMaxMigDeviceCount(h: FakeGpu) -> int:
        return len(h.mig or [])

    def nvmlDeviceGetMigDeviceHandleByIndex(h: FakeGpu, j: int) -> FakeGpu:
        slot = (h.mig or [])[j]
        if slot is None:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return slot

    def nvmlDeviceGetComputeRunningProcesses(h: FakeGpu) -> list[Any]:
        check(h)
        return [types.SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in h.processes.items()]

    nv.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    nv.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nv.nvmlErrorString = lambda v: _STRINGS.get(v, f"NVML error {v}")  # type: ignore[attr-defined]
    nv.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    nv.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex  # type: ignore[attr-defined]
    nv.nvmlDeviceGetMemoryInfo = (  # type: ignore[attr-defined]
        nvmlDeviceGetMemoryInfo if version_kwarg else nvmlDeviceGetMemoryInfo_no_kwarg
    )
    nv.nvmlDeviceGetMigMode = nvmlDeviceGetMigMode  # type: ignore[attr-defined]
    nv.nvmlDeviceGetMaxMigDeviceCount = nvmlDeviceGetMaxMigDeviceCount  # type: ignore[attr-defined]
    nv.nvmlDeviceGetMigDeviceHandleByIndex = nvmlDeviceGetMigDeviceHandleByIndex  # type: ignore[attr-defined]
    nv.nvmlDeviceGetComputeRunningProcesses = nvmlDeviceGetComputeRunningProcesses  # type: ignore[attr-defined]
    nv.nvmlDeviceGetUUID = lambda h: h.uuid.encode()  # type: ignore[attr-defined]  # old bindings return bytes
    nv.nvmlDeviceGetName = lambda h: h.name  # type: ignore[attr-defined]
    return nv
