"""GPU memory via NVML on the node running Triton: per device total/used/free (MIG-aware), per process."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from tritonops.errors import MemoryProbeError
from tritonops.memory.devices import DeviceKind, DeviceMemory, ProbeSource, process_tree

log = logging.getLogger(__name__)


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
        wanted = {p.pid for p in process_tree(pids)} | set(pids)
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
