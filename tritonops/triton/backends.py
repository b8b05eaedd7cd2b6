"""The protocol-specific half of the Triton client: one thin adapter over ``tritonclient.http`` and
one over ``tritonclient.grpc``, behind the :class:`Backend` protocol that :class:`ControlClient` uses,
and the normalising of what the two return."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol


def parse_index_version(v: Any) -> int | None:
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


def normalise_stats(s: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(s)
    out["name"] = str(s.get("name", ""))
    out["version"] = str(s.get("version", ""))
    for k in ("last_inference", "inference_count", "execution_count"):
        out[k] = _int(s.get(k))
    return out


def strip_scheme(url: str) -> str:
    for p in ("http://", "https://", "grpc://", "grpcs://"):
        if url.startswith(p):
            return url[len(p) :]
    return url


class Backend(Protocol):
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


def infer_inputs(mod: Any, inputs: list[tuple[str, str, Any]]) -> list[Any]:
    out = []
    for name, datatype, arr in inputs:
        i = mod.InferInput(name, list(arr.shape), datatype)
        i.set_data_from_numpy(arr)
        out.append(i)
    return out


class HttpBackend:
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

        res = self._client(timeout_s).infer(model, infer_inputs(httpclient, inputs), model_version=version)
        return {o["name"]: res.as_numpy(o["name"]) for o in res.get_response().get("outputs", [])}


class GrpcBackend:
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
            model, infer_inputs(grpcclient, inputs), model_version=version, client_timeout=timeout_s
        )
        return {o.name: res.as_numpy(o.name) for o in res.get_response().outputs}
