"""An ONNX model's graph inputs and outputs, read without loading its weights.

``onnx.load`` parses the whole ModelProto, initializers included: checking a 1 GB model's config
would cost more than 1 GB of memory. The inputs and outputs are a few small messages, so this walks
the protobuf wire format with seeks, reading only ``ModelProto.graph`` -> ``GraphProto.input``,
``.output`` (parsed with onnx's own ``ValueInfoProto``) and the *names* of initializers (older
exporters list initializers among the inputs). Memory stays at the size of those small messages.

Field numbers (onnx.proto, stable since IR version 1): ModelProto.graph = 7; GraphProto.initializer
= 5, .input = 11, .output = 12; TensorProto.name = 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from google.protobuf.message import DecodeError

from tritonops.errors import RepositoryError

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_NAME = 8
_MAX_SMALL_MESSAGE = 64 << 20  # a ValueInfoProto or a name is tiny; more means a corrupt file


class _WireError(ValueError):
    pass


def _varint(f: IO[bytes]) -> int:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            raise _WireError("truncated varint")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _WireError("varint too long")


def _fields(f: IO[bytes], end: int) -> Any:
    """Yield (field number, wire type, length or None) up to ``end``; the caller reads or skips the value."""
    while f.tell() < end:
        key = _varint(f)
        field, wt = key >> 3, key & 7
        if wt == 0:
            _varint(f)
        elif wt == 1:
            f.seek(8, 1)
        elif wt == 5:
            f.seek(4, 1)
        elif wt == 2:
            n = _varint(f)
            if f.tell() + n > end:
                raise _WireError(f"field {field} runs past its message")
            yield field, n
        else:
            raise _WireError(f"unsupported wire type {wt}")
    if f.tell() != end:
        raise _WireError("message overruns its length")


def _read_small(f: IO[bytes], n: int) -> bytes:
    if n > _MAX_SMALL_MESSAGE:
        raise _WireError(f"a {n}-byte input/output description")
    data = f.read(n)
    if len(data) != n:
        raise _WireError("truncated")
    return data


def read_graph_io(path: Path) -> tuple[list[Any], list[Any], set[str]]:
    """(graph inputs, graph outputs as onnx.ValueInfoProto, initializer names)."""
    import onnx

    inputs: list[Any] = []
    outputs: list[Any] = []
    inits: set[str] = set()
    found_graph = False
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            for field, n in _fields(f, size):
                if field != _MODEL_GRAPH:
                    f.seek(n, 1)
                    continue
                found_graph = True
                gend = f.tell() + n
                for gfield, gn in _fields(f, gend):
                    if gfield in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                        vi = onnx.ValueInfoProto.FromString(_read_small(f, gn))
                        (inputs if gfield == _GRAPH_INPUT else outputs).append(vi)
                    elif gfield == _GRAPH_INITIALIZER:
                        tend = f.tell() + gn
                        for tfield, tn in _fields(f, tend):
                            if tfield == _TENSOR_NAME:
                                inits.add(_read_small(f, tn).decode("utf-8"))
                            else:
                                f.seek(tn, 1)  # raw_data etc.: the weights, never read
                    else:
                        f.seek(gn, 1)
    except (_WireError, UnicodeDecodeError, DecodeError) as e:
        raise RepositoryError(f"{path}: not a readable ONNX model ({e})") from None
    except OSError as e:
        raise RepositoryError(f"{path}: cannot read ({e.strerror})") from None
    if not found_graph:
        raise RepositoryError(f"{path}: not a readable ONNX model (no graph)")
    return inputs, outputs, inits
