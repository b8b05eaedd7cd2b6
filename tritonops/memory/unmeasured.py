"""A failed measurement is not a failed load.

Triton decides whether a model serves; a probe only says what it costs. When the probe cannot say
(a stub it cannot attribute, NVML without per-process numbers, a metrics endpoint that stopped
answering), the model Triton loaded stays loaded and is held at an estimate instead:

    estimate = ledger estimate (disk size x 2 + 64 MiB) x instances x (1 + UNMEASURED_MARGIN)

``instances`` is the number of model instances in the config Triton serves (each python-backend
instance is a process of its own, so the per-instance base counts once per instance), and the margin
(50 %) covers what a guess from the disk size misses. The ledger holds it marked ``estimate`` with the
probe's error; predictions of the same version use it until a later load measures it.

Only a failure of the load itself (Triton's error, or the version not READY afterwards) is raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tritonops.errors import MemoryProbeError, TritonError
from tritonops.memory.devices import MemoryProbe
from tritonops.memory.estimate import estimate_bytes
from tritonops.memory.host_probe import served_stub_names
from tritonops.memory.ledger import FootprintKey, FootprintLedger, Prediction
from tritonops.memory.loads import LoadResult, measured_load
from tritonops.triton.client import ControlClient

log = logging.getLogger(__name__)

# What an unmeasured footprint adds to the estimate (0.5: half as much again).
UNMEASURED_MARGIN = 0.5


@dataclass
class EstimatedLoad(LoadResult):
    """A load that serves, held at an estimate because its footprint could not be measured."""

    error: str = ""  # why the probe could not measure it

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "footprint_source": "estimate", "measure_error": self.error}


def unmeasured_bytes(size_bytes: int | None, instances: int) -> int:
    """The footprint an unmeasured model is held at (see the module's docstring)."""
    return int(estimate_bytes(size_bytes or 0) * max(1, instances) * (1 + UNMEASURED_MARGIN))


def _device_type(probe: MemoryProbe) -> str:
    try:
        return probe.device_type()
    except (MemoryProbeError, TritonError):
        return "unknown"


def load_or_estimate(
    client: ControlClient,
    probe: MemoryProbe,
    ledger: FootprintLedger,
    model: str,
    *,
    version: int | None = None,
    digest: str | None = None,
    size_bytes: int | None = None,
    config: str | None = None,
    loaded: list[int] | None = None,
) -> LoadResult:
    """``measured_load``; where only the measurement fails, the model loaded (loaded now, plainly, when
    the probe failed before the load was sent) and held at its estimate (an :class:`EstimatedLoad`)."""
    try:
        return measured_load(
            client, probe, ledger, model, version=version, digest=digest, size_bytes=size_bytes,
            config=config, loaded=loaded,
        )  # fmt: skip
    except MemoryProbeError as e:
        error = str(e)
    ready = client.loaded_versions(model)
    if (version not in ready) if version is not None else not ready:
        client.load(model, config=config)  # the probe failed before the load was sent: load it unmeasured
        ready = client.loaded_versions(model)
        if (version not in ready) if version is not None else not ready:
            raise TritonError(f"server {client.url}: model {model!r} version {version} not READY after load")
    version = version if version is not None else max(ready)
    names = served_stub_names(client, model, version)
    held = unmeasured_bytes(size_bytes, names.expected if names else 1)
    fkey = FootprintKey(model, version, digest, _device_type(probe), client.triton_version())
    try:
        ledger.record_unmeasured(client.name, fkey, held, error)
    except MemoryProbeError as e:  # an unreadable ledger: the model still serves; the next read reports it
        log.warning("server %s: model %r: estimate not recorded: %s", client.name, model, e)
    log.warning(
        "server %s: model %r v%s serves, but its footprint could not be measured (%s); held at its estimate, "
        "%d bytes", client.name, model, version, error, held,
    )  # fmt: skip
    return EstimatedLoad(model, version, held, Prediction(held, "estimate"), 0.0, {}, measured=False, error=error)
