"""The few things reconcile needs from Triton and from memory probes, as small Protocols.

Their values are the stages' own types (``ModelState`` from the Triton client, ``DeviceMemory`` from
the probes): one type per concept. The planner never touches them (it is pure);
``state.gather_actual`` and ``apply`` take them as arguments, so tests and other stages can pass
the real adapters (``reconcile.adapters``, over ``tritonops.triton.client``) or a fake where nothing
real can run (NVML without a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tritonops.memory.ledger import estimate_bytes
from tritonops.memory.probes import DeviceMemory
from tritonops.triton.client import ModelState


@dataclass(frozen=True)
class Unmeasured:
    """A load that serves, whose footprint the probe could not measure: it is held at ``estimate_bytes``
    (``memory.unmeasured``: the estimate plus a margin) and the probe's ``error`` is reported."""

    estimate_bytes: int
    error: str


class ServerControl(Protocol):
    """Model control of one Triton server."""

    name: str
    # Loads run at once on this server when their footprints are known (Triton's model load threads).
    load_threads: int

    def index(self) -> list[ModelState]: ...

    def ready_versions(self, model: str) -> list[int]:
        """The versions of ``model`` READY now; cheaper than ``index`` (no repository listing)."""
        ...

    def load_mode(self, model: str, version: int, digest: str, backend: str) -> str:
        """How a first load of this version is measured: ``known`` (footprint known, or loads not measured:
        nothing to measure), ``own-process`` (measured from the model's own processes, e.g. a python
        stub on the host probe) or ``alone`` (a before/after delta: nothing else may load meanwhile)."""
        ...

    def last_inference_ms(self) -> dict[str, int]:
        """Model -> last inference time (ms since the epoch; 0 = never), from Triton's statistics."""
        ...

    def load(
        self,
        model: str,
        config_json: str | None = None,
        *,
        version: int | None = None,
        digest: str = "",
        size_bytes: int = 0,
        measure: bool = True,
        loaded: list[int] | None = None,
    ) -> int | Unmeasured | None:
        """Load (or reload) with a config override. Returns the measured footprint in bytes when the
        implementation measures it (the ledger adapter does) and ``measure`` is set, else None; an
        ``Unmeasured`` when the model loaded but its footprint could not be measured (not a failure).
        ``measure=False`` for a call that only drops versions (its memory delta is not a footprint).
        ``loaded``: the versions loaded before this call, as the plan saw them (None: ask Triton)."""
        ...

    def unload(self, model: str) -> None:
        """Returns when the index no longer shows the model READY (Triton's unload is asynchronous)."""
        ...

    def warmup(self, model: str, version: int, config: dict[str, Any]) -> None:
        """One inference with inputs generated from the config Triton reports for the loaded version
        (``config``, the published one, only where Triton reports no inputs); raises TritonError on failure."""
        ...


class MemoryPort(Protocol):
    """Measured memory of one server's devices."""

    def devices(self) -> list[DeviceMemory]: ...


class FootprintPort(Protocol):
    """Predicted memory one model version takes per device (measured when known, else a guess)."""

    def predict(self, model: str, digest: str, size_bytes: int) -> int: ...

    def prediction(self, model: str, digest: str, size_bytes: int) -> tuple[int, str]:
        """(bytes, "measured" or "estimate")."""
        ...


@dataclass(frozen=True)
class SizeGuess:
    """The first guess for a model never measured, when no probe answers: the ledger's one estimate
    (``memory.ledger.estimate_bytes``: disk size x 2 + 64 MiB), so a plan made with or without a
    probe prices an unmeasured model the same."""

    def predict(self, model: str, digest: str, size_bytes: int) -> int:
        return estimate_bytes(size_bytes)

    def prediction(self, model: str, digest: str, size_bytes: int) -> tuple[int, str]:
        return self.predict(model, digest, size_bytes), "estimate"
