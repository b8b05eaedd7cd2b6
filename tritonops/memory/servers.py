"""One view of a region's servers: what each serves at which version, its memory, whether it answered.

:func:`read_each` is the one way tritonops reads several servers: all at once (a region's servers are
independent, and one that is slow to answer costs the run its timeout once, not once per server
before it). :func:`read_server` reads one server into a typed :class:`ServerView`; a server that
does not answer is a view with its ``error``, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tritonops.config import ServerConfig
from tritonops.errors import MemoryProbeError, TritonOpsError
from tritonops.memory.probes import DeviceMemory, probe_for_server
from tritonops.triton.client import READY, ControlClient, ModelState

T = TypeVar("T")


def read_each(names: Sequence[str], read: Callable[[str], T]) -> dict[str, T]:
    """``read(name)`` for every name, in parallel; the results in the order of ``names``. ``read`` must
    not raise for a server that does not answer (record it in its result)."""
    if len(names) <= 1:
        return {n: read(n) for n in names}
    with ThreadPoolExecutor(len(names), thread_name_prefix="read-server") as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


@dataclass
class ServerView:
    """What one server said, as far as it got: a field None was not read (``error`` says why)."""

    name: str
    url: str | None
    live: bool = False
    ready: bool = False
    triton_version: str | None = None
    index: list[ModelState] | None = None  # every row of the repository index, any state
    error: str | None = None
    probe: str | None = None
    devices: list[DeviceMemory] = field(default_factory=list)
    memory_error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None

    def ready_versions(self, model: str) -> list[int]:
        """The versions of ``model`` the index shows READY."""
        rows = [m for m in self.index or [] if m.name == model and m.state == READY]
        return sorted(m.version for m in rows if m.version is not None)

    def to_json(self) -> dict[str, Any]:
        """The row ``tritonops status`` prints for the server."""
        row: dict[str, Any] = {"server": self.name, "url": self.url, "live": self.live, "ready": self.ready}
        if self.triton_version is not None:
            row["triton_version"] = self.triton_version
        if self.index is not None:
            models: dict[str, Any] = {}
            for m in self.index:
                entry = models.setdefault(m.name, {"versions": {}})
                if m.version is not None:
                    entry["versions"][str(m.version)] = {"state": m.state, "reason": m.reason}
                else:
                    entry["state"] = m.state
                    entry["reason"] = m.reason
            row["models"] = models
        if self.error is not None:
            row["error"] = self.error
            return row
        memory: dict[str, Any] = {"probe": self.probe, "devices": [d.to_json() for d in self.devices]}
        if self.memory_error is not None:
            memory["error"] = self.memory_error
        row["memory"] = memory
        return row


def read_server(
    server: ServerConfig, *, timeout_s: float = 10.0, probe: str | None = None, index_only: bool = False
) -> ServerView:
    """Health, Triton version, the repository index and the memory of one server; with ``index_only``,
    the index alone (one call: what a release check asks of each server)."""
    view = ServerView(server.name, server.http_url or server.grpc_url)
    try:
        c = ControlClient.from_server(server, None, timeout_s=timeout_s)
        if not index_only:
            view.live = c.live()
            view.ready = c.ready()
            view.triton_version = c.triton_version()
        view.index = c.index()
    except TritonOpsError as e:
        view.error = str(e)
        return view
    if index_only:
        return view
    try:
        p = probe_for_server(c.url, server.metrics_url, prefer=probe)
        view.probe = p.source
        view.devices = p.devices()
    except MemoryProbeError as e:
        view.probe, view.devices, view.memory_error = None, [], str(e)
    return view
