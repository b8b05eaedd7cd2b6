"""Adapters from Triton's HTTP API to reconcile's ports, and config.pbtxt helpers.

``HttpControl`` is a minimal model-control client (repository index, statistics, load with a
config override, unload that waits, a warmup inference). Where ``tritonops.triton.client`` is
available, ``reconcile.adapters`` wraps it instead; this one keeps reconcile usable on its own.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.request import urlopen

import numpy as np

from tritonops.errors import RepositoryError, TritonError
from tritonops.reconcile.ports import DeviceMem, IndexEntry

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 300.0
UNLOAD_WAIT_S = 60.0
_POLL_S = 0.1


def parse_config(text: str, source: str = "config.pbtxt") -> dict[str, Any]:
    """config.pbtxt -> the JSON form Triton's load API accepts (proto field names)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    try:
        msg = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise RepositoryError(f"{source}: not a valid Triton model config ({e})") from None
    return dict(json_format.MessageToDict(msg, preserving_proto_field_name=True))


def config_for_versions(config: dict[str, Any], model: str, versions: list[int]) -> str:
    """The config with an explicit version policy: reconcile decides which versions are loaded."""
    c = dict(config)
    c["name"] = model
    c["version_policy"] = {"specific": {"versions": sorted(versions)}}
    return json.dumps(c, sort_keys=True)


_NP = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def warmup_inputs(config: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """One small request from the config's inputs: variable dims become 1, batch size 1, zeros."""
    out = []
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    for inp in config.get("input", []):
        dtype = str(inp.get("data_type", "TYPE_FP32"))
        shape = [max(1, int(d)) for d in inp.get("dims", [])]
        if batched:
            shape = [1, *shape]
        np_type = _NP.get(dtype)
        if np_type is None:
            raise TritonError(f"input {inp.get('name')!r}: data_type {dtype} has no warmup generator")
        arr = (
            np.array([b"0"] * int(np.prod(shape)), dtype=np.object_).reshape(shape)
            if np_type is np.object_
            else np.zeros(shape, dtype=np_type)
        )
        out.append((str(inp["name"]), dtype.removeprefix("TYPE_").replace("STRING", "BYTES"), arr))
    return out


class HttpControl:
    """A ``ServerControl`` over tritonclient.http. Every failure becomes a TritonError naming the server."""

    def __init__(self, name: str, http_url: str, timeout_s: float = TIMEOUT_S) -> None:
        import tritonclient.http as httpclient

        self.name = name
        self.url = http_url
        self._http = httpclient
        host = re.sub(r"^https?://", "", http_url).rstrip("/")
        self._client = httpclient.InferenceServerClient(
            host,
            connection_timeout=timeout_s,
            network_timeout=LOAD_TIMEOUT_S,
            ssl=http_url.startswith("https"),
        )

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Exception as e:  # tritonclient raises its own exception, gevent/socket errors, timeouts
            msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
            raise TritonError(
                f"server {self.name!r} ({self.url}): {what}: {msg or type(e).__name__}"
            ) from None

    def index(self) -> list[IndexEntry]:
        rows = self._call("repository index", self._client.get_model_repository_index)
        return [
            IndexEntry(
                str(r["name"]),
                int(r["version"]) if str(r.get("version", "")).isdigit() else None,
                str(r.get("state", "")),
                str(r.get("reason", "")),
            )
            for r in rows
        ]

    def last_inference_ms(self) -> dict[str, int]:
        stats = self._call("statistics", self._client.get_inference_statistics)
        out: dict[str, int] = {}
        for s in stats.get("model_stats", []):
            out[s["name"]] = max(out.get(s["name"], 0), int(s.get("last_inference", 0) or 0))
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
    ) -> int | None:
        self._call(f"load model {model!r}", self._client.load_model, model, config=config_json)
        return None

    def unload(self, model: str) -> None:
        self._call(f"unload model {model!r}", self._client.unload_model, model)
        deadline = time.monotonic() + UNLOAD_WAIT_S
        while time.monotonic() < deadline:
            if not any(r.model == model and r.state in ("READY", "UNLOADING") for r in self.index()):
                return
            time.sleep(_POLL_S)
        raise TritonError(
            f"server {self.name!r}: model {model!r} still loaded {UNLOAD_WAIT_S:.0f} s after unload"
        )

    def warmup(self, model: str, version: int, config: dict[str, Any]) -> None:
        inputs = []
        for name, dtype, arr in warmup_inputs(config):
            i = self._http.InferInput(name, list(arr.shape), dtype)
            i.set_data_from_numpy(arr)
            inputs.append(i)
        self._call(
            f"warmup inference of model {model!r} version {version}",
            self._client.infer,
            model,
            inputs,
            model_version=str(version),
        )


class TritonMetricsMemory:
    """``MemoryPort`` from Triton's metrics endpoint (nv_gpu_memory_*). CPU-only servers report no devices."""

    def __init__(self, name: str, metrics_url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.name = name
        self.url = metrics_url
        self.timeout_s = timeout_s

    def devices(self) -> list[DeviceMem]:
        from tritonops.errors import MemoryProbeError

        try:
            with urlopen(self.url, timeout=self.timeout_s) as r:  # noqa: S310 - configured URL
                text = r.read().decode()
        except OSError as e:
            raise MemoryProbeError(f"server {self.name!r}: metrics {self.url}: {e}") from None
        total: dict[str, int] = {}
        used: dict[str, int] = {}
        for line in text.splitlines():
            m = re.match(r'nv_gpu_memory_(total|used)_bytes\{.*gpu_uuid="([^"]+)".*\}\s+(\S+)', line)
            if m:
                (total if m.group(1) == "total" else used)[m.group(2)] = int(float(m.group(3)))
        return [DeviceMem(g, total[g], used.get(g, 0)) for g in sorted(total)]
