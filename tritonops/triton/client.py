"""A Triton model-control client that does one thing per call and tells the truth about state.

One interface over ``tritonclient.http`` and ``tritonclient.grpc``: health, metadata, repository index,
load (with config and file overrides), unload (optionally waiting until the index says the model is
gone; waiting for its memory is ``tritonops.memory``'s job), statistics and the metrics scrape. Every
call has a client-side timeout; every failure becomes one ``TritonError`` line naming the server and
the model.

Triton loads a model twice when two load calls for it overlap, so :meth:`ControlClient.load`
joins a load of the same model already in flight on the same server (in this process) instead of
issuing a second one. ``LOADS`` (triton/inflight.py) is that one registry; ``tritonops.memory``'s
measured loads use it too. The wire adapters are in triton/backends.py, the metrics scrape and its
parser in triton/metrics.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tritonops.errors import TritonError, TritonTimeout, TritonUnreachable
from tritonops.strenum import StrEnum
from tritonops.triton.backends import (
    Backend,
    GrpcBackend,
    HttpBackend,
    normalise_stats,
    parse_index_version,
    strip_scheme,
)
from tritonops.triton.inflight import LOADS, LoadsInFlight
from tritonops.triton.metrics import fetch_metrics, one_line

if TYPE_CHECKING:
    from tritonops.config import ServerConfig

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
# A load downloads the model folder and runs its initialisation: minutes for big models.
DEFAULT_LOAD_TIMEOUT_S = 600.0
DEFAULT_UNLOAD_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.1
VERSION_TTL_S = 30.0

T = TypeVar("T")

# States Triton's repository index reports.
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
LOADING = "LOADING"
UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class ModelState:
    """One row of Triton's repository index."""

    name: str
    version: int | None
    state: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "state": self.state, "reason": self.reason}


@dataclass
class UnloadResult:
    """What an unload observed (``tritonops.memory.MeasuredUnload`` adds the memory it released)."""

    model: str
    seconds: float


class UnloadTimeout(TritonError):
    """An unload waited in vain: the model is still listed as loaded (``still_loaded``), or, raised by
    ``tritonops.memory``, it is gone from the index but its memory is not back."""

    def __init__(self, message: str, *, still_loaded: bool, result: UnloadResult) -> None:
        super().__init__(message, model=result.model)
        self.still_loaded = still_loaded
        self.result = result


class WireProtocol(StrEnum):
    """How the client talks to Triton: its HTTP/REST or its gRPC endpoint."""

    http = "http"
    grpc = "grpc"


class ControlClient:
    """One Triton server's control API. Build with :meth:`connect` or :meth:`from_server`."""

    def __init__(
        self,
        url: str,
        protocol: WireProtocol | str = "http",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
        metrics_url: str | None = None,
        name: str | None = None,
        load_threads: int | None = None,
        grpc_loads_url: str | None = None,
    ) -> None:
        try:
            protocol = WireProtocol(protocol)
        except ValueError:
            raise TritonError(f"server {url}: unknown protocol {protocol!r} (http or grpc)") from None
        if timeout_s <= 0 or load_timeout_s <= 0:
            raise TritonError(f"server {url}: timeouts must be positive")
        self.url = url
        self.protocol = protocol
        self.name = name or url
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self.metrics_url = metrics_url
        ssl = url.startswith(("https://", "grpcs://"))
        hostport = strip_scheme(url).rstrip("/")
        if not hostport or "/" in hostport:
            raise TritonError(f"server {url}: expected host:port (optionally with http:// or grpc://)")
        self._hostport = hostport
        # A configured server is one identity whichever endpoint reaches it (see ``key``).
        self._identity = name
        self._version: tuple[float, str] | None = None  # (when asked, Triton's version)
        # No more load calls in flight than the server's model load threads: a call beyond them only
        # queues inside Triton, and its client-side timeout would count that wait. None: no limit.
        self._load_slots = threading.BoundedSemaphore(load_threads) if load_threads else None
        self._backend: Backend = (
            HttpBackend(hostport, ssl) if protocol is WireProtocol.http else GrpcBackend(hostport, ssl)
        )
        # Loads and unloads over gRPC where the server has both endpoints: Triton's HTTP frontend runs
        # a load on one of its HTTP threads, and every request on a connection that thread serves
        # waits until the load ends (triton-inference-server/server#8958). Measured here with 4 loads
        # at a time: status calls over HTTP took up to 1.5 s; with the loads over gRPC, 0.03 s.
        self._grpc_loads_url = grpc_loads_url if protocol is WireProtocol.http else None
        self._loads: Backend | None = None

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        protocol: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
        metrics_url: str | None = None,
    ) -> ControlClient:
        """A client for ``url``: ``grpc://host:port`` means gRPC; ``http(s)://`` or bare host:port, HTTP."""
        if protocol is None:
            protocol = "grpc" if url.startswith(("grpc://", "grpcs://")) else "http"
        return cls(url, protocol, timeout_s=timeout_s, load_timeout_s=load_timeout_s, metrics_url=metrics_url)

    @classmethod
    def from_server(
        cls,
        server: ServerConfig,
        protocol: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
    ) -> ControlClient:
        """A client for a configured server: HTTP when it has an http_url (unless gRPC is asked for)."""
        if protocol is None:
            protocol = "http" if server.http_url else "grpc"
        url = server.http_url if protocol == "http" else server.grpc_url
        if not url:
            raise TritonError(f"server {server.name}: no {protocol}_url configured")
        return cls(
            url, protocol, timeout_s=timeout_s, load_timeout_s=load_timeout_s,
            metrics_url=server.metrics_url, name=server.name, load_threads=server.load_threads,
            grpc_loads_url=server.grpc_url,
        )  # fmt: skip

    @property
    def key(self) -> str:
        """The server's identity for in-flight loads and device locks: its configured name when built
        from a ``ServerConfig`` (so its HTTP and gRPC clients share it), else its host:port."""
        return f"server:{self._identity}" if self._identity else self._hostport

    def __repr__(self) -> str:
        return f"ControlClient({self.url!r}, protocol={self.protocol.value!r})"

    # -- error mapping ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], timeout_s: float, model: str | None = None) -> T:
        about = f"server {self.url}" + (f": model {model!r}" if model else "")
        try:
            return fn()
        except TritonError:
            raise
        except Exception as e:  # noqa: BLE001 - tritonclient, gevent, grpc and sockets all raise their own
            kind, reason = self._describe(e, timeout_s)
            raise kind(f"{about}: {what} failed: {reason}") from e

    def _describe(self, e: BaseException, timeout_s: float) -> tuple[type[TritonError], str]:
        """The error type a failure becomes (a timeout, an unreachable server, or Triton's refusal) and its reason."""
        from tritonclient.utils import InferenceServerException

        timed_out = f"timed out after {timeout_s:g}s"
        if isinstance(e, InferenceServerException):
            msg = (e.message() or "").strip()
            status = str(e.status() or "")
            low = (msg + " " + status).lower()
            if "deadline exceeded" in low or "timed out" in low or "timeout" in low:
                return TritonTimeout, timed_out
            if "unavailable" in status.lower() or "failed to connect" in low or "connection refused" in low:
                return TritonUnreachable, f"server unreachable ({one_line(msg)})"
            return TritonError, one_line(msg) or type(e).__name__
        if isinstance(e, (socket.timeout, TimeoutError)) or "timeout" in type(e).__name__.lower():
            return TritonTimeout, timed_out
        if isinstance(e, ConnectionRefusedError):
            return TritonUnreachable, "server unreachable (connection refused)"
        if isinstance(e, OSError):
            return TritonUnreachable, f"server unreachable ({one_line(str(e)) or type(e).__name__})"
        return TritonError, f"{type(e).__name__}: {one_line(str(e))}"

    # -- health and metadata ---------------------------------------------------------------------

    def live(self) -> bool:
        return self._call("live check", lambda: self._backend.live(self.timeout_s), self.timeout_s)

    def ready(self) -> bool:
        return self._call("ready check", lambda: self._backend.ready(self.timeout_s), self.timeout_s)

    def server_metadata(self) -> dict[str, Any]:
        """``{"name", "version", "extensions"}`` as Triton reports them."""
        return self._call("metadata", lambda: self._backend.metadata(self.timeout_s), self.timeout_s)

    def triton_version(self) -> str:
        """Triton's version (a footprint's ledger key). Asked once per ``VERSION_TTL_S``: every measured
        load needs it, and a busy server answers slowly; a restart into another version is seen on the
        next ask after that."""
        now = time.monotonic()
        if self._version is None or now - self._version[0] > VERSION_TTL_S:
            self._version = (now, str(self.server_metadata().get("version", "unknown")))
        return self._version[1]

    # -- repository ------------------------------------------------------------------------------

    def index(self) -> list[ModelState]:
        """The repository index: every model Triton sees, with version, state and reason."""
        rows = self._call("repository index", lambda: self._backend.index(self.timeout_s), self.timeout_s)
        out = [
            ModelState(
                name=str(r.get("name", "")),
                version=parse_index_version(r.get("version")),
                state=str(r.get("state", "")) or UNAVAILABLE,
                reason=str(r.get("reason", "")),
            )
            for r in rows
        ]
        return sorted(out, key=lambda m: (m.name, m.version or 0))

    def model_states(self, model: str) -> list[ModelState]:
        return [m for m in self.index() if m.name == model]

    def loaded_versions(self, model: str) -> list[int]:
        """Versions of ``model`` Triton reports READY.

        Asked through the model's statistics, which Triton answers from its memory for its READY
        versions only (and for a model loaded from an override, which the index does not list). The
        repository index lists the whole repository first: an S3 LIST per call, which on a server
        busy loading other models took 0.5-2.7 s. It answers only where statistics are not built in.
        """
        try:
            rows = self.statistics(model)
        except (TritonUnreachable, TritonTimeout):
            raise
        except TritonError as e:
            if "not available" in str(e):
                return []  # Triton's answer when no version of the model is READY
            states = self.model_states(model)  # statistics not supported: the index answers
            return sorted(m.version for m in states if m.state == READY and m.version is not None)
        return sorted({int(s["version"]) for s in rows if str(s["version"]).isdigit()})

    def load(self, model: str, *, config: str | None = None, files: dict[str, bytes] | None = None) -> None:
        """Load (or reload) ``model``; returns when Triton reports it loaded.

        Raises ``TritonError`` with Triton's reason verbatim. If a load of the same model on this
        server is already in flight in this process, waits for it instead of issuing a second one
        (when the overrides are the same; different overrides wait, then load).
        """
        if files and config is None:
            raise TritonError(f"server {self.url}: model {model!r}: file overrides need a config override too")
        LOADS.run((self.key, model), load_args(config, files), lambda: self._do_load(model, config, files))

    def _loads_backend(self) -> Backend:
        """Where loads and unloads go: the server's gRPC endpoint when it has one, else ``_backend``.
        Each value is read once: another thread may fall back meanwhile (see ``_control``)."""
        url, loads = self._grpc_loads_url, self._loads
        if url is None:
            return self._backend
        if loads is None:
            loads = self._loads = GrpcBackend(strip_scheme(url).rstrip("/"), url.startswith("grpcs://"))
        return loads

    def _control(self, what: str, fn: Callable[[Backend], T]) -> T:
        """``fn`` on the loads backend; a gRPC endpoint that cannot be reached at all (refused,
        unresolvable: the call never reached Triton) falls back to the main one, for good."""
        backend = self._loads_backend()
        try:
            return fn(backend)
        except Exception as e:  # noqa: BLE001 - grpc raises its own
            kind, reason = self._describe(e, self.load_timeout_s)
            if backend is self._backend or kind is not TritonUnreachable:
                raise
            log.warning("server %s: gRPC endpoint %s unreachable for %s (%s); using %s from now on",
                        self.url, self._grpc_loads_url, what, reason, self.protocol.value)  # fmt: skip
            self._grpc_loads_url = None
            return fn(self._backend)

    def _do_load(self, model: str, config: str | None, files: dict[str, bytes] | None) -> None:
        t0 = time.monotonic()
        try:
            with self._load_slots or contextlib.nullcontext():
                self._control("loads", lambda b: b.load(model, config, files, self.load_timeout_s))
        except Exception as e:  # noqa: BLE001
            kind, reason = self._describe(e, self.load_timeout_s)
            if kind is TritonError:
                # Say plainly when the model is simply not in the repository; keep Triton's words too.
                names = self._index_names()
                if names is not None and model not in names:  # an empty repository holds no model either
                    raise TritonError(
                        f"server {self.url}: model {model!r} is not in the server's repository (Triton: {reason})"
                    ) from e
            raise kind(f"server {self.url}: load of model {model!r} failed: {reason}") from e
        log.info("server %s: loaded model %r in %.2fs", self.url, model, time.monotonic() - t0)

    def _index_names(self) -> set[str] | None:
        """The names the repository index lists; None when the index cannot be read."""
        try:
            return {m.name for m in self.index()}
        except TritonError:
            return None

    def unload(
        self,
        model: str,
        *,
        unload_dependents: bool = False,
        wait: bool = False,
        timeout_s: float = DEFAULT_UNLOAD_TIMEOUT_S,
    ) -> UnloadResult:
        """Ask Triton to unload ``model`` (Triton answers before the model is gone).

        With ``wait=True`` returns only when the index shows no version READY/LOADING/UNLOADING;
        raises ``UnloadTimeout`` after ``timeout_s`` otherwise. Whether its memory came back is
        ``tritonops.memory.measured_unload``'s question.
        """
        t0 = time.monotonic()
        self._call(
            "unload",
            lambda: self._control("unloads", lambda b: b.unload(model, unload_dependents, self.timeout_s)),
            self.timeout_s,
            model,
        )
        if wait:
            self.wait_unloaded(model, t0 + timeout_s, t0)
        return UnloadResult(model=model, seconds=time.monotonic() - t0)

    def wait_unloaded(self, model: str, deadline: float, t0: float) -> None:
        """Poll the index until no version of ``model`` is READY/LOADING/UNLOADING, or raise at ``deadline``."""
        while True:
            states = self.model_states(model)
            busy = [m for m in states if m.state in (READY, LOADING, UNLOADING)]
            if not states:  # loaded from an override only: the index does not list it
                busy = [ModelState(model, v, READY) for v in self.loaded_versions(model)]
            if not busy:
                return
            if time.monotonic() >= deadline:
                listed = ", ".join(f"v{m.version}={m.state}" for m in busy)
                raise UnloadTimeout(
                    f"server {self.url}: model {model!r} still {listed} {deadline - t0:g}s after unload",
                    still_loaded=True,
                    result=UnloadResult(model, time.monotonic() - t0),
                )
            time.sleep(POLL_INTERVAL_S)

    # -- statistics and metrics ------------------------------------------------------------------

    def statistics(self, model: str | None = None) -> list[dict[str, Any]]:
        """Per model version: ``name``, ``version``, ``last_inference`` (ms since the epoch, 0 if never),
        ``inference_count``, ``execution_count`` and Triton's other fields as it reports them."""
        rows = self._call(
            "statistics", lambda: self._backend.statistics(model or "", self.timeout_s), self.timeout_s, model
        )
        return [normalise_stats(r) for r in rows]

    def model_config(self, model: str, version: int | None = None) -> dict[str, Any]:
        """The config Triton uses for a loaded model (JSON, proto field names): what it completed
        (backend ``auto_complete_config``, defaults) included, which the file in the repository may lack."""
        ver = "" if version is None else str(version)
        return self._call(
            "model config", lambda: self._backend.model_config(model, ver, self.timeout_s), self.timeout_s, model
        )

    def infer(
        self, model: str, inputs: list[tuple[str, str, Any]], *, version: int | None = None
    ) -> dict[str, Any]:
        """One inference: ``inputs`` are (name, Triton datatype, numpy array); returns output name -> array."""
        ver = "" if version is None else str(version)
        return self._call(
            f"inference (version {ver or 'default'})",
            lambda: self._backend.infer(model, ver, inputs, self.timeout_s),
            self.timeout_s,
            model,
        )

    def metrics(self) -> str:
        """The raw Prometheus text of the server's metrics endpoint."""
        if not self.metrics_url:
            raise TritonError(f"server {self.url}: no metrics_url configured")
        return fetch_metrics(self.metrics_url, self.timeout_s)


def load_args(config: str | None, files: dict[str, bytes] | None) -> tuple[Any, ...]:
    """What makes two loads of one model the same load (``LOADS`` joins only equal ones)."""
    return (config, tuple(sorted((files or {}).items())))


__all__ = [
    "LOADS",
    "ControlClient",
    "LoadsInFlight",
    "ModelState",
    "UnloadResult",
    "UnloadTimeout",
    "WireProtocol",
    "fetch_metrics",
    "load_args",
]
