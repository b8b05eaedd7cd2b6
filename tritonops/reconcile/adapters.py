"""Adapters from the model-control stage (``tritonops.triton``, ``tritonops.memory``) to reconcile's ports.

- ``ControlAdapter``: ``ControlClient`` for index, statistics and unload (which waits until the index
  and, with a probe, the memory say the model is gone); loads go through ``measured_load`` when a
  probe and the footprint ledger are given, so every load reconcile makes is measured and recorded.
- ``ProbeMemory``: a ``MemoryProbe`` as reconcile's ``MemoryPort``.
- ``LedgerFootprint``: predictions from the ledger (measured when known, else its estimate).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tritonops.config import ServerConfig
from tritonops.errors import MemoryProbeError, TritonOpsError
from tritonops.fileio import utc_now
from tritonops.memory.ledger import FootprintKey, FootprintLedger
from tritonops.memory.loads import measured_load, measured_unload
from tritonops.memory.probes import DeviceMemory, HostProbe, MemoryProbe, probe_for_server
from tritonops.repo.model_config import warmup_inputs
from tritonops.triton.client import READY, ControlClient, ModelState

log = logging.getLogger(__name__)


class ControlAdapter:
    def __init__(
        self, server: ServerConfig, probe: MemoryProbe | None, ledger: FootprintLedger | None
    ) -> None:
        self.name = server.name
        self.client = ControlClient.from_server(server)
        self.probe = probe
        self.ledger = ledger
        self.load_threads = server.load_threads
        self._ledger_key: tuple[str, str] | None = None

    def load_mode(self, model: str, version: int, digest: str, backend: str) -> str:
        if self.probe is None or self.ledger is None:
            return "known"  # nothing is measured
        if self._ledger_key is None:
            self._ledger_key = (self.probe.device_type(), self.client.triton_version())
        device_type, triton_version = self._ledger_key
        key = FootprintKey(model, version, digest, device_type, triton_version)
        if digest and self.ledger.measured(key) is not None:
            return "known"
        return "own-process" if isinstance(self.probe, HostProbe) and backend == "python" else "alone"

    def index(self) -> list[ModelState]:
        """The server's repository index; the ledger's holdings for this server follow it on every read."""
        as_of = utc_now()
        rows = self.client.index()
        if self.ledger is not None:
            ready: dict[str, set[int]] = {}
            for r in rows:
                if r.state == READY and r.version is not None:
                    ready.setdefault(r.name, set()).add(r.version)
            try:
                self.ledger.reconcile_holdings(self.name, ready, as_of)
            except MemoryProbeError as e:  # an unreadable ledger: the next measured load reports it
                log.warning("server %s: ledger holdings not reconciled: %s", self.name, e)
        return rows

    def ready_versions(self, model: str) -> list[int]:
        """One model's READY versions; the ledger's holdings of that model follow them, as on ``index``."""
        as_of = utc_now()
        versions = self.client.loaded_versions(model)
        if self.ledger is not None:
            try:
                self.ledger.reconcile_holdings(self.name, {model: set(versions)}, as_of, only={model})
            except MemoryProbeError as e:
                log.warning("server %s: ledger holdings of %r not reconciled: %s", self.name, model, e)
        return versions

    def statistics(self, model: str | None = None) -> list[dict[str, Any]]:
        """Triton's per-model statistics (the demand stage's Triton source reads them)."""
        return self.client.statistics(model)

    def last_inference_ms(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.client.statistics():
            name = str(s.get("name", ""))
            out[name] = max(out.get(name, 0), int(s.get("last_inference", 0) or 0))
        return out

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
    ) -> int | None:
        if self.probe is None or self.ledger is None or not measure:
            self.client.load(model, config=config_json)
            return None
        res = measured_load(
            self.client,
            self.probe,
            self.ledger,
            model,
            version=version,
            digest=digest or None,
            size_bytes=size_bytes or None,
            config=config_json,
            loaded=loaded,
        )
        return res.footprint_bytes

    def unload(self, model: str) -> None:
        if self.probe is not None and self.ledger is not None:
            measured_unload(self.client, self.probe, self.ledger, model)
        else:
            self.client.unload(model, wait=True)

    def warmup(self, model: str, version: int, config: dict[str, Any]) -> None:
        # The request is built from the config Triton reports for the loaded version, not ``config``
        # (the published file): a backend may have completed it (python ``auto_complete_config``
        # fills in inputs a config.pbtxt leaves out), and Triton's copy is what it will accept.
        reported = self.client.model_config(model, version)
        self.client.infer(model, warmup_inputs(reported if reported.get("input") else config), version=version)


class ProbeMemory:
    def __init__(self, probe: MemoryProbe) -> None:
        self.probe = probe

    def devices(self) -> list[DeviceMemory]:
        # Reconcile budgets with total - used (NVML's own free also leaves out driver-reserved memory);
        # kept as it was when reconcile had a type of its own for this.
        return [
            dataclasses.replace(d, free_bytes=max(0, d.total_bytes - d.used_bytes)) for d in self.probe.devices()
        ]


class LedgerFootprint:
    """Ledger predictions for one device type and Triton version (the region's servers are alike)."""

    def __init__(self, ledger: FootprintLedger, device_type: str, triton_version: str) -> None:
        self.ledger = ledger
        self.device_type = device_type
        self.triton_version = triton_version

    def predict(self, model: str, digest: str, size_bytes: int) -> int:
        return self.prediction(model, digest, size_bytes)[0]

    def prediction(self, model: str, digest: str, size_bytes: int) -> tuple[int, str]:
        key = FootprintKey(model, None, digest or None, self.device_type, self.triton_version)
        p = self.ledger.predict(key, size_bytes)
        return p.bytes, p.source


def probe_or_none(server: ServerConfig) -> MemoryProbe | None:
    url = server.http_url or server.grpc_url or ""
    try:
        return probe_for_server(url, server.metrics_url)
    except (MemoryProbeError, TritonOpsError) as e:
        log.info("server %s: no memory probe (%s); planning by budget only", server.name, e)
        return None
