"""A Triton model-control client that does one thing per call and tells the truth about state.

One interface over ``tritonclient.http`` and ``tritonclient.grpc``: health, metadata, repository index,
load (with config and file overrides), unload (optionally waiting until the index says the model is
gone; waiting for its memory is ``tritonops.memory``'s job), statistics and the metrics scrape. Every
call has a client-side timeout; every failure becomes one ``TritonError`` line naming the server and
the model.

Triton loads a model twice when two load calls for it overlap, so :meth:`ControlClient.load`
joins a load of the same model already in flight on the same server (in this process) instead of
issuing a second one. ``LOADS`` is that one registry; ``tritonops.memory``'s measured loads use it too.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlparse

from tritonops.errors import TritonError, TritonTimeout, TritonUnreachable
from tritonops.strenum import StrEnum

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
        super().__init__(message)
        self.still_loaded = still_loaded
        self.result = result


# -- loads in flight, shared by every client in this process -------------------------------------


@dataclass
class _Flight:
    future: Future[Any]
    args: tuple[Any, ...]
    owner: int  # thread id: a load may call into a load of the same key it runs itself


class LoadsInFlight:
    """The one registry of model loads in flight per (server key, model), for this process.

    ``run`` runs ``fn`` unless a load of the same key is already running: then it waits, and returns
    that load's result (``joined=True``) when its ``args`` match and ``accept(result)`` holds, else
    runs its own after it. A thread that already runs a key runs nested calls for it directly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], _Flight] = {}

    def run(
        self,
        key: tuple[str, str],
        args: tuple[Any, ...],
        fn: Callable[[], T],
        accept: Callable[[Any], bool] = lambda _r: True,
    ) -> tuple[T, bool]:
        me = threading.get_ident()
        while True:
            with self._lock:
                cur = self._running.get(key)
                if cur is None:
                    mine = _Flight(Future(), args, me)
                    self._running[key] = mine
                    break
                nested = cur.owner == me
            if nested:  # outside the registry's lock: holding it here would serialise every load
                return fn(), False
            log.info("server %s: load of model %r already in flight; waiting for it", *key)
            try:
                result = cur.future.result()
            except TritonError:
                if cur.args == args:
                    raise  # the first caller's error is this call's error too
                continue
            if cur.args == args and accept(result):
                return result, True
        try:
            out = fn()
        except BaseException as e:
            mine.future.set_exception(e)
            raise
        else:
            mine.future.set_result(out)
            return out, False
        finally:
            with self._lock:
                self._running.pop(key, None)


LOADS = LoadsInFlight()


def _parse_index_version(v: Any) -> int | None:
    if v in (None, ""):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> int:
    # gRPC's JSON renders uint64 as strings and omits zero values.
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _normalise_stats(s: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(s)
    out["name"] = str(s.get("name", ""))
    out["version"] = str(s.get("version", ""))
    for k in ("last_inference", "inference_count", "execution_count"):
        out[k] = _int(s.get(k))
    return out


def _strip_scheme(url: str) -> str:
    for p in ("http://", "https://", "grpc://", "grpcs://"):
        if url.startswith(p):
            return url[len(p) :]
    return url


class _Backend(Protocol):
    """The protocol-specific part: a thin adapter over one tritonclient module."""

    def live(self, timeout_s: float) -> bool: ...
    def ready(self, timeout_s: float) -> bool: ...
    def metadata(self, timeout_s: float) -> dict[str, Any]: ...
    def index(self, timeout_s: float) -> list[dict[str, Any]]: ...
    def load(self, model: str, config: str | None, files: dict[str, bytes] | None, timeout_s: float) -> None: ...
    def unload(self, model: str, dependents: bool, timeout_s: float) -> None: ...
    def statistics(self, model: str, timeout_s: float) -> list[dict[str, Any]]: ...
    def model_config(self, model: str, version: str, timeout_s: float) -> dict[str, Any]: ...
    def infer(
        self, model: str, version: str, inputs: list[tuple[str, str, Any]], timeout_s: float
    ) -> dict[str, Any]: ...


def _infer_inputs(mod: Any, inputs: list[tuple[str, str, Any]]) -> list[Any]:
    out = []
    for name, datatype, arr in inputs:
        i = mod.InferInput(name, list(arr.shape), datatype)
        i.set_data_from_numpy(arr)
        out.append(i)
    return out


class _HttpBackend:
    # geventhttpclient connections must not be shared between threads: one client per thread and timeout.
    def __init__(self, hostport: str, ssl: bool) -> None:
        self._hostport = hostport
        self._ssl = ssl
        self._local = threading.local()

    def _client(self, timeout_s: float) -> Any:
        import tritonclient.http as httpclient

        cache = self._local.__dict__.setdefault("clients", {})
        c = cache.get(timeout_s)
        if c is None:
            c = httpclient.InferenceServerClient(
                self._hostport, ssl=self._ssl, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            cache[timeout_s] = c
        return c

    def live(self, timeout_s: float) -> bool:
        return bool(self._client(timeout_s).is_server_live())

    def ready(self, timeout_s: float) -> bool:
        return bool(self._client(timeout_s).is_server_ready())

    def metadata(self, timeout_s: float) -> dict[str, Any]:
        return dict(self._client(timeout_s).get_server_metadata())

    def index(self, timeout_s: float) -> list[dict[str, Any]]:
        return list(self._client(timeout_s).get_model_repository_index())

    def load(self, model: str, config: str | None, files: dict[str, bytes] | None, timeout_s: float) -> None:
        self._client(timeout_s).load_model(model, config=config, files=files)

    def unload(self, model: str, dependents: bool, timeout_s: float) -> None:
        self._client(timeout_s).unload_model(model, unload_dependents=dependents)

    def statistics(self, model: str, timeout_s: float) -> list[dict[str, Any]]:
        return list(self._client(timeout_s).get_inference_statistics(model_name=model).get("model_stats", []))

    def model_config(self, model: str, version: str, timeout_s: float) -> dict[str, Any]:
        return dict(self._client(timeout_s).get_model_config(model, model_version=version))

    def infer(
        self, model: str, version: str, inputs: list[tuple[str, str, Any]], timeout_s: float
    ) -> dict[str, Any]:
        import tritonclient.http as httpclient

        res = self._client(timeout_s).infer(model, _infer_inputs(httpclient, inputs), model_version=version)
        return {o["name"]: res.as_numpy(o["name"]) for o in res.get_response().get("outputs", [])}


class _GrpcBackend:
    def __init__(self, hostport: str, ssl: bool) -> None:
        import tritonclient.grpc as grpcclient

        self._c = grpcclient.InferenceServerClient(hostport, ssl=ssl)

    def live(self, timeout_s: float) -> bool:
        return bool(self._c.is_server_live(client_timeout=timeout_s))

    def ready(self, timeout_s: float) -> bool:
        return bool(self._c.is_server_ready(client_timeout=timeout_s))

    def metadata(self, timeout_s: float) -> dict[str, Any]:
        return dict(self._c.get_server_metadata(as_json=True, client_timeout=timeout_s))

    def index(self, timeout_s: float) -> list[dict[str, Any]]:
        return list(self._c.get_model_repository_index(as_json=True, client_timeout=timeout_s).get("models", []))

    def load(self, model: str, config: str | None, files: dict[str, bytes] | None, timeout_s: float) -> None:
        self._c.load_model(model, config=config, files=files, client_timeout=timeout_s)

    def unload(self, model: str, dependents: bool, timeout_s: float) -> None:
        self._c.unload_model(model, unload_dependents=dependents, client_timeout=timeout_s)

    def statistics(self, model: str, timeout_s: float) -> list[dict[str, Any]]:
        d = self._c.get_inference_statistics(model_name=model, as_json=True, client_timeout=timeout_s)
        return list(d.get("model_stats", []))

    def model_config(self, model: str, version: str, timeout_s: float) -> dict[str, Any]:
        d = self._c.get_model_config(model, model_version=version, as_json=True, client_timeout=timeout_s)
        return dict(d.get("config", {}))

    def infer(
        self, model: str, version: str, inputs: list[tuple[str, str, Any]], timeout_s: float
    ) -> dict[str, Any]:
        import tritonclient.grpc as grpcclient

        res = self._c.infer(
            model, _infer_inputs(grpcclient, inputs), model_version=version, client_timeout=timeout_s
        )
        return {o.name: res.as_numpy(o.name) for o in res.get_response().outputs}


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
        hostport = _strip_scheme(url).rstrip("/")
        if not hostport or "/" in hostport:
            raise TritonError(f"server {url}: expected host:port (optionally with http:// or grpc://)")
        self._hostport = hostport
        # A configured server is one identity whichever endpoint reaches it (see ``key``).
        self._identity = name
        self._version: tuple[float, str] | None = None  # (when asked, Triton's version)
        # No more load calls in flight than the server's model load threads: a call beyond them only
        # queues inside Triton, and its client-side timeout would count that wait. None: no limit.
        self._load_slots = threading.BoundedSemaphore(load_threads) if load_threads else None
        self._backend: _Backend = (
            _HttpBackend(hostport, ssl) if protocol is WireProtocol.http else _GrpcBackend(hostport, ssl)
        )
        # Loads and unloads over gRPC where the server has both endpoints: Triton's HTTP frontend runs
        # a load on one of its HTTP threads, and every request on a connection that thread serves
        # waits until the load ends (triton-inference-server/server#8958). Measured here with 4 loads
        # at a time: status calls over HTTP took up to 1.5 s; with the loads over gRPC, 0.03 s.
        self._grpc_loads_url = grpc_loads_url if protocol is WireProtocol.http else None
        self._loads: _Backend | None = None

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
                return TritonUnreachable, f"server unreachable ({_one_line(msg)})"
            return TritonError, _one_line(msg) or type(e).__name__
        if isinstance(e, (socket.timeout, TimeoutError)) or "timeout" in type(e).__name__.lower():
            return TritonTimeout, timed_out
        if isinstance(e, ConnectionRefusedError):
            return TritonUnreachable, "server unreachable (connection refused)"
        if isinstance(e, OSError):
            return TritonUnreachable, f"server unreachable ({_one_line(str(e)) or type(e).__name__})"
        return TritonError, f"{type(e).__name__}: {_one_line(str(e))}"

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
                version=_parse_index_version(r.get("version")),
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

    def _loads_backend(self) -> _Backend:
        """Where loads and unloads go: the server's gRPC endpoint when it has one, else ``_backend``.
        Each value is read once: another thread may fall back meanwhile (see ``_control``)."""
        url, loads = self._grpc_loads_url, self._loads
        if url is None:
            return self._backend
        if loads is None:
            loads = self._loads = _GrpcBackend(_strip_scheme(url).rstrip("/"), url.startswith("grpcs://"))
        return loads

    def _control(self, what: str, fn: Callable[[_Backend], T]) -> T:
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
        return [_normalise_stats(r) for r in rows]

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


def fetch_metrics(metrics_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    u = urlparse(metrics_url)
    if u.scheme not in ("http", "https"):
        raise TritonError(f"metrics {metrics_url}: not an http:// or https:// URL")
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as r:  # noqa: S310 - scheme checked above
            return str(r.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        raise TritonError(f"metrics {metrics_url}: HTTP {e.code} {e.reason}") from None
    except TimeoutError:
        raise TritonTimeout(f"metrics {metrics_url}: timed out after {timeout_s:g}s") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TritonUnreachable(f"metrics {metrics_url}: unreachable ({_one_line(str(reason))})") from None


def load_args(config: str | None, files: dict[str, bytes] | None) -> tuple[Any, ...]:
    """What makes two loads of one model the same load (``LOADS`` joins only equal ones)."""
    return (config, tuple(sorted((files or {}).items())))


def _one_line(s: str) -> str:
    return " ".join(s.split())

