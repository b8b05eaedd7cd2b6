"""Measured memory: probes (NVML, Triton metrics, host process tree) and the footprint ledger."""

from __future__ import annotations

from tritonops.memory.ledger import FootprintLedger, LoadResult, Prediction, measured_load, measured_unload
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
    "FootprintLedger",
    "HostProbe",
    "LoadResult",
    "MemoryProbe",
    "MetricsProbe",
    "NvmlProbe",
    "Prediction",
    "measured_load",
    "measured_unload",
    "probe_for_server",
]
