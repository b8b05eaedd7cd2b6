"""Measured memory: probes (NVML, Triton metrics, host process tree) and the footprint ledger."""

from __future__ import annotations

from tritonops.memory.ledger import FootprintKey, FootprintLedger, Prediction
from tritonops.memory.loads import LoadResult, MeasuredUnload, measured_load, measured_unload, unload_and_wait
from tritonops.memory.probes import (
    DeviceMemory,
    HostProbe,
    MemoryProbe,
    MetricsProbe,
    NvmlProbe,
    probe_for_server,
)

__all__ = [
    "DeviceMemory",
    "FootprintKey",
    "FootprintLedger",
    "HostProbe",
    "LoadResult",
    "MeasuredUnload",
    "MemoryProbe",
    "MetricsProbe",
    "NvmlProbe",
    "Prediction",
    "measured_load",
    "measured_unload",
    "probe_for_server",
    "unload_and_wait",
]
